#!/usr/bin/env python3
"""Instructions per push: the notifier's, and h2load's per request against the same stand-in,
counted by callgrind. Timings on a shared host move by ten per cent from run to run; these counts
move by 0.03-0.4 %, so a step too small for a session's pairs shows here. They count work, not
time: cache misses, lock waits and the two threads' hand-offs are not in them (callgrind runs one
thread at a time), so a step is judged by both.

    python3 bench/instructions.py                      # this build (target/release)
    python3 bench/instructions.py --vs ../old-bin      # and an older one, beside it
    python3 bench/instructions.py --bin-dir ../old-bin # an older one alone
    python3 bench/instructions.py --by-crate           # and where the notifier's go, by crate

Each build runs bench/fanout.py twice (SMALL and LARGE devices, realistic stand-in, concurrency
256, h2load for as many requests, before and after the event) with the notifier and h2load under
`valgrind --tool=callgrind`; the counts of the larger run less the smaller, over the extra pushes,
are per push, so start-up, connecting and warming cancel out. The stand-in runs natively. Needs
valgrind (Debian: valgrind) and what bench/fanout.py needs.

The notifier's count leaves out one piece of start-up that does not cancel: quanta (the metrics
crates' clock) calibrates itself against the system clock for a while on first use, and under
callgrind that while holds a different number of instructions in each run (from -300 to +350 per
push, once spread over the extra pushes). It runs in `once_cell`'s initialiser, and that crate's
count is taken off (`notifier_raw` keeps it).

--by-crate prints the notifier's count split by crate: each function's own instructions
(callgrind_annotate --inclusive=no), counted under the crate of the Rust function they run in
(inlined code under the function it was inlined into, drop glue under the dropped type's crate; C
and assembly by their file), the larger run less the smaller over the extra pushes. Rust's core,
alloc and std are one row; libc's memcpy is its own, since most of it is moving the callers' data.
"""

import argparse
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FANOUT = os.path.join(ROOT, "bench", "fanout.py")
SMALL, LARGE = 10_000, 30_000


def wrapper(directory, name, target, out):
    """An executable `name` in `directory` that runs `target` under callgrind, its counts in `out`."""
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                f"exec valgrind --tool=callgrind --callgrind-out-file={out}/callgrind.%p {target} \"$@\"\n")
    os.chmod(path, 0o755)


def totals(out):
    """Each counted process's instructions and profile, by what it ran: the notifier's `run` and h2load's."""
    counted = {"notifier": [], "h2load": []}
    for path in glob.glob(os.path.join(out, "callgrind.*")):
        cmd, total = "", None
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("cmd:"):
                    cmd = line.split(None, 1)[1].strip()
                elif line.startswith("totals:"):
                    total = int(line.split()[1])
        if total is None:
            continue
        if cmd.endswith("notifier run"):
            counted["notifier"].append((total, path))
        elif "h2load" in cmd.split()[0]:
            counted["h2load"].append((total, path))
    return counted


CRATE_IN_REGISTRY = re.compile(r"/index\.crates\.io-[0-9a-f]+/(.+?)-\d+\.\d+\.\d+[^/]*/")
ANNOTATED = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")
RUST_LIBRARY = {"core", "alloc", "std"}


def crate_of(location):
    """Whose code a callgrind_annotate `file:function [object]` line is: the crate of the Rust
    function (code inlined into it counts as its own; drop glue counts as the dropped type's
    crate's), or for C and assembly, the crate or library the file belongs to."""
    source, _, function = location.partition(":")
    function = function.split(" [", 1)[0]
    drop = re.match(r"core::ptr::drop_in_place<(.*)>$", function)
    if drop:
        function = drop.group(1)
    first = re.match(r"^[<&\s]*(?:dyn |mut )?([A-Za-z_][A-Za-z0-9_]*)::", function)
    if first:
        name = first.group(1)
        return "core/alloc/std" if name in RUST_LIBRARY else name
    found = CRATE_IN_REGISTRY.search(source)
    if found:
        return found.group(1)
    if "memmove" in source or "memcpy" in function:
        return "libc memcpy"
    if "libc.so" in location:
        return "libc"
    return "other"


def by_crate(profile):
    """A callgrind profile's instructions, each function's own, summed by crate."""
    listing = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", profile],
                             check=True, capture_output=True, text=True).stdout
    sums = collections.Counter()
    for line in listing.splitlines():
        found = ANNOTATED.match(line)
        if found and "PROGRAM TOTALS" not in line:
            sums[crate_of(found.group(2))] += int(found.group(1).replace(",", ""))
    return sums


# Start-up work whose instructions differ from run to run (see the module's text).
START_UP_NOISE = ("once_cell",)


def count(bin_dir, devices, stand_in_dir):
    """One event of `devices` pushes and h2load's runs beside it, counted, with the notifier's
    instructions by crate."""
    work = tempfile.mkdtemp(prefix="notifier-instructions-")
    try:
        bins, tools, out = (os.path.join(work, d) for d in ("bin", "tools", "out"))
        for d in (bins, tools, out):
            os.mkdir(d)
        wrapper(bins, "notifier", os.path.join(bin_dir, "notifier"), out)
        os.symlink(os.path.join(stand_in_dir, "notifier-stand-in"), os.path.join(bins, "notifier-stand-in"))
        wrapper(tools, "h2load", shutil.which("h2load"), out)
        env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
        subprocess.run([sys.executable, FANOUT, "--devices", str(devices), "--runs", "1", "--bin-dir", bins,
                        "--ceiling-requests", str(devices), "--timeout", "900"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        counted = totals(out)
        if len(counted["notifier"]) != 1 or not counted["h2load"]:
            raise RuntimeError(f"expected one notifier run and h2load's runs, counted {counted}")
        crates = by_crate(counted["notifier"][0][1])
        return counted["notifier"][0][0], min(total for total, _ in counted["h2load"]), crates
    finally:
        shutil.rmtree(work, ignore_errors=True)


def per_push(bin_dir, stand_in_dir, split=False):
    small, large = count(bin_dir, SMALL, stand_in_dir), count(bin_dir, LARGE, stand_in_dir)
    extra = LARGE - SMALL
    raw = (large[0] - small[0]) / extra
    noise = sum(large[2][name] - small[2][name] for name in START_UP_NOISE) / extra
    counts = {"notifier": round(raw - noise), "h2load": round((large[1] - small[1]) / extra),
              "notifier_raw": round(raw)}
    if split:
        crates = {name: round((large[2][name] - small[2][name]) / extra) for name in large[2] | small[2]}
        shown = {name: n for name, n in crates.items() if abs(n) >= 20}
        shown["the rest"] = sum(n for name, n in crates.items() if name not in shown)
        counts["notifier_by_crate"] = dict(sorted(shown.items(), key=lambda kv: -kv[1]))
    return counts


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"),
                   help="the build to count (default: this one's release build)")
    p.add_argument("--vs", metavar="DIR", help="also count the build in DIR, against the same stand-in")
    p.add_argument("--json", help="write the counts here")
    p.add_argument("--by-crate", action="store_true", help="split the notifier's count by crate")
    args = p.parse_args()
    if not shutil.which("valgrind"):
        p.error("valgrind is needed (Debian: apt-get install valgrind)")
    stand_in = os.path.abspath(args.bin_dir)
    builds = [("this", os.path.abspath(args.bin_dir))] + ([("vs", os.path.abspath(args.vs))] if args.vs else [])
    counts = {}
    for label, bin_dir in builds:
        counts[label] = per_push(bin_dir, stand_in, args.by_crate)
        print(json.dumps({"build": label, "bin_dir": bin_dir, "instructions_per_push": counts[label]}), flush=True)
    if args.vs:
        ratio = counts["this"]["notifier"] / counts["vs"]["notifier"]
        print(json.dumps({"notifier this / vs": round(ratio, 4)}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(counts, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())

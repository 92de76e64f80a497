#!/usr/bin/env python3
"""Where a profiled fan-out's CPU went, by task, in microseconds per push: the HTTP/2 connections'
tasks, the pushes' tasks, the lane that spawns them, the audience reader, the claim's keeper and
its Redis connection, and the runtime's own scheduling. Reads a `perf record --call-graph dwarf`
file, of the notifier (bench/fanout.py --perf PREFIX) or of h2-shards' floor
(crates/h2-shards/examples/floor.rs under `perf record`), so the two compare task by task.

    python3 bench/fanout.py --devices 200000 --runs 1 --no-ceiling --perf /tmp/notifier --perf-freq 4999
    python3 bench/perf_split.py /tmp/notifier-0.data --pushes 200000 --freq 4999
    python3 bench/perf_split.py /tmp/notifier-0.data --pushes 200000 --freq 4999 --under 'read_pages' \\
        --bucket 'from_record' --bucket 'recv|BufferedSocket'

A sample counts for the first task whose frames its call chain holds, in the order below; a
sample in the kernel counts for the task that made the system call (its user frames are in the
chain), and is shown again on its own. Samples are of CPU time at --freq a second, so a category's
samples / pushes / freq is its CPU per push. Profiled runs are slower than unprofiled ones: compare
categories of runs profiled alike, not these figures with bench/fanout.py's notifier_us.

--under ROOT splits the samples whose chain holds ROOT by the first of the --bucket patterns found
below it (outermost first), else by the frame right under ROOT. Needs perf (Debian: linux-perf).
"""

import argparse
import collections
import re
import subprocess
import sys

# In order: a sample belongs to the first that matches any frame of its chain.
TASKS = [
    ("HTTP/2 connections", r"h2_shards::dial::drive"),
    ("pushes", r"notifier::fanout::lane::send::|floor::run::\{\{closure\}\}::\{\{closure\}\}"),
    ("audience reader", r"read_pages|sqlx"),
    ("keeper and Redis", r"redis::|notifier::work::keeper|notifier::work::claims"),
    ("lane", r"Lane::run|^floor::run::\{\{closure\}\}$"),
    ("runtime", r"tokio::runtime::scheduler|tokio::runtime::park|tokio::runtime::driver|mio::"),
]


def chains(path):
    """Each sample's frames, leaf first, as (function, in_kernel)."""
    out = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym,dso"], capture_output=True,
                         text=True, check=True).stdout
    sample = []
    for line in out.splitlines():
        if not line.strip():
            if sample:
                yield sample
            sample = []
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) != 2:
            continue
        name = re.sub(r"\+0x[0-9a-f]+$", "", re.sub(r" \([^)]*\)$", "", parts[1]))
        sample.append((name, "kernel" in parts[1].rsplit("(", 1)[-1]))
    if sample:
        yield sample


def by_task(samples):
    counts, kernel = collections.Counter(), collections.Counter()
    patterns = [(name, re.compile(p)) for name, p in TASKS]
    for sample in samples:
        task = next((name for name, p in patterns if any(p.search(f) for f, _ in sample)), "other")
        counts[task] += 1
        if sample[0][1]:
            kernel[task] += 1
    return counts, kernel


def under(samples, root, buckets):
    root, buckets = re.compile(root), [(b, re.compile(b)) for b in buckets]
    counts = collections.Counter()
    for sample in samples:
        at = next((i for i, (f, _) in enumerate(sample) if root.search(f)), None)
        if at is None:
            continue
        below = [f for f, _ in reversed(sample[:at])]  # outermost first
        bucket = next((b for f in below for b, p in buckets if p.search(f)), None)
        counts[bucket or f"(other) {below[0] if below else '(self)'}"] += 1
    return counts


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="a perf.data file recorded with --call-graph dwarf")
    p.add_argument("--pushes", type=int, required=True, help="pushes (or requests) in the profiled run")
    p.add_argument("--freq", type=float, default=4999, help="perf record's -F")
    p.add_argument("--under", metavar="ROOT", help="split the samples under this frame (a regex)")
    p.add_argument("--bucket", action="append", default=[], help="with --under: a regex to count by")
    args = p.parse_args()
    samples = list(chains(args.data))
    per_push = 1e6 / args.pushes / args.freq
    if args.under:
        counts = under(samples, args.under, args.bucket)
        print(f"under {args.under}: {sum(counts.values()) * per_push:.2f} µs per push")
        for name, n in counts.most_common(25):
            print(f"  {n * per_push:5.2f}  {name[:140]}")
        return 0
    counts, kernel = by_task(samples)
    print(f"{len(samples)} samples, {len(samples) * per_push:.2f} µs per push in all")
    print(f"  {'task':<20} {'µs/push':>8} {'share':>7} {'of it, kernel':>14}")
    for name, n in counts.most_common():
        print(f"  {name:<20} {n * per_push:8.2f} {100 * n / len(samples):6.1f}% {kernel[name] * per_push:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Audience-read benchmark: one event to N devices (bench/fanout.py's live run against the FCM
stand-in) in three cases per database, to show that reading the audience stays linear in N
whatever plan the database picks:

  analyzed  the reference query on tables with planner statistics (the baseline);
  nostats   the same right after a bulk load, before any statistics (PostgreSQL: autovacuum off
            on the tables and no ANALYZE; MariaDB: persistent statistics and their recalculation
            off, no ANALYZE TABLE);
  expr      an own query ordered by an expression (`ORDER BY d.id + 0`), which no index gives.

    python3 bench/audience.py                                  # 100,000 devices, 3 runs a case
    python3 bench/audience.py --devices 1000000 --runs 1
    python3 bench/audience.py --dbs postgres --cases nostats --runs 1 --bin-dir ../old/target/release

Prints one line per run, then a table: seconds from the PUBLISH to the last push (median of the
runs), the ratio to the analyzed case of the same database and N measured in the same session, and
the notifier's peak RSS. Needs what bench/fanout.py needs for PostgreSQL and MariaDB.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fanout  # noqa: E402

CASES = ("analyzed", "nostats", "expr")


def run_case(args, db, devices, case, runs):
    """Seeds a database for the case and runs the event `runs` times against it."""
    run_args = argparse.Namespace(
        devices=devices, latency_ms=0, concurrency=args.concurrency, page_size=args.page_size,
        max_streams=100, apns_every=0, timeout=args.timeout, no_ceiling=True, light=False,
        fcm_quota=0, job_size=0,
        rust_log="warn,notifier::worker=info", keep_logs=args.keep_logs,
        query="expr" if case == "expr" else "default")
    workdir = tempfile.mkdtemp(prefix="notifier-audience-")
    seeded = time.time()
    url, drop = fanout.make_audience(db, devices, workdir, 0, analyze=case != "nostats")
    print(f"# {db} {devices:,} {case}: seeded in {time.time() - seeded:.0f} s", flush=True)
    results = []
    try:
        for run in range(runs):
            r = fanout.one_run(run_args, url, f"{case}-{run}")
            r.update(db=db, case=case)
            results.append(r)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    finally:
        drop()
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, nargs="+", default=[100_000])
    p.add_argument("--dbs", nargs="+", choices=["postgres", "mariadb"], default=["postgres", "mariadb"])
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--timeout", type=int, default=1800, help="seconds one run may take")
    p.add_argument("--bin-dir", help="run the binaries in this directory (say, an older build)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--keep-logs", metavar="DIR")
    p.add_argument("--json", help="write every run and the table here")
    args = p.parse_args()
    fanout.use_bin_dir(args)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "notifier", "-p", "notifier-stand-in"],
                       cwd=fanout.ROOT, check=True)

    rows, runs = [], []
    for devices in args.devices:
        for db in args.dbs:
            base = None
            for case in args.cases:
                results = run_case(args, db, devices, case, args.runs)
                runs += results
                seconds = statistics.median(r["last_push_ms"] for r in results) / 1000
                rss = statistics.median(r["peak_rss_mib"] for r in results)
                if case == "analyzed":
                    base = seconds
                rows.append({"devices": devices, "db": db, "case": case, "runs": len(results),
                             "seconds": seconds, "ratio": seconds / base if base else None,
                             "peak_rss_mib": rss})
    print("\n| N | DB | case | runs | seconds | ratio to analyzed | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "n/a"
        print(f"| {r['devices']:,} | {r['db']} | {r['case']} | {r['runs']} | {r['seconds']:.2f} | {ratio} "
              f"| {r['peak_rss_mib']:.1f} MiB |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "table": rows}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Scaling beyond one machine, simulated: how fast a set of events reaches every device with R
replicas, given the provider's latency and quota, and what splitting one event into page-range
jobs would change.

A discrete-event simulation, push by push, of the notifier's own rules, calibrated by
bench/fanout.py:
  - an event is claimed by one replica (per-event claims) and sent only by it; each replica runs up
    to `--events-per-replica` events at once (service.max_concurrent_events) and has `--concurrency`
    FCM push slots shared by its events (fcm.concurrency, set to NOTIFIER_CONCURRENCY; by default
    FCM gets three quarters of it);
  - a push costs `--cpu-us` of one core (bench/fanout.py with TOKIO_WORKER_THREADS=1: 0.160 s per
    10,000 pushes, 16 us) on each of the replica's `--cores`, then waits the provider's latency
    (+-20 %);
  - FCM counts its quota per project per minute: a send past it gets 429 QUOTA_EXCEEDED, and the
    push keeps its slot and retries after at least a minute plus full jitter (retry.quota_min_delay
    and the backoff), within retry.max_attempts and retry.push_deadline_secs, else it fails;
  - with --split, an event is cut into jobs of `--job-size` devices that any replica with a free
    event place takes (NOTIFIER_JOB_SIZE); the first push of a split event comes `--split-start-s`
    after the publish (the cut's boundary probes, the stream, the job claims), as bench/replicas.py
    measured: 1.2 to 2.4 s at 200,000 devices in jobs of 10,000.

Checked against bench/replicas.py (real processes, 200,000 devices, 100 ms, 500 in flight a
replica, jobs of 10,000): 1, 2 and 4 replicas measured 41.7, 21.3 and 12.5 s against 41.6, 21.6 and
11.6 s here; the unpaced quota run (3 replicas, 54,000 devices, 30,000 a minute) measured 64.9 s
and 1,500 answers of 429 against 65.9 s and 1,500 here. What it leaves out: replicas sharing a
machine's cores with the provider, the database and Redis (the 4-replica gap).

    python3 bench/scale.py                  # the README's table
    python3 bench/scale.py --replicas 1 2 4 --devices 1000000 --latency-ms 200 --quota-per-min 6000000

Needs only Python 3. Deterministic for a given --seed.
"""
import argparse
import heapq
import random


def simulate(replicas, events, *, concurrency, events_per_replica, cores, cpu_us, latency_ms,
             quota_per_min, split, job_size, split_start_s=1.5, max_attempts=4, deadline_s=120.0, quota_wait_s=60.0,
             initial_backoff_s=0.5, max_backoff_s=30.0, seed=1):
    rnd = random.Random(seed)
    # Work units: whole events, or page ranges of them with --split. A unit holds one of its
    # replica's event places until its last push is answered, as a claimed event does.
    jobs = []
    for size in events:
        step = job_size if split else size
        for start in range(0, size, step):
            jobs.append({"left": min(step, size - start), "out": 0})
    pending = list(reversed(jobs))  # claimed in publish order
    reps = [{"slots": concurrency, "cpu_free": 0.0, "running": [], "sent": 0} for _ in range(replicas)]
    window_sends = {}
    heap, seq = [], 0
    delivered = failed = rejected = 0
    last_push = 0.0
    now = 0.0

    def claim(r, most=None):
        while len(r["running"]) < (most or events_per_replica) and pending:
            r["running"].append(pending.pop())

    def start_pushes(ri):
        r = reps[ri]
        claim(r)
        # Round robin over the replica's running units, as their lanes share the slots.
        while r["slots"] > 0:
            ready = [job for job in r["running"] if job["left"] > 0]
            if not ready:
                return
            for job in ready:
                if r["slots"] == 0:
                    return
                job["left"] -= 1
                job["out"] += 1
                r["slots"] -= 1
                send(ri, job, now, attempt=1, first=now)

    def send(ri, job, at, attempt, first):
        nonlocal seq
        r = reps[ri]
        t = max(at, r["cpu_free"])
        r["cpu_free"] = t + cpu_us / 1e6 / cores
        done = t + latency_ms / 1000 * rnd.uniform(0.8, 1.2)
        seq += 1
        heapq.heappush(heap, (done, seq, ri, job, t, attempt, first))

    # Replicas race for the first claims: one each in turn.
    for most in range(1, events_per_replica + 1):
        for r in reps:
            claim(r, most)
    if split and len(jobs) > len(events):
        now = split_start_s
    for ri in range(replicas):
        start_pushes(ri)
    while heap:
        now, _, ri, job, sent_at, attempt, first = heapq.heappop(heap)
        if sent_at is None:  # a retry's wait is over
            send(ri, job, now, attempt, first)
            continue
        window = int(sent_at // 60)
        window_sends[window] = window_sends.get(window, 0) + 1
        if window_sends[window] <= quota_per_min:
            delivered += 1
            reps[ri]["sent"] += 1
            last_push = max(last_push, now)
        else:
            rejected += 1
            backoff = min(max_backoff_s, initial_backoff_s * 2 ** (attempt - 1))
            retry_at = now + quota_wait_s + rnd.uniform(0, backoff)
            if attempt < max_attempts and retry_at - first < deadline_s:
                # Keeps its slot meanwhile; takes the CPU again only when the wait is over.
                seq += 1
                heapq.heappush(heap, (retry_at, seq, ri, job, None, attempt + 1, first))
                continue
            failed += 1
        job["out"] -= 1
        r = reps[ri]
        r["slots"] += 1
        if job["left"] == 0 and job["out"] == 0:
            r["running"].remove(job)
        start_pushes(ri)
    return {"last_push_s": last_push, "delivered": delivered, "failed": failed, "rejected_429": rejected,
            "per_s": delivered / last_push if last_push else 0.0,
            "busiest_replica_share": max(r["sent"] for r in reps) / max(delivered, 1)}


SCENARIOS = [
    # (title, events, latency ms, concurrency, quota per minute)
    ("one event, 1,000,000 devices, FCM's default quota", [1_000_000], 100, 1000, 600_000),
    ("one event, 1,000,000 devices, quota raised to 6M/min", [1_000_000], 200, 1000, 6_000_000),
    ("20 events x 50,000 devices, quota raised to 6M/min", [50_000] * 20, 200, 1000, 6_000_000),
    ("one event, 1,000,000 devices, quota raised to 6M/min", [1_000_000], 200, 4000, 6_000_000),
    ("one event, 1,000,000 devices, no quota, 0 ms (CPU-bound)", [1_000_000], 0, 256, 10**12),
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--devices", type=int, help="one event of this many devices (instead of the table)")
    p.add_argument("--events", type=int, default=1)
    p.add_argument("--latency-ms", type=float, default=200)
    p.add_argument("--concurrency", type=int, default=1000)
    p.add_argument("--quota-per-min", type=int, default=600_000)
    p.add_argument("--events-per-replica", type=int, default=4)
    p.add_argument("--cores", type=float, default=1.0, help="cores per replica")
    p.add_argument("--cpu-us", type=float, default=16.0, help="CPU per push on one core (bench/fanout.py)")
    p.add_argument("--job-size", type=int, default=50_000)
    p.add_argument("--split-start-s", type=float, default=1.5,
                   help="publish to a split event's first push (bench/replicas.py: 1.2-2.4 s)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    common = dict(events_per_replica=args.events_per_replica, cores=args.cores, cpu_us=args.cpu_us,
                  job_size=args.job_size, split_start_s=args.split_start_s, seed=args.seed)
    scenarios = SCENARIOS if args.devices is None else [
        ("custom", [args.devices] * args.events, args.latency_ms, args.concurrency, args.quota_per_min)]
    print("| scenario | latency | FCM pushes in flight per replica | replicas | per-event claims: last push (pushes/s) | split into 50k jobs: last push (pushes/s) | 429s (claims / split) |")
    print("|---|---|---|---|---|---|---|")
    for title, events, latency, concurrency, quota in scenarios:
        for replicas in args.replicas:
            runs = [simulate(replicas, events, concurrency=concurrency, latency_ms=latency,
                             quota_per_min=quota, split=split, **common) for split in (False, True)]
            cells = [f"{r['last_push_s']:.1f} s ({r['per_s']:,.0f})" + (f", {r['failed']} failed" if r["failed"] else "")
                     for r in runs]
            print(f"| {title} | {latency:g} ms | {concurrency} | {replicas} | {cells[0]} | {cells[1]} | "
                  f"{runs[0]['rejected_429']:,} / {runs[1]['rejected_429']:,} |", flush=True)


if __name__ == "__main__":
    main()

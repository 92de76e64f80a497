#!/usr/bin/env python3
"""One event across several replicas (issue 12): real notifier processes on loopback sharing one
Redis and one database, pushing to the stand-in with latency, one event split into jobs of
NOTIFIER_JOB_SIZE devices.

    python3 bench/replicas.py scaling                     # 200,000 devices, 100 ms, 500 in flight, 1/2/4 replicas
    python3 bench/replicas.py crash                       # the same with one of 4 replicas SIGKILLed at 30 %
    python3 bench/replicas.py quota                       # 3 replicas, stand-in quota 30,000/min, paced at 27,000/min, and unpaced
    python3 bench/replicas.py all --bin-dir target/debug --devices 2000 --job-size 500 --latency-ms 20 \
        --concurrency 50 --quota-devices 120 --fcm-quota 540 --stand-in-quota 600 --replicas 1 2 \
        --crash-replicas 2 --timeout 120     # a smoke check of the script itself, in about a minute

Targets (the issue's): 4 replicas >= 3.2x one replica's rate; after a crash 0 lost and duplicates
<= that replica's pushes in flight; with pacing <= 1 % of pushes answered 429 and the event done
within 1.2x of the paced floor (devices / quota rate).

Needs what bench/fanout.py needs (PostgreSQL by default, Redis, cargo). Prints one JSON line a run;
--json writes them all to a file.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fanout  # noqa: E402  (the stand-in, database and Redis helpers)
from cluster import notifier_env, start_stand_in  # noqa: E402
from fanout import delete_keys, free_port, make_audience, publish, reset, sh, stats  # noqa: E402


class Deployment:
    """A stand-in and `replicas` notifier processes reading one channel with shared claims."""

    def __init__(self, args, url, name, replicas, *, quota_per_min=0, stand_in_quota=0):
        self.args, self.name = args, name
        self.tmp = tempfile.mkdtemp(prefix="notifier-replicas-")
        self.prefix = f"bench:{os.getpid()}:{name}:"
        self.channel = f"bench_{os.getpid()}_{name}"
        self.stand_in, self.tls, self.plain = start_stand_in(
            self.tmp, args.latency_ms, "--fcm-quota-per-minute", str(stand_in_quota))
        self.replicas = []
        self.logs = []
        config = os.path.join(self.tmp, "notifier.toml")
        with open(config, "w") as f:
            f.write(f'[claims]\nkey_prefix = "{self.prefix}"\nlease_secs = {args.lease_secs}\n'
                    f"[fcm]\nconcurrency = {args.concurrency}\n")
        self.env = notifier_env(self.tmp, self.tls, database_url=url, redis_url="redis://127.0.0.1:6379",
                                channel=self.channel, config=config, concurrency=args.concurrency,
                                rust_log=args.rust_log)
        self.env.update({"NOTIFIER_JOB_SIZE": str(args.job_size), "FCM_QUOTA_PER_MINUTE": str(quota_per_min)})
        for i in range(replicas):
            self.start_replica(i)
        self._wait_for_subscribers(replicas)

    def start_replica(self, i):
        log = open(os.path.join(self.tmp, f"notifier-{i}.log"), "w")
        env = {**self.env, "NOTIFIER_HTTP_ADDR": f"127.0.0.1:{free_port()}", "HOSTNAME": f"replica-{i}"}
        self.replicas.append(subprocess.Popen([os.path.join(fanout.BIN, "notifier"), "run"],
                                              env=env, stdout=log, stderr=log))
        self.logs.append(log.name)

    def _wait_for_subscribers(self, n):
        for _ in range(400):
            if int(sh("redis-cli", "PUBSUB", "NUMSUB", self.channel).split()[-1]) >= n:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the replicas did not subscribe; see {self.tmp}")

    def summaries(self):
        """The `Event processed.` lines of every replica, parsed."""
        lines = []
        for path in self.logs:
            with open(path) as f:
                lines += [json.loads(l) for l in f if '"Event processed."' in l]
        return lines

    def close(self):
        for p in self.replicas:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.replicas:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.stand_in.terminate()
        self.stand_in.wait()
        delete_keys(self.prefix)
        if self.args.keep_logs:
            os.makedirs(self.args.keep_logs, exist_ok=True)
            for path in self.logs:
                shutil.copy(path, os.path.join(self.args.keep_logs, f"{self.name}-{os.path.basename(path)}"))
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_event(args, url, name, replicas, devices, *, kill_at=None, quota_per_min=0, stand_in_quota=0):
    """Publishes one event to `devices` devices and waits until each is reached once and one
    summary line is written; with `kill_at`, SIGKILLs replica 0 once that share is delivered."""
    d = Deployment(args, url, name, replicas, quota_per_min=quota_per_min, stand_in_quota=stand_in_quota)
    try:
        reset(d.plain)
        published_ms = publish(d.channel, json.dumps({"talk_id": 1, "event_id": f"bench-{name}"}), None)
        killed_in_flight = None
        deadline = time.time() + args.timeout
        while True:
            s = stats(d.plain)
            if kill_at is not None and killed_in_flight is None and s["unique_delivered"] >= kill_at * devices:
                d.replicas[0].send_signal(signal.SIGKILL)
                killed_in_flight = args.concurrency
            if s["unique_delivered"] >= devices and d.summaries():
                break
            if time.time() > deadline:
                raise RuntimeError(f"{name}: {s['unique_delivered']} of {devices} reached; logs in {d.tmp}")
            time.sleep(0.05)
        time.sleep(args.settle)  # a second summary line or late duplicates would show by now
        s = stats(d.plain)
        last = s["last_delivered_ms"] - published_ms
        errors = s.get("errors", {})
        return {
            "run": name, "replicas": replicas, "devices": devices, "job_size": args.job_size,
            "latency_ms": args.latency_ms, "concurrency": args.concurrency,
            "last_push_s": last / 1000, "pushes_per_s": devices / (last / 1000),
            "lost": devices - s["unique_delivered"], "duplicates": s["duplicates"],
            "summary_lines": len(d.summaries()),
            "requests": s["requests"], "quota_exceeded": errors.get("QUOTA_EXCEEDED", 0),
            "quota_exceeded_share": errors.get("QUOTA_EXCEEDED", 0) / max(s["requests"], 1),
            **({"killed_replica_in_flight": killed_in_flight} if kill_at is not None else {}),
        }
    finally:
        d.close()


def scaling(args, url):
    runs = [run_event(args, url, f"scale{r}", r, args.devices) for r in args.replicas]
    base = runs[0]["pushes_per_s"]
    for r in runs:
        r["speedup"] = r["pushes_per_s"] / base
    return runs


def crash(args, url):
    r = run_event(args, url, "crash", args.crash_replicas, args.devices, kill_at=args.kill_at)
    r["target_met"] = r["lost"] == 0 and r["duplicates"] <= args.concurrency
    return [r]


def quota(args, url):
    floor_s = args.quota_devices / (args.fcm_quota / 60)
    runs = []
    for paced in (True, False):
        r = run_event(args, url, "paced" if paced else "unpaced", 3, args.quota_devices,
                      quota_per_min=args.fcm_quota if paced else 0, stand_in_quota=args.stand_in_quota)
        r["paced_floor_s"] = floor_s
        r["of_floor"] = r["last_push_s"] / floor_s
        if paced:  # the unpaced run is the comparison, with no target of its own
            r["target_met"] = r["quota_exceeded_share"] <= 0.01 and r["of_floor"] <= 1.2
        runs.append(r)
    return runs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["scaling", "crash", "quota", "all"])
    p.add_argument("--devices", type=int, default=200_000)
    p.add_argument("--latency-ms", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=500, help="pushes in flight per replica")
    p.add_argument("--job-size", type=int, default=10_000, help="NOTIFIER_JOB_SIZE")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--crash-replicas", type=int, default=4)
    p.add_argument("--kill-at", type=float, default=0.3, help="share delivered when replica 0 is killed")
    p.add_argument("--lease-secs", type=int, default=5, help="claims.lease_secs: how soon a dead replica's jobs move")
    p.add_argument("--quota-devices", type=int, default=27_000, help="the quota run's audience (a minute at 27,000/min)")
    p.add_argument("--fcm-quota", type=int, default=27_000, help="FCM_QUOTA_PER_MINUTE in the paced run")
    p.add_argument("--stand-in-quota", type=int, default=30_000, help="what the stand-in enforces per minute")
    p.add_argument("--db", choices=["postgres", "mariadb", "sqlite"], default="postgres")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--settle", type=float, default=2.0, help="seconds watched after the last push")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--bin-dir", help="run the binaries in this directory; implies --no-build")
    p.add_argument("--json", help="write the runs here")
    p.add_argument("--rust-log", default="warn,notifier::worker=info")
    p.add_argument("--keep-logs", metavar="DIR")
    args = p.parse_args()
    fanout.use_bin_dir(args)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "notifier", "-p", "notifier-stand-in"],
                       cwd=fanout.ROOT, check=True)
    print(f"machine: {os.cpu_count()} cores", flush=True)
    runs = []
    wanted = [(name, fn, devices) for name, fn, devices in (
        ("scaling", scaling, args.devices), ("crash", crash, args.devices), ("quota", quota, args.quota_devices))
        if args.scenario in (name, "all")]
    for name, fn, devices in wanted:
        # One audience at a time: bench/fanout.py names its database after this process.
        workdir = tempfile.mkdtemp(prefix="notifier-replicas-db-")
        url, drop = make_audience(args.db, devices, workdir, 0)
        try:
            for r in fn(args, url):
                runs.append(r)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
        finally:
            drop()
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())

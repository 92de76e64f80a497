#!/usr/bin/env python3
"""POST /push benchmark: Gaurun requests of 100 tokens each, as fast as the API takes them, against
the notifier (release build) sending live to the stand-in over TLS/HTTP2 on loopback at the same
time. The figure the issue asks for is tokens accepted per second per core *while sending*: the
notifier is pinned to one core (taskset) when the machine has more, and its CPU time, accepting
and delivering, is read from /proc. The stand-in and the load generator share the other cores.

    python3 bench/api_push.py --seconds 20 --runs 3
    python3 bench/api_push.py --clients 8 --tokens 100 --ios-every 2   # half the requests iOS
    python3 bench/api_push.py --backlog-max 200     # a backlog that fills: accepting at the sending pace
    python3 bench/api_push.py --bin-dir OLD/target/release --runs 3   # another build under the same load

Each run: a fresh stand-in and notifier; `--clients` processes post back to back on keep-alive
connections for `--seconds`; then the backlog drains and every accepted token must reach the
stand-in exactly once (the run fails otherwise). A 503 (backlog full) counts as refused, not as
an error. The delivery ceiling is h2load against the same stand-in in the same run (skip it with
--no-ceiling). Needs: cargo, Redis on 127.0.0.1:6379, taskset, h2load (Debian: nghttp2-client).
"""
import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fanout  # noqa: E402  (the stand-in and process helpers)
from cluster import notifier_env, start_stand_in  # noqa: E402
from fanout import cpu_seconds, delete_keys, free_port, peak_rss_mib, reset, stats, stop  # noqa: E402

CORES = os.cpu_count() or 1


def request_body(run, client, n, tokens, ios):
    """One notification of `tokens` distinct tokens; APNs tokens are 64 hex digits, as Apple's."""
    if ios:
        token = [f"{run:04x}{client:04x}{n:012x}{k:04x}".ljust(64, "0") for k in range(tokens)]
        notification = {"token": token, "platform": 1, "message": "New talk", "title": "Big show",
                        "badge": 1, "sound": "default", "extend": [{"key": "talk_id", "val": str(n)}]}
    else:
        token = [f"bench-{run}-{client}-{n}-{k}" for k in range(tokens)]
        notification = {"token": token, "platform": 2, "message": "New talk", "priority": "high",
                        "time_to_live": 3600, "extend": [{"key": "talk_id", "val": str(n)}]}
    return json.dumps({"notifications": [notification]})


def client(port, token, run, index, seconds, tokens, ios_every, results):
    """Posts back to back on one keep-alive connection until the time is up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    ok = refused = other = 0
    latencies = []
    deadline = time.time() + seconds
    n = 0
    while time.time() < deadline:
        body = request_body(run, index, n, tokens, ios_every > 0 and n % ios_every == 0)
        started = time.perf_counter()
        conn.request("POST", "/push", body, headers)
        response = conn.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status == 200:
            ok += 1
            ios = ios_every > 0 and n % ios_every == 0
            results.put(("accepted", tokens, ios))
        elif response.status == 503:
            refused += 1
            time.sleep(0.05)  # as a client honouring Retry-After would, roughly
        else:
            other += 1
        n += 1
    results.put(("done", ok, refused, other, latencies))


def one_run(args, run):
    tmp = tempfile.mkdtemp(prefix="notifier-api-bench-")
    status, api = free_port(), free_port()
    pin_notifier = ["taskset", "-c", "0"] if CORES > 1 else []
    pin_rest = ["taskset", "-c", f"1-{CORES - 1}"] if CORES > 1 else []
    stand_in = None
    notifier = None
    prefix = f"bench:{os.getpid()}:api{run}:"
    try:
        stand_in, tls, plain = start_stand_in(tmp, args.latency_ms, pin=pin_rest)
        config = os.path.join(tmp, "notifier.toml")
        with open(config, "w") as f:
            f.write(f'[claims]\nkey_prefix = "{prefix}"\n[api]\nbacklog_max = {args.backlog_max}\n')
        token = f"bench-api-token-{os.getpid()}"
        env = notifier_env(tmp, tls, database_url=f"sqlite://{tmp}/notifier.db",
                           redis_url="redis://127.0.0.1:6379", channel=f"bench_api_{os.getpid()}_{run}",
                           config=config, concurrency=args.concurrency, rust_log=args.rust_log, apns=True)
        env.update({"NOTIFIER_HTTP_ADDR": f"127.0.0.1:{status}", "NOTIFIER_API_ADDR": f"127.0.0.1:{api}",
                    "NOTIFIER_API_TOKENS": token, "FCM_QUOTA_PER_MINUTE": "0"})
        subprocess.run([os.path.join(fanout.BIN, "notifier"), "migrate"], env=env, check=True,
                       capture_output=True)
        log = open(os.path.join(tmp, "notifier.log"), "w")
        notifier = subprocess.Popen([*pin_notifier, os.path.join(fanout.BIN, "notifier"), "run"],
                                    env=env, stdout=log, stderr=log)
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", api, timeout=1)
                c.request("GET", "/stat/app", headers={"Authorization": f"Bearer {token}"})
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the API did not answer; see {log.name}")
        reset(plain)
        cpu_before = cpu_seconds(notifier.pid)
        results = multiprocessing.Queue()
        started = time.time()
        clients = [multiprocessing.Process(
            target=client, args=(api, token, run, i, args.seconds, args.tokens, args.ios_every, results))
            for i in range(args.clients)]
        if pin_rest:
            for p in clients:
                p.start()
                subprocess.run(["taskset", "-pc", f"1-{CORES - 1}", str(p.pid)], capture_output=True)
        else:
            for p in clients:
                p.start()
        accepted_tokens = ok = refused = other = 0
        latencies = []
        done = 0
        while done < args.clients:
            item = results.get(timeout=args.seconds + 60)
            if item[0] == "accepted":
                accepted_tokens += item[1]
            else:
                done += 1
                ok, refused, other = ok + item[1], refused + item[2], other + item[3]
                latencies += item[4]
        window = time.time() - started
        delivered_in_window = stats(plain)["delivered"]
        for p in clients:
            p.join()
        deadline = time.time() + args.timeout
        while True:
            s = stats(plain)
            if s["delivered"] >= accepted_tokens:
                break
            if time.time() > deadline or notifier.poll() is not None:
                raise RuntimeError(f"only {s['delivered']} of {accepted_tokens} accepted tokens delivered; see {log.name}")
            time.sleep(0.05)
        drained = time.time() - started
        time.sleep(1)  # a duplicate would arrive late: look again
        s = stats(plain)
        cpu = cpu_seconds(notifier.pid) - cpu_before
        if other:
            raise RuntimeError(f"{other} answers were neither 200 nor 503; see {log.name}")
        if s["delivered"] != accepted_tokens or s["duplicates"]:
            raise RuntimeError(f"{s['delivered']} delivered for {accepted_tokens} accepted, {s['duplicates']} duplicates")
        latencies.sort()
        result = {
            "requests_per_s": ok / window, "tokens_per_s": accepted_tokens / window,
            "refused_503": refused,
            "delivered_per_s_in_window": delivered_in_window / window,
            "delivered_per_s_to_drain": accepted_tokens / drained,
            # Accepting and sending together, per second of the notifier's CPU: per core.
            "tokens_per_cpu_s": accepted_tokens / cpu,
            "cpu_s_per_10k": cpu / accepted_tokens * 10_000,
            "p50_ms": latencies[len(latencies) // 2], "p99_ms": latencies[int(len(latencies) * 0.99)],
            "peak_rss_mib": peak_rss_mib(notifier.pid), "accepted_tokens": accepted_tokens,
        }
        if not args.no_ceiling:
            path = os.path.join(tmp, "fcm-body.json")
            with open(path, "w") as f:
                json.dump(fanout.FCM_BODY, f)
            result["ceiling_per_s"], _ = fanout.ceiling(tls, path, args.ceiling_requests, 4, 100, stand_in.pid)
            result["delivered_of_ceiling"] = result["delivered_per_s_to_drain"] / result["ceiling_per_s"]
        return result
    finally:
        stop(notifier)
        if stand_in is not None:
            stand_in.terminate()
            stand_in.wait()
        delete_keys(prefix)
        if args.keep_logs:
            os.makedirs(args.keep_logs, exist_ok=True)
            shutil.copy(os.path.join(tmp, "notifier.log"), os.path.join(args.keep_logs, f"api-{run}.log"))
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--clients", type=int, default=4, help="processes posting back to back")
    p.add_argument("--tokens", type=int, default=100, help="tokens a request")
    p.add_argument("--ios-every", type=int, default=0, help="every K-th request is iOS (0: none)")
    p.add_argument("--concurrency", type=int, default=256, help="NOTIFIER_CONCURRENCY")
    p.add_argument("--latency-ms", type=int, default=0, help="the stand-in's answer delay")
    p.add_argument("--backlog-max", type=int, default=100_000,
                   help="api.backlog_max: small, and acceptance is held to the sending pace by 503s")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=int, default=300, help="seconds for the backlog to drain")
    p.add_argument("--no-ceiling", action="store_true")
    p.add_argument("--ceiling-requests", type=int, default=200_000)
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--bin-dir", help="run the binaries in this directory (say, an older build); implies --no-build")
    p.add_argument("--rust-log", default="warn")
    p.add_argument("--keep-logs", metavar="DIR")
    p.add_argument("--json", help="write the runs and medians here")
    args = p.parse_args()
    fanout.use_bin_dir(args)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "notifier", "-p", "notifier-stand-in"],
                       cwd=fanout.ROOT, check=True)
    print(f"machine: {CORES} cores; the notifier on core 0" if CORES > 1 else "machine: 1 core", flush=True)
    runs = []
    for run in range(args.runs):
        r = one_run(args, run)
        runs.append(r)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print("median:", json.dumps({k: round(v, 3) for k, v in medians.items()}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "median": medians}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fault campaign (issue 21): "never twice, never lost" under one random fault a round, read off
the stand-in token by token.

    python3 bench/chaos.py --rounds 100                   # release build; about half an hour
    python3 bench/chaos.py --rounds 400 --devices 20000 --seed 7 --keep-logs chaos-logs --json chaos.json
    python3 bench/chaos.py --rounds 4 --devices 2000 --bin-dir target/debug --faults sigkill,sigstop,redis,db

A round: 2 or 3 replicas of one deployment (`notifier run`, its own channel and claims prefix),
sometimes one of them with NOTIFIER_SEND_MODE=dry-run; a fresh event to --devices devices (every
--apns-every-th through APNs), split into jobs in about half the rounds (NOTIFIER_JOB_SIZE a third
to a sixth of the audience); and, until the fault is over and a little after, `POST /push`
requests of --tokens tokens (every third one iOS) to the live replicas' APIs, each with an
Idempotency-Key: a request that fails (refused, timed out, 5xx) is retried with the same key on
another replica, and one in four that succeeded is sent again with its key, as a client whose
answer was lost would. A few requests go to the dry-run replica's API too.

One fault a round, once a random share (10-60 %) of the event has reached the stand-in; each cycle
of rounds runs every fault of --faults once, in an order drawn from --seed:
  none     nothing
  sigkill  the event's owner (or a live replica) is SIGKILLed, then started again
  sigstop  it is frozen (SIGSTOP) for the lease and 2-4 s more, then SIGCONT
  sigterm  it is stopped with SIGTERM (it drains and releases), then started again
  redis    redis-server (AOF on) is killed -9 and restarted on the same port and directory
           0.1-1 s later
  db       every connection to the audience's database is terminated (pg_terminate_backend)
  outage   the provider answers every push 503 for 2-5 s (the stand-in's POST /outage)
  slow     the provider answers after 1 s, for two leases and a second (POST /latency?ms=1000)

Each round then waits until every expected token arrived and the event's summary line was
written, watches --settle seconds more, and reads how often each token reached the stand-in
(GET /stats/tokens). Expected: the event's devices and every token of an accepted live request.
  lost     expected tokens that never arrived: 0 in every round
  repeats  deliveries beyond the first, of any token: 0 after none, sigterm, db, outage and slow;
           after sigkill, sigstop and redis at most what the owner that lost its claim had in
           flight plus two checkpoints' worth (2C/5, what a run may hold unsaved before it holds
           new pushes) per unit it ran: C + 4*(2C/5) for a split event (4 jobs at once),
           C + 2C/5 for a whole one, plus min(2C/5, tokens) for each push unit (at most 16 at
           once); C = --concurrency
  leaked   tokens that reached the stand-in and should not have (the dry-run replica's): 0
  summary  the live event's `Event processed.` lines (and the dry run's): exactly one each
A round that breaks one of these fails the campaign (exit 1); --keep-logs keeps the replicas'
logs of every round. Needs redis-server, redis-cli, PostgreSQL (--postgres) and psql.
"""
import argparse
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fanout  # noqa: E402  (binaries, ports, the stand-in's counters, the audience)
from api_push import request_body  # noqa: E402
from cluster import OwnRedis, control, notifier_env, start_stand_in, token_counts  # noqa: E402
from fanout import free_port, reset, sh, stats  # noqa: E402

FAULTS = ("none", "sigkill", "sigstop", "sigterm", "redis", "db", "outage", "slow")
# Faults after which a run that lost its claim may have sent what its successor sends again.
LOSES_CLAIMS = ("sigkill", "sigstop", "redis")
# What one replica runs at once: service.max_concurrent_events (events and jobs) and the push
# units of the API's backlog (ENTRIES_AT_ONCE in src/worker/pushes.rs).
UNITS_AT_ONCE, PUSH_UNITS_AT_ONCE = 4, 16


def bound(args, fault, split, requests):
    """Repeats a round may show: see the module's docstring."""
    if fault not in LOSES_CLAIMS:
        return 0
    # A run holds new pushes while more than two checkpoints' worth wait to be stored.
    c, unsaved = args.concurrency, 2 * (args.concurrency // 5)
    return c + (UNITS_AT_ONCE if split else 1) * unsaved + min(PUSH_UNITS_AT_ONCE, requests) * min(unsaved, args.tokens)


def audience(admin_url, devices, apns_every):
    """A database of its own with `devices` devices of one listener of talk 1 (bench/fanout.py's
    audience): returns its URL, the expected tokens and a function that drops it."""
    name = f"notifier_chaos_{os.getpid()}"
    url = urllib.parse.urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    admin = ["psql", "-q", "-v", "ON_ERROR_STOP=1"]
    sh(*admin, "-d", admin_url, "-c", f"DROP DATABASE IF EXISTS {name}")
    sh(*admin, "-d", admin_url, "-c", f"CREATE DATABASE {name}")
    drop = lambda: sh(*admin, "-d", admin_url, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    every = apns_every if apns_every > 0 else devices + 1
    try:
        fanout.fill_postgres(admin, url, url, devices, f"CASE WHEN i % {every} = 0 THEN 'apns' ELSE 'fcm' END")
    except BaseException:
        drop()
        raise
    terminate = lambda: sh(*admin, "-At", "-d", admin_url, "-c", "SELECT count(pg_terminate_backend(pid)) FROM "
                           f"pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()")
    tokens = [fanout.device_token(i) for i in range(1, devices + 1)]
    return url, tokens, drop, terminate


class Replica:
    """One replica's place in a round: its environment and API port stay across restarts; each
    run of it logs to a file of its own."""

    def __init__(self, directory, name, env, api_port):
        self.directory, self.name, self.env, self.api_port = directory, name, env, api_port
        self.logs, self.process = [], None

    def start(self):
        path = os.path.join(self.directory, f"{self.name}-{len(self.logs)}.log")
        with open(path, "w") as log:
            self.process = subprocess.Popen([os.path.join(fanout.BIN, "notifier"), "run"], env=self.env,
                                            stdout=log, stderr=log)
        self.logs.append(path)

    def signal(self, sig):
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self):
        self.signal(signal.SIGCONT)  # a frozen replica cannot drain
        fanout.stop(self.process)

    def lines(self):
        for path in self.logs:
            with open(path, errors="replace") as f:
                yield from f


class Round:
    """The replicas, event and requests of one round, and what the stand-in received."""

    def __init__(self, campaign, number, fault, rng):
        args = self.args = campaign.args
        self.campaign, self.number, self.fault, self.rng = campaign, number, fault, rng
        pid = os.getpid()
        size = rng.choice([2, 3])
        self.dry = rng.random() < 0.4
        self.split = rng.random() < 0.5
        self.job_size = args.devices // rng.choice([3, 4, 6]) if self.split else 0
        self.event_id = f"chaos-{args.seed}-{number}"
        self.channel = f"chaos_{pid}_{number}"
        self.dir = os.path.join(campaign.tmp, f"round-{number:03d}")
        os.makedirs(self.dir)
        config = os.path.join(self.dir, "notifier.toml")
        with open(config, "w") as f:
            # Retries outlast the longest 503 burst (the defaults give up after about 3 to 6 s):
            # the campaign is about who sends, not about how long a provider may be down.
            f.write(f'[claims]\nkey_prefix = "chaos:{pid}:{number}:"\nlease_secs = {args.lease_secs}\n'
                    "[retry]\ninitial_backoff_ms = 100\nmax_backoff_ms = 2000\nmax_attempts = 40\n")
        self.claim_key = f"chaos:{pid}:{number}:{{channel:{self.channel}}}:event:{self.event_id}"
        base = notifier_env(campaign.tmp, campaign.tls, database_url=campaign.database_url,
                            redis_url=campaign.redis.url, channel=self.channel, config=config,
                            concurrency=args.concurrency, rust_log=args.rust_log, apns=True)
        self.replicas = []
        for i in range(size):
            mode = "dry-run" if self.dry and i == size - 1 else "live"
            api = free_port()
            env = {**base, "NOTIFIER_SEND_MODE": mode, "NOTIFIER_JOB_SIZE": str(self.job_size),
                   "HOSTNAME": f"chaos-{number}-{i}", "NOTIFIER_HTTP_ADDR": f"127.0.0.1:{free_port()}",
                   "NOTIFIER_API_ADDR": f"127.0.0.1:{api}", "NOTIFIER_API_TOKENS": campaign.api_token}
            self.replicas.append(Replica(self.dir, f"{mode}-{i}", env, api))
        self.live = [r for r in self.replicas if r.env["NOTIFIER_SEND_MODE"] == "live"]
        self.dry_replica = None if not self.dry else self.replicas[-1]
        self.fault_over = threading.Event()
        self.traffic = Traffic(self)

    def describe(self):
        return (f"{len(self.live)} live{' + 1 dry' if self.dry else ''}, "
                + (f"jobs of {self.job_size}" if self.split else "whole"))

    def start(self):
        for r in self.replicas:
            r.start()
        deadline = time.time() + 60
        while int(self.campaign.redis.cli("PUBSUB", "NUMSUB", self.channel).split()[-1]) < len(self.replicas):
            self.check_deadline(deadline, "the replicas did not subscribe")
            time.sleep(0.05)
        for r in self.replicas:
            while self.traffic.answer(r.api_port, "GET", "/stat/app", None, {}) != 200:
                self.check_deadline(deadline, f"{r.name}'s API did not answer")
                time.sleep(0.05)

    def check_deadline(self, deadline, what):
        if time.time() > deadline:
            raise RuntimeError(f"round {self.number}: {what}; logs in {self.dir}")

    def owner(self):
        """The live replica whose run holds the event's claim now (a random live one before)."""
        owner = self.campaign.redis.cli("HGET", self.claim_key, "owner").strip()
        named = [r for r in self.live if owner.startswith(r.env["HOSTNAME"] + ":")]
        return named[0] if named else self.rng.choice(self.live)

    def inject(self):
        """Applies the round's fault and whatever ends it; returns what it did."""
        args, campaign, fault = self.args, self.campaign, self.fault
        if fault in ("sigkill", "sigstop", "sigterm"):
            victim = self.owner()
            if fault == "sigstop":
                victim.signal(signal.SIGSTOP)
                time.sleep(args.lease_secs + self.rng.uniform(2, 4))
                victim.signal(signal.SIGCONT)
            else:
                victim.signal(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
                victim.process.wait(timeout=60)
                time.sleep(self.rng.uniform(0.2, 1.0))
                victim.start()
            return f"{fault} {victim.name}"
        if fault == "redis":
            campaign.redis.kill()
            down = self.rng.uniform(0.1, 1.0)
            time.sleep(down)
            campaign.redis.start()
            return f"redis down {down:.1f} s"
        elif fault == "db":
            terminated = campaign.terminate().strip()
            return f"db: {terminated} connections terminated"
        elif fault == "outage":
            seconds = self.rng.uniform(2, 5)
            control(campaign.plain, "/outage?on=true")
            time.sleep(seconds)
            control(campaign.plain, "/outage?on=false")
            return f"503s for {seconds:.1f} s"
        elif fault == "slow":
            control(campaign.plain, "/latency?ms=1000")
            time.sleep(2 * args.lease_secs + 1)
            control(campaign.plain, f"/latency?ms={args.latency_ms}")
        return fault

    def run(self):
        """Runs the round; returns its result."""
        args, campaign = self.args, self.campaign
        self.start()
        reset(campaign.plain)
        started = time.time()
        reached = int(campaign.redis.cli("PUBLISH", self.channel, json.dumps(
            {"talk_id": 1, "event_id": self.event_id})).strip())
        if reached != len(self.replicas):
            raise RuntimeError(f"round {self.number}: the event reached {reached} replicas")
        self.traffic.start()
        trigger = self.rng.uniform(0.1, 0.6) * args.devices
        deadline = started + args.round_timeout
        while stats(campaign.plain)["delivered"] < trigger:  # the requests' tokens count too
            self.check_deadline(deadline, "the event stalled before its fault")
            time.sleep(0.02)
        at = stats(campaign.plain)["delivered"]
        did = self.inject()
        self.fault_over.set()
        self.traffic.join(max(1, deadline - time.time()))
        missing = self.wait_done(deadline)
        elapsed = time.time() - started
        time.sleep(args.settle)
        counts = token_counts(campaign.plain)
        summaries = self.summaries()
        for r in self.replicas:
            r.stop()
        return self.result(counts, summaries, did, at, elapsed, missing)

    def expected(self):
        return set(self.campaign.devices) | set(self.traffic.accepted)

    def wait_done(self, deadline):
        """Waits until every expected token arrived and the summaries were written, or the
        deadline; returns how many tokens were missing at the end."""
        missing = None
        while time.time() < deadline:
            if not self.traffic.is_alive():
                expected = self.expected()
                if stats(self.campaign.plain)["unique_delivered"] >= len(expected):
                    counts = token_counts(self.campaign.plain)
                    missing = sum(1 for t in expected if not counts.get(t))
                    live, dry = self.summaries()
                    if missing == 0 and live and (dry or not self.dry):
                        return 0
            time.sleep(0.2)
        return missing

    def summaries(self):
        """The live and the dry-run `Event processed.` lines of the round's event."""
        live = dry = 0
        for r in self.replicas:
            for line in r.lines():
                if '"Event processed."' in line and f'"{self.event_id}"' in line:
                    if r is self.dry_replica:
                        dry += '"dry_run":true' in line
                    else:
                        live += 1
        return live, dry

    def result(self, counts, summaries, did, at, elapsed, missing):
        expected = self.expected()
        lost = sum(1 for t in expected if not counts.get(t))
        repeats = sum(n - 1 for n in counts.values() if n > 1)
        leaked = sum(1 for t in counts if t not in expected)
        requests = self.traffic.requests
        limit = bound(self.args, self.fault, self.split, requests)
        problems = [name for name, bad in (
            ("lost", lost), ("repeats", repeats > limit), ("leaked", leaked),
            ("unaccepted", self.traffic.unaccepted), ("summary", summaries[0] != 1),
            ("dry summary", self.dry and summaries[1] != 1)) if bad]
        return {
            "round": self.number, "fault": self.fault, "did": did, "fault_at_delivered": at,
            "replicas": self.describe(), "devices": self.args.devices,
            "tokens": len(self.traffic.accepted), "requests": requests,
            "retried_with_key": self.traffic.retried, "lost": lost, "repeats": repeats, "bound": limit,
            "leaked": leaked, "unaccepted": self.traffic.unaccepted, "summaries": list(summaries),
            "elapsed_s": round(elapsed, 2), "ok": not problems, "problems": problems,
        }


class Traffic(threading.Thread):
    """`POST /push` requests to the round's live APIs until its fault is over and a little after,
    each with an Idempotency-Key, retried with it until accepted; a few to the dry-run API."""

    def __init__(self, round_):
        super().__init__(daemon=True)
        self.round, self.rng = round_, random.Random(round_.rng.random())
        self.accepted, self.requests, self.retried, self.unaccepted = [], 0, 0, 0
        self.headers = {"Content-Type": "application/json",
                        "Authorization": f"Bearer {round_.campaign.api_token}"}

    def answer(self, port, method, path, body, headers):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request(method, path, body, {**self.headers, **headers})
            response = conn.getresponse()
            response.read()
            conn.close()
            return response.status
        except OSError:
            return None

    def post(self, body, key, ports):
        """Posts until a replica accepts it (another one after each failure); False past the
        round's deadline."""
        deadline = time.time() + self.round.args.round_timeout / 2
        for attempt in itertools.count():
            port = ports[attempt % len(ports)]
            if self.answer(port, "POST", "/push", body, {"Idempotency-Key": key}) == 200:
                return True
            if time.time() > deadline:
                return False
            time.sleep(0.2)

    def send(self, n, client, ports):
        body = request_body(self.round.number, client, n, self.round.args.tokens, n % 3 == 2)
        key = f"{self.round.event_id}-{client}-{n}"
        ports = self.rng.sample(ports, len(ports))
        if not self.post(body, key, ports):
            self.unaccepted += 1
            return
        if client == 0:
            self.requests += 1
            self.accepted += json.loads(body)["notifications"][0]["token"]
        if self.rng.random() < 0.25:  # its answer was lost: the client sends it again
            self.retried += 1
            self.post(body, key, ports)

    def run(self):
        live = [r.api_port for r in self.round.live]
        if self.round.dry_replica:
            for n in range(3):
                self.send(n, 1, [self.round.dry_replica.api_port])
        n = after = 0
        while after < 5:
            self.send(n, 0, live)
            n += 1
            after += self.round.fault_over.is_set()
            time.sleep(self.round.args.request_interval)


class Campaign:
    """What every round shares: Redis (AOF on), the stand-in, the audience and the API token."""

    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="notifier-chaos-")
        self.api_token = f"chaos-api-token-{os.getpid()}"
        self.redis = self.stand_in = self.drop = None
        try:
            os.makedirs(os.path.join(self.tmp, "redis"))
            self.redis = OwnRedis(os.path.join(self.tmp, "redis"))
            self.stand_in, self.tls, self.plain = start_stand_in(self.tmp, args.latency_ms, "--count-tokens")
            self.database_url, self.devices, self.drop, self.terminate = audience(
                args.postgres, args.devices, args.apns_every)
        except BaseException:
            self.close()
            raise

    def round(self, number, fault):
        rng = random.Random(f"{self.args.seed}:{number}")
        r = Round(self, number, fault, rng)
        try:
            return r.run()
        finally:
            for replica in r.replicas:
                if replica.process is not None:
                    replica.stop()
            control(self.plain, "/outage?on=false")
            control(self.plain, f"/latency?ms={self.args.latency_ms}")
            self.redis.cli("FLUSHALL")
            if self.args.keep_logs:
                shutil.copytree(r.dir, os.path.join(self.args.keep_logs, os.path.basename(r.dir)),
                                dirs_exist_ok=True)

    def close(self):
        if self.stand_in is not None:
            self.stand_in.terminate()
            self.stand_in.wait()
        if self.redis is not None:
            self.redis.close()
        if self.drop is not None:
            self.drop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def schedule(args):
    """The rounds' faults: each cycle runs every fault once, in an order drawn from the seed."""
    rng, order = random.Random(args.seed), []
    while len(order) < args.rounds:
        cycle = list(args.faults)
        rng.shuffle(cycle)
        order += cycle
    return order[:args.rounds]


def summarize(rounds):
    faults = {}
    for r in rounds:
        f = faults.setdefault(r["fault"], {"rounds": 0, "lost": 0, "repeats": 0, "max_repeats": 0})
        f["rounds"] += 1
        f["lost"] += r["lost"]
        f["repeats"] += r["repeats"]
        f["max_repeats"] = max(f["max_repeats"], r["repeats"])
    return {"rounds": len(rounds), "failed_rounds": sum(not r["ok"] for r in rounds),
            "lost": sum(r["lost"] for r in rounds), "repeats": sum(r["repeats"] for r in rounds),
            "devices": sum(r["devices"] for r in rounds), "tokens": sum(r["tokens"] for r in rounds),
            "faults": faults}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--devices", type=int, default=6000, help="the event's audience each round")
    p.add_argument("--seed", type=int, default=1, help="draws the faults' order and each round's set-up")
    p.add_argument("--faults", type=lambda s: s.split(","), default=list(FAULTS),
                   help=f"comma-separated, from {','.join(FAULTS)}")
    p.add_argument("--lease-secs", type=int, default=2, help="claims.lease_secs")
    p.add_argument("--concurrency", type=int, default=50, help="NOTIFIER_CONCURRENCY (C in the bounds)")
    p.add_argument("--latency-ms", type=int, default=50, help="the stand-in's usual answer delay")
    p.add_argument("--tokens", type=int, default=20, help="tokens a POST /push request")
    p.add_argument("--request-interval", type=float, default=0.2, help="seconds between requests")
    p.add_argument("--apns-every", type=int, default=5, help="every K-th device through APNs (0: none)")
    p.add_argument("--postgres", default=os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
                   help="where to create the audience's database (default $TEST_POSTGRES_URL or local)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds watched after the last token")
    p.add_argument("--round-timeout", type=float, default=180)
    p.add_argument("--rust-log", default="warn,notifier::worker=info")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--bin-dir", help="run the binaries in this directory; implies --no-build")
    p.add_argument("--keep-logs", metavar="DIR", help="copy every round's replica logs here")
    p.add_argument("--json", help="write the rounds and the summary here")
    args = p.parse_args()
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        p.error(f"unknown faults: {', '.join(sorted(unknown))}")
    fanout.use_bin_dir(args)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "notifier", "-p", "notifier-stand-in"],
                       cwd=fanout.ROOT, check=True)
    c, step = args.concurrency, args.concurrency // 5
    print(f"seed {args.seed}, {args.rounds} rounds, {args.devices} devices, C={c}, lease {args.lease_secs} s; "
          f"repeat bound after {'/'.join(LOSES_CLAIMS)}: C + 2C/5 a unit (4 split, 1 whole) + "
          f"min(2C/5, {args.tokens}) a push unit (<= 16) = {bound(args, 'sigkill', True, 16)} split, "
          f"{bound(args, 'sigkill', False, 16)} whole; 0 after the others", flush=True)
    print(f"{'round':>5} {'fault':8} {'devices':>7} {'tokens':>6} {'lost':>4} {'repeats':>7} {'bound':>5} "
          f"{'elapsed':>7}  set-up", flush=True)
    campaign = Campaign(args)
    rounds = []
    try:
        for number, fault in enumerate(schedule(args)):
            r = campaign.round(number, fault)
            rounds.append(r)
            print(f"{r['round']:>5} {r['fault']:8} {r['devices']:>7} {r['tokens']:>6} {r['lost']:>4} "
                  f"{r['repeats']:>7} {r['bound']:>5} {r['elapsed_s']:>6.1f}s  {r['replicas']}; {r['did']}"
                  + ("" if r["ok"] else f"  FAILED: {', '.join(r['problems'])}"), flush=True)
    finally:
        campaign.close()
        summary = summarize(rounds)
        print("summary:", json.dumps(summary), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "rounds": rounds, "summary": summary}, f, indent=2)
    return 1 if summary["failed_rounds"] else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fan-out benchmark: one event to N devices, the notifier (release build) sending live to the FCM
stand-in over TLS/HTTP2 on loopback, with the machine's raw HTTP/2 ceiling (h2load) measured in the
same run against the same stand-in and the same request.

APNs devices (--apns-every) go through the transport that ships: the notifier builds the same
h2-shards client and provider-token path it uses for api.push.apple.com, aimed at the stand-in's
APNs side by APNS_ENDPOINT (only the host differs). With APNs in the mix, h2load also measures the
APNs endpoint (/3/device/…, APNs headers and payload), and the row's ceiling is the two ceilings
blended in the row's proportions.

Web Push devices (--webpush-every) hold subscriptions the stand-in mints for each run (a key pair
and an auth secret each, endpoints on its TLS port, allowed by [webpush] allowed_hosts); every push
is encrypted for its subscription and VAPID-signed by the notifier, and decrypted by the stand-in.
No ceiling is taken with them in the mix (h2load would replay one body): compare a row with
Web Push to the same row without (--webpush-every 0) on the same machine.

    python3 bench/fanout.py --devices 100000 --latency-ms 0 --runs 3
    python3 bench/fanout.py --devices 10000 --latency-ms 200 --concurrency 1000 --runs 3   # no ceiling
    python3 bench/fanout.py --devices 1000000 --runs 1 --no-ceiling
    python3 bench/fanout.py --devices 10000 --db sqlite
    python3 bench/fanout.py --devices 100000 --apns-every 2 --runs 3    # half through APNs
    python3 bench/fanout.py --devices 100000 --webpush-every 1 --runs 3 --no-ceiling  # all browsers
    python3 bench/fanout.py --devices 100000 --db mariadb --no-analyze --no-ceiling
    python3 bench/fanout.py --devices 100000 --query expr --no-ceiling  # ORDER BY an expression
    python3 bench/fanout.py --devices 100000 --runs 3 --both            # realistic and light, alternating
    python3 bench/fanout.py --devices 100000 --runs 3 --peer            # against the Node worker
    python3 bench/fanout.py --devices 100000 --runs 3 --vs ../old-bin   # this build against an older one
    python3 bench/fanout.py --devices 100000 --runs 3 --both --floor    # and h2-shards alone, each run

The stand-in is realistic by default: it parses every send's JSON, checks it as the provider does
(FCM's message.token among the rest; APNs' payload, the device token from the path) and records
the delivery by token, as a provider's front end must; h2load's requests pass the same checks, and
a ceiling run with any refused request fails. --light makes it answer every send unread, as a
floor for the server's share of the machine; --both runs each in turn and reports both.

--floor adds, to each run with a ceiling, h2-shards alone (crates/h2-shards/examples/floor.rs)
sending the notifier's FCM request as many times, a task each, at the notifier's concurrency and
connections: no database, no rendering, no bookkeeping. Its share of the ceiling (floor_of_ceiling)
and CPU per request (floor_us) are what the notifier's stack reaches without the notifier.

--peer alternates the notifier with bench/peer, the Node worker a team would write (firebase-admin
sendEach in batches of 500, ioredis, pg), installed with npm ci from its package-lock.json. It
needs root: for the run, /etc/hosts resolves fcm.googleapis.com and oauth2.googleapis.com to
127.0.0.1 (the line is removed afterwards, also on SIGINT and SIGTERM), and the stand-in listens on
127.0.0.1:443 with a certificate for those names, trusted through NODE_EXTRA_CA_CERTS. It reports
both sides' medians and the ratio of their pushes/s.

Needs: cargo, PostgreSQL on 127.0.0.1:5432 (role postgres, trust) for --db postgres, MariaDB on
127.0.0.1:3306 (root, no password) for --db mariadb, sqlite3 for --db sqlite, Redis on
127.0.0.1:6379, h2load (Debian: nghttp2-client), and for --peer node and npm. Prints one line per run and the medians;
--json writes them to a file. bench/audience.py runs the audience-read cases across databases.
"""
import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
TICKS = os.sysconf("SC_CLK_TCK")


_HANDED_OUT = set()


def free_port():
    """A loopback port for a child process to listen on, never one handed out before in this run.
    It is drawn from below the kernel's ephemeral range: a port the kernel picks (bind to 0), closed
    and given to a child, can meanwhile become the local port of any outgoing connection (a
    replica's connections to Redis and the database), and the child then cannot listen on it
    (bench/chaos.py: "the replicas did not subscribe", a replica's API address in use)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    low = max(1024, ephemeral_low - 12_000)
    for _ in range(1000):
        port = random.randrange(low, ephemeral_low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port between {low} and {ephemeral_low}")


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def stats(plain_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{plain_port}/stats", timeout=5) as r:
        return json.load(r)


def fence_holds(http_port):
    """notifier_fence_holds_total by reason, from the notifier's /metrics (a build without the
    metric gives none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    holds = {}
    for line in text.splitlines():
        if line.startswith("notifier_fence_holds_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            holds[f"{reason}_holds"] = int(float(line.rsplit(" ", 1)[1]))
    return holds


def reset(plain_port):
    req = urllib.request.Request(f"http://127.0.0.1:{plain_port}/stats/reset", method="POST")
    urllib.request.urlopen(req, timeout=5).close()


def wait_for_stand_in(plain_port):
    for _ in range(100):
        try:
            stats(plain_port)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the stand-in did not start")


def stop(process):
    """SIGTERM, as an orchestrator stops the notifier; SIGKILL after 30 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def delete_keys(prefix):
    """A run's keys, so the shared Redis does not keep its claims for the dedup window."""
    keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"{prefix}*"],
                          capture_output=True, text=True).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "DEL", *keys[i:i + 500]], capture_output=True)


def publish(channel, payload, subscribers=1):
    """PUBLISH over a connection opened beforehand, to `subscribers` subscribers (at least one,
    when None); returns the time it was sent, in ms. (Timing a `redis-cli` run instead would
    count its start-up, 10 to 100 ms, as the notifier's.)"""
    with socket.create_connection(("127.0.0.1", 6379)) as s:
        parts = [b"PUBLISH", channel.encode(), payload.encode()]
        command = b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        sent_ms = time.time() * 1000
        s.sendall(command)
        answer = s.recv(64)
    reached = int(answer[1:].split(b"\r")[0]) if answer.startswith(b":") else 0
    if reached == 0 or (subscribers is not None and reached != subscribers):
        raise RuntimeError(f"PUBLISH reached {answer!r} subscribers, not {subscribers or 'any'}")
    return sent_ms


def proc_stat(pid):
    """/proc/PID/stat's fields after the command name (which may hold spaces), from the state on."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def minor_faults(pid):
    """Page faults served without I/O so far (minflt): a page the allocator gave back to the
    kernel and touched again is one, zeroed by the kernel."""
    return int(proc_stat(pid)[7])


def machine_busy_seconds():
    """CPU seconds the whole machine has spent busy so far, every core and process together
    (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


DATABASE_SERVERS = {"postgres", "mariadbd", "mysqld"}


def database_seconds():
    """CPU seconds the database server's processes (PostgreSQL's backends among them) have spent
    so far. A backend that exits meanwhile takes its share with it: the notifier keeps its pool's
    connections open for the event, so none does."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() not in DATABASE_SERVERS:
                    continue
            total += cpu_seconds(int(entry))
        except OSError:
            continue  # gone meanwhile
    return total


def io_calls(pid):
    """The process's read and write system calls so far (/proc/PID/io: syscr, syscw)."""
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["syscr"]), int(fields["syscw"])


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


TABLES = ("users", "programs", "talks", "clips", "devices")
# A device's token: `bench-token-`, its id in 9 digits, and this many `x`, 161 characters in all, as
# long as an FCM registration token (the fill_* functions write it in SQL). h2load's is as long
# (H2LOAD_TOKEN), so that its requests carry as many bytes for the stand-in to decrypt, parse and
# record as the notifier's do.
TOKEN_PAD = 140


def device_token(i, prefix="bench-token-"):
    """The token the audience's device `i` has (or, with another 12-character prefix, one as long)."""
    return f"{prefix}{i:09d}" + "x" * TOKEN_PAD


H2LOAD_TOKEN = device_token(0, prefix="h2load-token")
ONE_TALK = """
        INSERT INTO users (id, name, locale) VALUES (1, 'author', 'en'), (2, 'listener', 'en');
        INSERT INTO programs (id, user_id, title) VALUES (1, 1, 'Big show');
        INSERT INTO talks (id, program_id, user_id, title) VALUES (1, 1, 1, 'Everyone listens');
        INSERT INTO clips (user_id, program_id) VALUES (2, 1);"""

# --query expr: the reference audience query ordered by an expression, so that no index gives the
# order (as an app's own query through other tables may be). It keeps `LIMIT :limit`, as queries
# written for page-by-page reads do, so that older builds run it too.
EXPR_QUERY = """
SELECT d.id AS device_id, d.user_id AS user_id, d.provider AS provider, d.platform AS platform,
       d.token AS token, u.locale AS locale, d.updated_at AS updated_at
FROM devices d
LEFT JOIN users u ON u.id = d.user_id
WHERE d.id > :after_id
  AND d.provider = :provider
  AND d.disabled_at IS NULL
  AND (:author_id IS NULL OR d.user_id <> :author_id)
  AND EXISTS (SELECT 1 FROM clips c WHERE c.user_id = d.user_id AND c.program_id = :program_id)
ORDER BY d.id + 0
LIMIT :limit
"""


def fill_postgres(admin, name, url, devices, provider, analyze=True):
    sh(os.path.join(BIN, "notifier"), "migrate", env={**os.environ, "DATABASE_URL": url})
    # No statistics, as right after a bulk load: autovacuum (which would analyze) kept off.
    fresh = "" if analyze else "".join(
        f"ALTER TABLE {t} SET (autovacuum_enabled = false);" for t in TABLES)
    sh(*admin, "-d", name, "-c", f"""{fresh}{ONE_TALK}
        INSERT INTO devices (id, user_id, provider, platform, token)
          SELECT i, 2, {provider}, 'android', 'bench-token-' || lpad(i::text, 9, '0') || repeat('x', {TOKEN_PAD})
          FROM generate_series(1, {devices}) AS i;
        {"ANALYZE;" if analyze else ""}""")


def fill_mariadb(admin, name, url, devices, provider, analyze=True):
    sh(os.path.join(BIN, "notifier"), "migrate", env={**os.environ, "DATABASE_URL": url})
    # No statistics: InnoDB's persistent statistics and their automatic recalculation off (it
    # would otherwise recompute them in the background after the load), and no ANALYZE TABLE.
    fresh = "" if analyze else "".join(
        f"ALTER TABLE {t} STATS_PERSISTENT = 0, STATS_AUTO_RECALC = 0;" for t in TABLES)
    sh(*admin, name, "-e", f"""{fresh}{ONE_TALK}
        SET STATEMENT max_recursive_iterations = 100000000 FOR
        INSERT INTO devices (id, user_id, provider, platform, token)
          WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {devices})
          SELECT i, 2, {provider}, 'android', CONCAT('bench-token-', LPAD(i, 9, '0'), REPEAT('x', {TOKEN_PAD})) FROM n;
        {"ANALYZE TABLE " + ", ".join(TABLES) + ";" if analyze else ""}""")


def make_audience(db, devices, workdir, apns_every, analyze=True, webpush_every=0):
    """A talk whose program one listener clipped, with `devices` devices: every `webpush_every`-th
    one (0: none) a browser reached through Web Push (its token set per run, see
    `set_web_tokens`), of the others every `apns_every`-th one (0: none) an iPhone reached through
    APNs, the rest Android through FCM. Without `analyze` the database has no planner statistics,
    as right after a bulk load."""
    every = apns_every if apns_every > 0 else devices + 1
    web = webpush_every if webpush_every > 0 else devices + 1
    provider = f"CASE WHEN i % {web} = 0 THEN 'webpush' WHEN i % {every} = 0 THEN 'apns' ELSE 'fcm' END"
    if db == "mariadb":
        name = f"notifier_bench_{os.getpid()}"
        admin = ["mariadb", "-h", "127.0.0.1", "-u", "root"]
        sh(*admin, "-e", f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name} CHARACTER SET utf8mb4")
        url = f"mysql://root@127.0.0.1:3306/{name}"
        drop = lambda: sh(*admin, "-e", f"DROP DATABASE IF EXISTS {name}")
        try:
            fill_mariadb(admin, name, url, devices, provider, analyze)
        except BaseException:
            drop()
            raise
        return url, drop
    if db == "postgres":
        name = f"notifier_bench_{os.getpid()}"
        admin = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]
        sh(*admin, "-d", "postgres", "-c", f"DROP DATABASE IF EXISTS {name}")
        sh(*admin, "-d", "postgres", "-c", f"CREATE DATABASE {name}")
        url = f"postgres://postgres@127.0.0.1:5432/{name}"
        drop = lambda: sh(*admin, "-d", "postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        try:
            fill_postgres(admin, name, url, devices, provider, analyze)
        except BaseException:
            drop()
            raise
        return url, drop
    path = os.path.join(workdir, "bench.db")
    url = f"sqlite://{path}"
    sh(os.path.join(BIN, "notifier"), "migrate", env={**os.environ, "DATABASE_URL": url})
    sh("sqlite3", path, f"""
        INSERT INTO users (id, name, locale) VALUES (1, 'author', 'en'), (2, 'listener', 'en');
        INSERT INTO programs (id, user_id, title) VALUES (1, 1, 'Big show');
        INSERT INTO talks (id, program_id, user_id, title) VALUES (1, 1, 1, 'Everyone listens');
        INSERT INTO clips (user_id, program_id) VALUES (2, 1);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {devices})
        INSERT INTO devices (id, user_id, provider, platform, token)
          SELECT i, 2, {provider}, 'android', 'bench-token-' || substr('000000000' || i, -9, 9) || printf('%.{TOKEN_PAD}c', 'x') FROM n;""")
    return url, lambda: None


FCM_BODY = {"message": {"token": H2LOAD_TOKEN, "notification": {"title": "New talk on Big show", "body": "Everyone listens"},
            "data": {"type": "talk_posted", "talk_id": "1", "program_id": "1", "url": "notifier-demo://talks/1"},
            "android": {"priority": "high", "ttl": "86400s", "collapse_key": "bench", "notification": {"tag": "bench"}}}}
APNS_BODY = {"aps": {"alert": {"title": "New talk on Big show", "body": "Everyone listens"}, "sound": "default",
                     "thread-id": "program-1"},
             "program_id": "1", "talk_id": "1", "type": "talk_posted", "url": "notifier-demo://talks/1"}


def ceiling(tls_port, body_path, requests, connections, streams, stand_in_pid, apns=False):
    """The raw HTTP/2 rate of this machine against the stand-in: h2load, same request (FCM's, or
    with apns APNs' path, headers and payload). Returns the rate and the CPU microseconds each
    request cost the machine and the stand-in."""
    busy_before, stand_in_before = machine_busy_seconds(), cpu_seconds(stand_in_pid)
    if apns:
        headers = ["authorization: bearer h2load", "apns-topic: com.example.notifier", "apns-push-type: alert",
                   "apns-priority: 10", f"apns-expiration: {int(time.time()) + 86400}", "apns-collapse-id: bench",
                   "content-type: application/json"]
        path = f"/3/device/{H2LOAD_TOKEN}"
    else:
        headers = ["authorization: Bearer h2load", "content-type: application/json"]
        path = "/v1/projects/stand-in-project/messages:send"
    # A thread per core, as the notifier and the stand-in have: with h2load's default of one,
    # its own thread was the bound against the light stand-in (five alternated pairs of 200,000
    # requests, -c 4 -m 100: 90,900 against 113,000 req/s, medians), so the ceiling measured h2load.
    threads = min(connections, os.cpu_count())
    out = subprocess.run(
        ["h2load", "-n", str(requests), "-t", str(threads), "-c", str(connections), "-m", str(streams),
         *[arg for h in headers for arg in ("-H", h)], "-d", body_path, f"https://127.0.0.1:{tls_port}{path}"],
        capture_output=True, text=True, check=True).stdout
    # Every request must have been a delivery: the ceiling is of sends the stand-in accepted
    # (a realistic stand-in refuses a malformed one), not of errors.
    codes = next((line for line in out.splitlines() if line.startswith("status codes:")), "")
    succeeded = int(codes.split(":")[1].split()[0]) if codes else 0  # "status codes: N 2xx, …"
    if succeeded != requests:
        raise RuntimeError(f"h2load: {succeeded} of {requests} requests succeeded:\n{out}")
    per_request = {"machine": (machine_busy_seconds() - busy_before) / requests * 1e6,
                   "stand_in": (cpu_seconds(stand_in_pid) - stand_in_before) / requests * 1e6}
    for line in out.splitlines():
        if line.startswith("finished in"):
            return float(line.split(",")[1].split()[0]), per_request  # "finished in 1.2s, 83000.00 req/s, …"
    raise RuntimeError(out)


def ceilings(args, tmp, tls_port, stand_in_pid):
    """h2load against the endpoints the row's pushes went to, in the same run; the row's ceiling is
    their harmonic blend in the row's proportions (the time each share would take at its ceiling)."""
    apns_share = 0.0 if args.apns_every <= 0 else (args.devices // args.apns_every) / args.devices
    out, time_per_push = {}, 0.0
    for name, body, apns, share in (("fcm", FCM_BODY, False, 1 - apns_share), ("apns", APNS_BODY, True, apns_share)):
        if share <= 0:
            continue
        path = os.path.join(tmp, f"{name}-body.json")
        with open(path, "w") as f:
            json.dump(body, f)
        rate, per_request = ceiling(tls_port, path, args.ceiling_requests, 4, args.max_streams, stand_in_pid, apns=apns)
        out[f"{name}_ceiling_per_s"] = rate
        # Where a request's CPU went at the ceiling: the stand-in, and the rest (h2load, the
        # kernel): what the row's pushes are compared with.
        out[f"{name}_ceiling_machine_us"] = per_request["machine"]
        out[f"{name}_ceiling_stand_in_us"] = per_request["stand_in"]
        time_per_push += share / rate
    out["ceiling_per_s"] = 1 / time_per_push
    return out


def floor_binary():
    """examples/floor.rs built: in the binaries' directory (a --bin-dir copy), or this build's."""
    beside = os.path.join(BIN, "floor")
    return beside if os.path.exists(beside) else os.path.join(ROOT, "target", "release", "examples", "floor")


def floor(args, tmp, tls_port, plain_port, stand_in_pid):
    """With --floor: h2-shards alone (crates/h2-shards/examples/floor.rs) sending the notifier's
    FCM request as many times as the event had devices, at its concurrency and over as many
    connections as the notifier opens for it, against the same stand-in in the same run. Each
    request a task, with a distinct token of the devices' length; no database, no rendering, no
    bookkeeping. Its share of the ceiling is the most the notifier could reach on this stack."""
    body = os.path.join(tmp, "fcm-body.json")  # h2load's, written by ceilings() before the event
    connections = min(max(-(-args.concurrency // 100), os.cpu_count()), 16)  # the notifier's connections_for
    busy_before, stand_in_before = machine_busy_seconds(), cpu_seconds(stand_in_pid)
    out = subprocess.run(
        [floor_binary(), "--endpoint", f"https://localhost:{tls_port}", "--ca", os.path.join(tmp, "ca.pem"),
         "--body", body, "--token", H2LOAD_TOKEN, "--requests", str(args.devices),
         "--concurrency", str(args.concurrency), "--connections", str(connections)],
        capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    if r["failures"]:
        raise RuntimeError(f"floor: {r['failures']} of {r['requests']} requests failed")
    # Its tokens are recorded like the devices': cleared, so the ceiling after meets the stand-in
    # as the one before did.
    reset(plain_port)
    return {"floor_per_s": r["per_s"], "floor_us": r["cpu_s"] / r["requests"] * 1e6,
            "floor_machine_us": (machine_busy_seconds() - busy_before) / r["requests"] * 1e6,
            "floor_stand_in_us": (cpu_seconds(stand_in_pid) - stand_in_before) / r["requests"] * 1e6}


def bracketed(before, after):
    """The ceiling for an event from h2load just before it and just after: rates by their mean
    time per request, CPU costs by their mean. This machine's speed drifts (other tenants of its
    host) by a fifth within a minute, and one ceiling taken after the event moved a run's share
    of it as much; `ceiling_drift` (after / before) shows how far it moved during the run."""
    out = {}
    for key in after:
        if key.endswith("_per_s"):
            out[key] = 2 / (1 / before[key] + 1 / after[key])
        else:
            out[key] = (before[key] + after[key]) / 2
    out["ceiling_drift"] = after["ceiling_per_s"] / before["ceiling_per_s"]
    return out


def set_web_tokens(args, url, plain_port):
    """Mints a subscription for each Web Push device at this run's stand-in (one request) and
    stores it as the device's token, through the database's own client."""
    count = args.devices // args.webpush_every
    req = urllib.request.Request(f"http://127.0.0.1:{plain_port}/webpush/subscriptions", method="POST",
                                 data=json.dumps({"id": "w", "count": count}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        minted = json.load(r)
    rows = [f"({(k + 1) * args.webpush_every}, '{json.dumps(sub, separators=(',', ':'))}')"
            for k, sub in enumerate(minted)]
    sql = ["CREATE TABLE bench_webpush (id BIGINT PRIMARY KEY, token TEXT NOT NULL);"]
    sql += [f"INSERT INTO bench_webpush (id, token) VALUES {', '.join(rows[i:i + 1000])};"
            for i in range(0, len(rows), 1000)]
    sql += ["UPDATE devices SET token = (SELECT token FROM bench_webpush w WHERE w.id = devices.id) "
            "WHERE provider = 'webpush';", "DROP TABLE bench_webpush;"]
    name = url.rsplit("/", 1)[1]
    client = {"postgres": ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1", "-d", name],
              "mariadb": ["mariadb", "-h", "127.0.0.1", "-u", "root", name],
              "sqlite": ["sqlite3", url.removeprefix("sqlite://")]}[args.db]
    subprocess.run(client, input="\n".join(sql), check=True, capture_output=True, text=True)


def start_stand_in(args, tmp, tls_addr, plain_port, cert_names=()):
    """The stand-in for one run: realistic (every send parsed, checked and recorded by token, as a
    provider's front end must) unless --light (answered unread). Any bearer token passes, so that
    h2load's requests are valid too."""
    return subprocess.Popen(
        [os.path.join(BIN, "notifier-stand-in"), "--tls-addr", tls_addr,
         "--plain-addr", f"127.0.0.1:{plain_port}", "--dir", tmp, "--latency-ms", str(args.latency_ms),
         "--max-streams", str(args.max_streams), "--accept-any-token",
         *(["--light"] if getattr(args, "light", False) else []),
         *[arg for name in cert_names for arg in ("--cert-name", name)]],
        # Runtime experiments are for the notifier: the stand-in (and so the ceiling) stays as is.
        env={k: v for k, v in os.environ.items() if not k.startswith(("TOKIO_", "MIMALLOC_"))},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mode(args):
    return "light" if getattr(args, "light", False) else "realistic"


def wait_subscribed(channel, log):
    for _ in range(400):
        if sh("redis-cli", "PUBSUB", "NUMSUB", channel).split()[-1] == "1":
            return
        time.sleep(0.05)
    raise RuntimeError(f"no subscriber on {channel}; see {log}")


def failed(log):
    with open(log) as f:
        return '"Event failed."' in f.read()


def summarised(log):
    with open(log) as f:
        return '"Event processed."' in f.read()


def measure_event(args, process, stand_in, plain_port, channel, run, log):
    """Publishes the event and waits for the stand-in to count every push and for `log` to
    hold the event's summary line; returns what the run measured of `process`, and the CPU each
    push cost the stand-in and the whole machine (the database and Redis among the rest)."""
    reset(plain_port)
    cpu_before, io_before = cpu_seconds(process.pid), io_calls(process.pid)
    faults_before = minor_faults(process.pid)
    busy_before, stand_in_before = machine_busy_seconds(), cpu_seconds(stand_in.pid)
    database_before = database_seconds()
    published_ms = publish(channel, json.dumps({"talk_id": 1, "event_id": f"bench-{run}"}))
    deadline = time.time() + args.timeout
    # Seldom: this loop runs beside what it measures, and h2load's run has no such loop. At 50 a
    # second it cost 2.7 % of the machine (`perf record -a`). The rates come from the
    # stand-in's own first and last push times, not from when this loop saw them.
    while True:
        s = stats(plain_port)
        if s["delivered"] >= args.devices:
            break
        if summarised(log) and deadline > time.time() + 2:
            deadline = time.time() + 2  # done, short of pushes: the few in flight may still count
        if time.time() > deadline or process.poll() is not None or failed(log):
            raise RuntimeError(f"only {s['delivered']} of {args.devices} delivered; see {log}")
        time.sleep(0.2)
    # The event's own work ends with its summary line, after the last push.
    for _ in range(500):
        if summarised(log):
            break
        time.sleep(0.01)
    cpu = cpu_seconds(process.pid) - cpu_before
    faults = minor_faults(process.pid) - faults_before
    busy = machine_busy_seconds() - busy_before
    stand_in_cpu = cpu_seconds(stand_in.pid) - stand_in_before
    database_cpu = database_seconds() - database_before
    reads, writes = (after - before for after, before in zip(io_calls(process.pid), io_before))
    first = s["first_delivered_ms"] - published_ms
    last = s["last_delivered_ms"] - published_ms
    return {
        "devices": args.devices, "apns_every": args.apns_every, "latency_ms": args.latency_ms,
        "concurrency": args.concurrency, "stand_in": mode(args),
        # End to end: publish to last push. Steady: first to last push (as h2load measures).
        "pushes_per_s": args.devices / (last / 1000),
        "steady_per_s": (args.devices - 1) / max((last - first) / 1000, 0.001),
        "first_push_ms": first, "last_push_ms": last,
        "peak_rss_mib": peak_rss_mib(process.pid), "cpu_s_per_10k": cpu / args.devices * 10_000,
        "tls_connections": s["connections"]["tls"], "duplicates": s["duplicates"],
        # System calls that move bytes (the sockets' among them), per push: unlike the rates, the
        # machine's load does not move them, so they compare builds on a busy machine.
        "reads_per_push": reads / args.devices, "writes_per_push": writes / args.devices,
        "faults_per_push": faults / args.devices,
        # CPU microseconds per push: the notifier's, the stand-in's, the database server's, the
        # whole machine's (from the publish to the summary line), and how busy the machine's cores were meanwhile.
        "notifier_us": cpu / args.devices * 1e6, "stand_in_us": stand_in_cpu / args.devices * 1e6,
        "database_us": database_cpu / args.devices * 1e6,
        "machine_us": busy / args.devices * 1e6,
        # Over the publish to the last push: the machine idles from then until this loop looks.
        "machine_busy": busy / (last / 1000) / os.cpu_count(),
    }


@contextlib.contextmanager
def profiled(args, pid, run):
    """With --perf PREFIX: `perf record --call-graph dwarf` on the notifier for the event, into
    PREFIX-RUN.data (Debian: linux-perf). It costs the notifier CPU: a profiled run's rates are
    not figures."""
    if not getattr(args, "perf", None):
        yield
        return
    out = f"{args.perf}-{run}.data"
    perf = subprocess.Popen(["perf", "record", "-F", str(args.perf_freq), "--call-graph", "dwarf,16384",
                             "-p", str(pid), "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # perf attaches before the publish
    try:
        yield
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait()
        print(f"# profile: perf report -i {out} --no-children", flush=True)


def one_run(args, url, run):
    tmp = tempfile.mkdtemp(prefix="notifier-bench-")
    tls_port, plain_port, http_port = free_port(), free_port(), free_port()
    stand_in = start_stand_in(args, tmp, f"127.0.0.1:{tls_port}", plain_port)
    notifier = None
    try:
        wait_for_stand_in(plain_port)
        if args.webpush_every > 0:
            set_web_tokens(args, url, plain_port)
        channel = f"bench_{os.getpid()}_{run}"
        with open(os.path.join(tmp, "notifier.toml"), "w") as f:
            # Each provider may use the whole concurrency, unless --default-shares leaves the
            # notifier's own share (three quarters of it) in place.
            share = "" if getattr(args, "default_shares", False) else f"concurrency = {args.concurrency}\n"
            f.write(f'[claims]\nkey_prefix = "bench:{os.getpid()}:{run}:"\n'
                    f"[database]\npage_size = {args.page_size}\n"
                    f"[fcm]\n{share}connections = {getattr(args, 'fcm_connections', 0)}\n"
                    f"[apns]\n{share}")
            if args.webpush_every > 0:
                f.write(f'[webpush]\nallowed_hosts = ["localhost"]\n{share}')
            if args.query == "expr":
                f.write(f'[queries]\naudience = """{EXPR_QUERY}"""\n')
        env = {
            "PATH": os.environ["PATH"], "APP_ENV": "production", "DATABASE_URL": url,
            "REDIS_URL": "redis://127.0.0.1:6379", "NOTIFIER_CHANNEL": channel,
            "NOTIFIER_CONFIG": os.path.join(tmp, "notifier.toml"),
            "NOTIFIER_CONCURRENCY": str(args.concurrency), "NOTIFIER_HTTP_ADDR": f"127.0.0.1:{http_port}",
            # One replica against the machine's ceiling: unpaced and unsplit unless asked
            # (bench/replicas.py measures the split and the shared quota).
            "FCM_QUOTA_PER_MINUTE": str(args.fcm_quota), "NOTIFIER_JOB_SIZE": str(args.job_size),
            "FCM_ENDPOINT": f"https://localhost:{tls_port}", "NOTIFIER_EXTRA_CA_FILE": os.path.join(tmp, "ca.pem"),
            "GOOGLE_APPLICATION_CREDENTIALS": os.path.join(tmp, "service-account.json"),
            "LOG_FORMAT": "json", "RUST_LOG": args.rust_log,
            # APNs through the shipped transport (h2-shards, provider token), aimed at the stand-in.
            "APNS_ENDPOINT": f"https://localhost:{tls_port}", "APNS_KEY_PATH": os.path.join(tmp, "apns-key.p8"),
            "APNS_KEY_ID": "STANDIN123", "APNS_TEAM_ID": "TEAM123456", "APNS_TOPIC": "com.example.notifier",
            # Web Push signs with any P-256 key: the stand-in's APNs key serves as the VAPID key.
            "WEBPUSH_VAPID_PRIVATE_KEY_PATH": os.path.join(tmp, "apns-key.p8"),
            "WEBPUSH_VAPID_SUBJECT": "mailto:bench@example.com",
            # Runtime and allocator experiments (TOKIO_WORKER_THREADS=1, MIMALLOC_…) reach the notifier.
            **{k: v for k, v in os.environ.items() if k.startswith(("TOKIO_", "MIMALLOC_"))},
        }
        # With latency, h2load's fixed connections and streams would measure the latency, not the
        # machine: the ceiling is taken at zero latency only.
        take_ceiling = not args.no_ceiling and args.latency_ms == 0 and args.webpush_every == 0
        before = ceilings(args, tmp, tls_port, stand_in.pid) if take_ceiling else None
        log = open(os.path.join(tmp, "notifier.log"), "w")
        binary = getattr(args, "notifier_bin", None) or os.path.join(BIN, "notifier")
        notifier = subprocess.Popen([binary, "run"], env=env, stdout=log, stderr=log)
        wait_subscribed(channel, log.name)
        with profiled(args, notifier.pid, run):
            result = measure_event(args, notifier, stand_in, plain_port, channel, run, log.name)
        result.update(fence_holds(http_port))
        result["webpush_every"] = args.webpush_every
        if args.webpush_every > 0:
            s = stats(plain_port)
            result["webpush_decrypted"] = s["webpush"]["decrypted"]
            if s["webpush"]["decrypt_failures"]:
                raise RuntimeError(f"{s['webpush']['decrypt_failures']} Web Push bodies did not decrypt")
        if take_ceiling:
            if args.floor:
                result.update(floor(args, tmp, tls_port, plain_port, stand_in.pid))
            result.update(bracketed(before, ceilings(args, tmp, tls_port, stand_in.pid)))
            result["of_ceiling"] = result["pushes_per_s"] / result["ceiling_per_s"]
            if args.floor:
                result["floor_of_ceiling"] = result["floor_per_s"] / result["ceiling_per_s"]
            result["steady_of_ceiling"] = result["steady_per_s"] / result["ceiling_per_s"]
        return result
    finally:
        stop(notifier)
        stand_in.terminate()
        stand_in.wait()
        delete_keys(f"bench:{os.getpid()}:{run}:")
        if args.keep_logs:
            os.makedirs(args.keep_logs, exist_ok=True)
            shutil.copy(os.path.join(tmp, "notifier.log"), os.path.join(args.keep_logs, f"notifier-{run}.log"))
        shutil.rmtree(tmp, ignore_errors=True)


PEER_DIR = os.path.join(ROOT, "bench", "peer")
# firebase-admin sends to fcm.googleapis.com and fetches its token from oauth2.googleapis.com (it
# ignores the service account's token_uri): both are resolved to loopback for the run.
PEER_HOSTS = ("fcm.googleapis.com", "oauth2.googleapis.com")
HOSTS = "/etc/hosts"


class LoopbackHosts:
    """Adds a line to /etc/hosts resolving PEER_HOSTS to 127.0.0.1, marked with this process's id,
    and removes it on exit, however the run ends (SIGTERM and SIGINT included)."""

    MARK = "# notifier bench/fanout.py --peer"

    def __enter__(self):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        # A run killed outright (SIGKILL) left its line: any whose process is gone goes now.
        self.drop(lambda pid: not os.path.exists(f"/proc/{pid}"))
        with open(HOSTS, "a") as f:
            f.write(f"127.0.0.1 {' '.join(PEER_HOSTS)} {self.MARK} {os.getpid()}\n")
        return self

    def __exit__(self, *_):
        self.drop(lambda pid: pid == str(os.getpid()))

    def drop(self, whose):
        with open(HOSTS) as f:
            lines = f.readlines()
        kept = [line for line in lines if self.MARK not in line or not whose(line.split()[-1])]
        if kept != lines:
            with open(HOSTS, "w") as f:
                f.writelines(kept)


def install_peer():
    """bench/peer's dependencies, pinned by its package-lock.json, installed as npm ci installs them."""
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER_DIR, check=True)


def peer_run(args, url, run):
    """The Node worker (bench/peer) sending the same event to the same audience through the
    stand-in on 127.0.0.1:443, as fcm.googleapis.com."""
    tmp = tempfile.mkdtemp(prefix="notifier-bench-peer-")
    plain_port = free_port()
    stand_in = start_stand_in(args, tmp, "127.0.0.1:443", plain_port, cert_names=PEER_HOSTS)
    peer = None
    try:
        wait_for_stand_in(plain_port)
        channel = f"bench_peer_{os.getpid()}_{run}"
        env = {
            "PATH": os.environ["PATH"], "DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:6379",
            "NOTIFIER_CHANNEL": channel, "GOOGLE_APPLICATION_CREDENTIALS": os.path.join(tmp, "service-account.json"),
            "NODE_EXTRA_CA_CERTS": os.path.join(tmp, "ca.pem"),
            **{k: v for k, v in os.environ.items() if k.startswith("PEER_")},
        }
        log = open(os.path.join(tmp, "peer.log"), "w")
        peer = subprocess.Popen(["node", os.path.join(PEER_DIR, "worker.js")], env=env, stdout=log, stderr=log)
        wait_subscribed(channel, log.name)
        result = measure_event(args, peer, stand_in, plain_port, channel, f"peer-{run}", log.name)
        result["worker"] = "node"
        return result
    finally:
        stop(peer)
        stand_in.terminate()
        stand_in.wait()
        if args.keep_logs and peer is not None:
            os.makedirs(args.keep_logs, exist_ok=True)
            shutil.copy(os.path.join(tmp, "peer.log"), os.path.join(args.keep_logs, f"peer-{run}.log"))
        shutil.rmtree(tmp, ignore_errors=True)


def plan(args):
    """The runs, in the order they go: (label, function, args). --both alternates the realistic and
    the light stand-in, --peer the notifier and the Node worker, so that the machine's drift
    falls on both sides of each comparison."""
    realistic = argparse.Namespace(**{**vars(args), "light": False})
    light = argparse.Namespace(**{**vars(args), "light": True})
    steps = []
    for run in range(args.runs):
        if args.peer:
            steps += [("notifier", one_run, args, run), ("node", peer_run, args, run)]
        elif args.vs:
            other = argparse.Namespace(**{**vars(args), "notifier_bin": os.path.join(os.path.abspath(args.vs), "notifier")})
            steps += [("this", one_run, args, run), ("vs", one_run, other, f"{run}-vs")]
        elif args.both:
            steps += [("realistic", one_run, realistic, run), ("light", one_run, light, f"{run}-light")]
        else:
            steps += [(mode(args), one_run, args, run)]
    return steps


def report(runs):
    """Medians per label, and with two labels the ratio of the first's pushes/s to the second's
    (the median of the pair-by-pair ratios too)."""
    out = {}
    for label in dict.fromkeys(label for label, _ in runs):
        mine = [r for lab, r in runs if lab == label]
        out[label] = {k: statistics.median(r[k] for r in mine) for k in mine[0] if isinstance(mine[0][k], (int, float))}
        print(f"median {label}:", json.dumps({k: round(v, 3) for k, v in out[label].items()}), flush=True)
    labels = list(out)
    if len(labels) == 2:
        a, b = ([r["pushes_per_s"] for lab, r in runs if lab == label] for label in labels)
        pairs = [x / y for x, y in zip(a, b)]
        out["ratio"] = {"of_medians": out[labels[0]]["pushes_per_s"] / out[labels[1]]["pushes_per_s"],
                        "median_of_pairs": statistics.median(pairs), "pairs": pairs}
        print(f"pushes/s {labels[0]} / {labels[1]}:", json.dumps({k: [round(p, 2) for p in v] if isinstance(v, list)
                                                                  else round(v, 2) for k, v in out["ratio"].items()}))
    return out


def use_bin_dir(args):
    global BIN
    if args.bin_dir:
        BIN = os.path.abspath(args.bin_dir)
        args.no_build = True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=256, help="NOTIFIER_CONCURRENCY (FCM may use all of it)")
    p.add_argument("--fcm-quota", type=int, default=0, help="FCM_QUOTA_PER_MINUTE (0: unpaced)")
    p.add_argument("--job-size", type=int, default=0, help="NOTIFIER_JOB_SIZE (0: one replica sends it whole)")
    p.add_argument("--default-shares", action="store_true",
                   help="leave fcm.concurrency and apns.concurrency to the notifier (a share of --concurrency)")
    p.add_argument("--fcm-connections", type=int, default=0, help="fcm.connections (0: the notifier's own choice)")
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--max-streams", type=int, default=100, help="the stand-in's SETTINGS_MAX_CONCURRENT_STREAMS")
    p.add_argument("--db", choices=["postgres", "mariadb", "sqlite"], default="postgres")
    p.add_argument("--no-analyze", action="store_true",
                   help="no planner statistics, as right after a bulk load (postgres, mariadb)")
    p.add_argument("--query", choices=["default", "expr"], default="default",
                   help="expr: the audience query ordered by an expression no index gives")
    p.add_argument("--bin-dir", help="run the binaries in this directory (say, an older build); implies --no-build")
    p.add_argument("--vs", metavar="DIR",
                   help="each run twice: this build's notifier, then the one in DIR (say, a copy of the last build), "
                        "against the same stand-in")
    p.add_argument("--apns-every", type=int, default=0, help="every K-th device goes through APNs (0: none)")
    p.add_argument("--webpush-every", type=int, default=0,
                   help="every N-th device is a browser, through Web Push (0: none); before --apns-every")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--no-ceiling", action="store_true", help="skip h2load")
    p.add_argument("--ceiling-requests", type=int, default=200_000)
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--json", help="write the runs and medians here")
    p.add_argument("--light", action="store_true",
                   help="the stand-in answers every send unread (default: parsed, checked, recorded by token)")
    p.add_argument("--both", action="store_true", help="each run twice: realistic stand-in, then --light")
    p.add_argument("--peer", action="store_true",
                   help="alternate the notifier with bench/peer (Node: firebase-admin sendEach, ioredis, pg), "
                        "the stand-in on 127.0.0.1:443 as fcm.googleapis.com (an /etc/hosts line, removed after)")
    p.add_argument("--floor", action="store_true",
                   help="after each event, h2-shards alone (its examples/floor.rs) sends as many requests, "
                        "for the share of the ceiling the notifier's stack reaches without the notifier")
    p.add_argument("--perf", metavar="PREFIX", help="profile the notifier during each event into PREFIX-RUN.data")
    p.add_argument("--perf-freq", type=int, default=499, help="perf's samples per second with --perf")
    p.add_argument("--rust-log", default="warn,notifier::worker=info", help="the notifier's RUST_LOG")
    p.add_argument("--keep-logs", metavar="DIR", help="copy each run's notifier log here")
    args = p.parse_args()
    use_bin_dir(args)
    if args.peer and (args.db != "postgres" or args.apns_every or args.webpush_every or args.both):
        p.error("--peer compares FCM sends read from PostgreSQL: no --db, --apns-every, --webpush-every or --both")
    if args.floor and (args.apns_every or args.webpush_every or args.peer):
        p.error("--floor sends FCM's request alone, against an FCM ceiling: no --apns-every, --webpush-every or --peer")
    if args.vs and (args.peer or args.both):
        p.error("--vs compares two notifier builds, run after run, in one stand-in mode: no --peer or --both")

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "notifier", "-p", "notifier-stand-in"],
                       cwd=ROOT, check=True)
        if args.floor:
            subprocess.run(["cargo", "build", "--release", "--locked", "-p", "h2-shards", "--example", "floor"],
                           cwd=ROOT, check=True)
    if args.peer:
        install_peer()
    print(f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB", flush=True)
    workdir = tempfile.mkdtemp(prefix="notifier-bench-db-")
    url, drop = make_audience(args.db, args.devices, workdir, args.apns_every, not args.no_analyze,
                              args.webpush_every)
    runs = []
    try:
        with LoopbackHosts() if args.peer else contextlib.nullcontext():
            for label, run_one, run_args, run in plan(args):
                r = run_one(run_args, url, run)
                runs.append((label, r))
                print(json.dumps({"run": label, **{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}}),
                      flush=True)
    finally:
        drop()
        shutil.rmtree(workdir, ignore_errors=True)
    medians = report(runs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": [{"run": label, **r} for label, r in runs], "median": medians}, f, indent=2)

if __name__ == "__main__":
    sys.exit(main())

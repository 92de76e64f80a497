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

Needs: cargo, PostgreSQL on 127.0.0.1:5432 (role postgres, trust) for --db postgres, MariaDB on
127.0.0.1:3306 (root, no password) for --db mariadb, sqlite3 for --db sqlite, Redis on
127.0.0.1:6379, and h2load (Debian: nghttp2-client). Prints one line per run and the medians;
--json writes them to a file. bench/audience.py runs the audience-read cases across databases.
"""
import argparse
import json
import os
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def stats(plain_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{plain_port}/stats", timeout=5) as r:
        return json.load(r)


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


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


TABLES = ("users", "programs", "talks", "clips", "devices")
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
          SELECT i, 2, {provider}, 'android', 'bench-token-' || lpad(i::text, 9, '0') || repeat('x', 140)
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
          SELECT i, 2, {provider}, 'android', CONCAT('bench-token-', LPAD(i, 9, '0'), REPEAT('x', 140)) FROM n;
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
          SELECT i, 2, {provider}, 'android', 'bench-token-' || substr('000000000' || i, -9, 9) || printf('%.140c', 'x') FROM n;""")
    return url, lambda: None


FCM_BODY = {"message": {"token": "h2load-token", "notification": {"title": "New talk on Big show", "body": "Everyone listens"},
            "data": {"type": "talk_posted", "talk_id": "1", "program_id": "1", "url": "notifier-demo://talks/1"},
            "android": {"priority": "high", "ttl": "86400s", "collapse_key": "bench", "notification": {"tag": "bench"}}}}
APNS_BODY = {"aps": {"alert": {"title": "New talk on Big show", "body": "Everyone listens"}, "sound": "default",
                     "thread-id": "program-1"},
             "program_id": "1", "talk_id": "1", "type": "talk_posted", "url": "notifier-demo://talks/1"}


def ceiling(tls_port, body_path, requests, connections, streams, apns=False):
    """The raw HTTP/2 rate of this machine against the stand-in: h2load, same request (FCM's, or
    with apns APNs' path, headers and payload)."""
    if apns:
        headers = ["authorization: bearer h2load", "apns-topic: com.example.notifier", "apns-push-type: alert",
                   "apns-priority: 10", f"apns-expiration: {int(time.time()) + 86400}", "apns-collapse-id: bench",
                   "content-type: application/json"]
        path = "/3/device/h2load-token"
    else:
        headers = ["authorization: Bearer h2load", "content-type: application/json"]
        path = "/v1/projects/stand-in-project/messages:send"
    out = subprocess.run(
        ["h2load", "-n", str(requests), "-c", str(connections), "-m", str(streams),
         *[arg for h in headers for arg in ("-H", h)], "-d", body_path, f"https://127.0.0.1:{tls_port}{path}"],
        capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("finished in"):
            return float(line.split(",")[1].split()[0])  # "finished in 1.2s, 83000.00 req/s, …"
    raise RuntimeError(out)


def ceilings(args, tmp, tls_port):
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
        rate = ceiling(tls_port, path, args.ceiling_requests, 4, args.max_streams, apns=apns)
        out[f"{name}_ceiling_per_s"] = rate
        time_per_push += share / rate
    out["ceiling_per_s"] = 1 / time_per_push
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


def one_run(args, url, run):
    tmp = tempfile.mkdtemp(prefix="notifier-bench-")
    tls_port, plain_port, http_port = free_port(), free_port(), free_port()
    stand_in = subprocess.Popen(
        [os.path.join(BIN, "notifier-stand-in"), "--tls-addr", f"127.0.0.1:{tls_port}",
         "--plain-addr", f"127.0.0.1:{plain_port}", "--dir", tmp, "--latency-ms", str(args.latency_ms),
         "--max-streams", str(args.max_streams), "--accept-any-token"],
        # Runtime experiments are for the notifier: the stand-in (and so the ceiling) stays as is.
        env={k: v for k, v in os.environ.items() if not k.startswith(("TOKIO_", "MIMALLOC_"))},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    notifier = None
    try:
        wait_for_stand_in(plain_port)
        if args.webpush_every > 0:
            set_web_tokens(args, url, plain_port)
        channel = f"bench_{os.getpid()}_{run}"
        with open(os.path.join(tmp, "notifier.toml"), "w") as f:
            f.write(f'[claims]\nkey_prefix = "bench:{os.getpid()}:{run}:"\n'
                    f"[database]\npage_size = {args.page_size}\n"
                    f"[fcm]\nconcurrency = {args.concurrency}\n"
                    f"[apns]\nconcurrency = {args.concurrency}\n")
            if args.webpush_every > 0:
                f.write(f'[webpush]\nallowed_hosts = ["localhost"]\nconcurrency = {args.concurrency}\n')
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
        log = open(os.path.join(tmp, "notifier.log"), "w")
        notifier = subprocess.Popen([os.path.join(BIN, "notifier"), "run"], env=env, stdout=log, stderr=log)
        for _ in range(200):
            if sh("redis-cli", "PUBSUB", "NUMSUB", channel).split()[-1] == "1":
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the notifier did not subscribe; see {log.name}")
        reset(plain_port)
        cpu_before = cpu_seconds(notifier.pid)
        published_ms = publish(channel, json.dumps({"talk_id": 1, "event_id": f"bench-{run}"}))
        deadline = time.time() + args.timeout
        while True:
            s = stats(plain_port)
            if s["delivered"] >= args.devices:
                break
            if time.time() > deadline or notifier.poll() is not None:
                raise RuntimeError(f"only {s['delivered']} of {args.devices} delivered; see {log.name}")
            time.sleep(0.02)
        # The event's own work ends with its summary line, after the last push.
        for _ in range(500):
            with open(log.name) as f:
                if '"Event processed."' in f.read():
                    break
            time.sleep(0.01)
        cpu = cpu_seconds(notifier.pid) - cpu_before
        first = s["first_delivered_ms"] - published_ms
        last = s["last_delivered_ms"] - published_ms
        result = {
            "devices": args.devices, "apns_every": args.apns_every, "webpush_every": args.webpush_every,
            "latency_ms": args.latency_ms, "concurrency": args.concurrency,
            # End to end: publish to last push. Steady: first to last push (as h2load measures).
            "pushes_per_s": args.devices / (last / 1000),
            "steady_per_s": (args.devices - 1) / max((last - first) / 1000, 0.001),
            "first_push_ms": first, "last_push_ms": last,
            "peak_rss_mib": peak_rss_mib(notifier.pid), "cpu_s_per_10k": cpu / args.devices * 10_000,
            "tls_connections": s["connections"]["tls"], "duplicates": s["duplicates"],
        }
        if args.webpush_every > 0:
            result["webpush_decrypted"] = s["webpush"]["decrypted"]
            if s["webpush"]["decrypt_failures"]:
                raise RuntimeError(f"{s['webpush']['decrypt_failures']} Web Push bodies did not decrypt")
        # With latency, h2load's fixed connections and streams would measure the latency, not the
        # machine: the ceiling is taken at zero latency only.
        if not args.no_ceiling and args.latency_ms == 0 and args.webpush_every == 0:
            result.update(ceilings(args, tmp, tls_port))
            result["of_ceiling"] = result["pushes_per_s"] / result["ceiling_per_s"]
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
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--max-streams", type=int, default=100, help="the stand-in's SETTINGS_MAX_CONCURRENT_STREAMS")
    p.add_argument("--db", choices=["postgres", "mariadb", "sqlite"], default="postgres")
    p.add_argument("--no-analyze", action="store_true",
                   help="no planner statistics, as right after a bulk load (postgres, mariadb)")
    p.add_argument("--query", choices=["default", "expr"], default="default",
                   help="expr: the audience query ordered by an expression no index gives")
    p.add_argument("--bin-dir", help="run the binaries in this directory (say, an older build); implies --no-build")
    p.add_argument("--apns-every", type=int, default=0, help="every K-th device goes through APNs (0: none)")
    p.add_argument("--webpush-every", type=int, default=0,
                   help="every N-th device is a browser, through Web Push (0: none); before --apns-every")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--no-ceiling", action="store_true", help="skip h2load")
    p.add_argument("--ceiling-requests", type=int, default=200_000)
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--json", help="write the runs and medians here")
    p.add_argument("--rust-log", default="warn,notifier::worker=info", help="the notifier's RUST_LOG")
    p.add_argument("--keep-logs", metavar="DIR", help="copy each run's notifier log here")
    args = p.parse_args()
    use_bin_dir(args)

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "notifier", "-p", "notifier-stand-in"],
                       cwd=ROOT, check=True)
    print(f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB", flush=True)
    workdir = tempfile.mkdtemp(prefix="notifier-bench-db-")
    url, drop = make_audience(args.db, args.devices, workdir, args.apns_every, not args.no_analyze,
                              args.webpush_every)
    runs = []
    try:
        for run in range(args.runs):
            r = one_run(args, url, run)
            runs.append(r)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    finally:
        drop()
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))}
    print("median:", json.dumps({k: round(v, 3) for k, v in medians.items()}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "median": medians}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())

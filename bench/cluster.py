"""The processes the benchmarks and the fault campaign run on loopback, shared by bench/replicas.py,
bench/api_push.py and bench/chaos.py: the stand-in (and its run-time controls), a redis-server of
the script's own to kill and restart, and the environment a `notifier run` replica gets.

The binaries are those of `fanout.BIN` (target/release, or --bin-dir through fanout.use_bin_dir),
read when a process starts. bench/fanout.py keeps its own copies for now.
"""
import json
import os
import signal
import subprocess
import time
import urllib.request

import fanout
from fanout import free_port, sh, wait_for_stand_in


def start_stand_in(tmp, latency_ms, *extra, pin=()):
    """The stand-in over TLS (`tls`) and plain HTTP (`plain`), writing its CA, service account and
    APNs key into `tmp`, taking any bearer token; returns (process, tls port, plain port)."""
    tls, plain = free_port(), free_port()
    process = subprocess.Popen(
        [*pin, os.path.join(fanout.BIN, "notifier-stand-in"), "--tls-addr", f"127.0.0.1:{tls}",
         "--plain-addr", f"127.0.0.1:{plain}", "--dir", tmp, "--latency-ms", str(latency_ms),
         "--accept-any-token", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_stand_in(plain)
    except BaseException:
        process.kill()
        raise
    return process, tls, plain


def control(plain_port, path):
    """POSTs one of the stand-in's controls (`/outage?on=true`, `/latency?ms=1000`, …)."""
    req = urllib.request.Request(f"http://127.0.0.1:{plain_port}{path}", method="POST")
    urllib.request.urlopen(req, timeout=5).close()


def token_counts(plain_port):
    """How often each token reached the stand-in since its last reset (`--count-tokens`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{plain_port}/stats/tokens", timeout=30) as r:
        return json.load(r)


def notifier_env(tmp, tls_port, *, database_url, redis_url, channel, config, concurrency, rust_log,
                 apns=False):
    """What a `notifier run` replica sending live to the stand-in at `tls_port` gets (with `apns`,
    APNs through the stand-in too). Callers add the listeners, HOSTNAME and their own settings."""
    env = {
        "PATH": os.environ["PATH"], "APP_ENV": "production", "DATABASE_URL": database_url,
        "REDIS_URL": redis_url, "NOTIFIER_CHANNEL": channel, "NOTIFIER_CONFIG": config,
        "NOTIFIER_CONCURRENCY": str(concurrency),
        "FCM_ENDPOINT": f"https://localhost:{tls_port}",
        "NOTIFIER_EXTRA_CA_FILE": os.path.join(tmp, "ca.pem"),
        "GOOGLE_APPLICATION_CREDENTIALS": os.path.join(tmp, "service-account.json"),
        "LOG_FORMAT": "json", "RUST_LOG": rust_log,
    }
    if apns:
        env.update({
            "APNS_ENDPOINT": f"https://localhost:{tls_port}", "APNS_KEY_PATH": os.path.join(tmp, "apns-key.p8"),
            "APNS_KEY_ID": "STANDIN123", "APNS_TEAM_ID": "TEAM123456", "APNS_TOPIC": "com.example.notifier",
        })
    return env


class OwnRedis:
    """A redis-server of the script's own on a free port, its files in `directory`: with `aof`,
    every write is appended before it is answered, so a kill -9 and a start on the same port and
    directory lose nothing acknowledged."""

    def __init__(self, directory, aof=True):
        self.port, self.directory = free_port(), directory
        self.args = ["--appendonly", "yes" if aof else "no"]
        self.process = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--dir", self.directory, *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if subprocess.run(["redis-cli", "-p", str(self.port), "PING"], capture_output=True,
                              text=True).stdout.strip() == "PONG":
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING (is it installed?)")

    def cli(self, *args):
        return sh("redis-cli", "-p", str(self.port), *args)

    def kill(self):
        """kill -9, as a crashed or OOM-killed server."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def close(self):
        self.kill()

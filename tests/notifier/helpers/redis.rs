//! Redis for tests: connections, publishing, waiting for a subscriber, and a redis-server of
//! the test's own (plain or TLS) to kill and restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::address;

pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis at {} is needed by this test and did not answer: {e} \
                 (scripts/test starts it, or set TEST_REDIS_URL to one that runs)",
                address(url)
            )
        })
}

pub async fn publish(url: &str, channel: &str, message: impl AsRef<[u8]>) -> i64 {
    let mut conn = redis_connection(url).await;
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message.as_ref())
        .query_async(&mut conn)
        .await
        .expect("PUBLISH")
}

/// Waits until someone is subscribed to `channel`, so a publish is not lost.
pub async fn wait_for_subscriber(url: &str, channel: &str) {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    wait_for_subscriber_with(&client, channel).await;
}

/// [`wait_for_subscriber`] through a client of the caller's (TLS, a password).
pub async fn wait_for_subscriber_with(client: &redis::Client, channel: &str) {
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis is needed by this test and did not answer: {e}"));
    for _ in 0..300 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        if n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nobody subscribed to {channel} within 15 s");
}

/// A redis-server of the test's own, on a free port, for killing and restarting.
pub struct OwnRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    options: OwnRedisOptions,
    /// What the readiness PING goes through.
    client: redis::Client,
}

/// How a test's own redis-server differs from a plain one.
#[derive(Debug, Clone, Default)]
pub struct OwnRedisOptions {
    /// Serve TLS only, on the port, with these PEM files.
    pub tls: Option<ServerTls>,
    /// More arguments: `--requirepass`, `--user`, `--tls-auth-clients`…
    pub args: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that client certificates must come from.
    pub ca: PathBuf,
    /// Whether clients must show a certificate (`--tls-auth-clients`; Redis's default is yes).
    pub client_certificates: bool,
}

impl OwnRedis {
    pub async fn start() -> Self {
        Self::start_with(OwnRedisOptions::default(), |port| {
            redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url")
        })
        .await
    }

    /// A server started with `options`; `client` makes, for its port, the client whose PING says
    /// it is up (with the CA, the password or the client certificate it needs).
    pub async fn start_with(
        options: OwnRedisOptions,
        client: impl FnOnce(u16) -> redis::Client,
    ) -> Self {
        let port = super::free_port();
        let dir = tempfile::tempdir().expect("a temp dir");
        let child = spawn_redis(port, dir.path(), &options);
        let server = Self {
            port,
            dir,
            child,
            options,
            client: client(port),
        };
        server.wait_ready().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (it stays down until `restart`).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts a new one on the same port.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis(self.port, self.dir.path(), &self.options);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let mut last = None;
        for _ in 0..100 {
            let ping = async {
                let mut c = self.client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut c).await
            };
            match ping.await {
                Ok(_) => return,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the test's own redis-server on port {} did not answer PING: {last:?}",
            self.port
        );
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_redis(port: u16, dir: &Path, options: &OwnRedisOptions) -> Child {
    let mut command = Command::new("redis-server");
    command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    match &options.tls {
        None => command.args(["--port", &port.to_string()]),
        Some(tls) => command
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&tls.cert)
            .arg("--tls-key-file")
            .arg(&tls.key)
            .arg("--tls-ca-cert-file")
            .arg(&tls.ca)
            .arg("--tls-auth-clients")
            .arg(if tls.client_certificates { "yes" } else { "no" }),
    };
    command
        .args(&options.args)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (Debian package redis-server)")
}

//! Shared test fixtures: a fresh database per test on each backend, a Redis channel per test, a
//! redis-server the test owns (for killing and restarting), and a pusher that records.
//!
//! Every service is real. When one does not answer, the test fails and names it.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use notifier::app::{Application, Overrides};
use notifier::config::{InputMode, Settings};
use notifier::database::{Backend, Database};
use notifier::push::Pushers;
use notifier::push::{Push, PushOutcome, Pusher};
use notifier::worker::{EventOutcome, Worker};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

// Where the shared services are unless TEST_POSTGRES_URL, TEST_MYSQL_URL or TEST_REDIS_URL say
// otherwise; scripts/test has the same defaults, and compose's `test` profile publishes there.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The shared PostgreSQL's admin database.
pub fn postgres_admin_url() -> String {
    env_or("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
}

/// The shared MariaDB.
pub fn mysql_admin_url() -> String {
    env_or("TEST_MYSQL_URL", DEFAULT_MYSQL_URL)
}

/// The shared Redis.
pub fn redis_url() -> String {
    env_or("TEST_REDIS_URL", DEFAULT_REDIS_URL)
}

// An empty variable counts as unset, as in scripts/test (`${TEST_REDIS_URL:-...}`).
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `host:port` of a URL, for failure messages: the address says which server was meant, and a
/// password in the URL stays out of the output.
pub fn address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// The same server and credentials as `url`, on database `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    // Logs only when asked for: TEST_LOG=1 cargo test.
    if std::env::var_os("TEST_LOG").is_some() {
        notifier::telemetry::init(notifier::config::LogFormat::Pretty);
    }
});

/// Once per test process: logs when asked for, and the TLS crypto provider that reqwest and the
/// stand-in need (tests must not rely on another test having installed it first).
pub fn init_tracing() {
    LazyLock::force(&TRACING);
    notifier::install_crypto_provider();
}

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}_{:04x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u16(..)
    )
}

pub fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/notifier.toml")
}

/// Settings as the process would load them, with these variables as its environment.
pub fn settings_with(vars: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.entry("NOTIFIER_CONFIG".into())
        .or_insert_with(|| config_path().display().to_string());
    vars.entry("REDIS_URL".into()).or_insert_with(redis_url);
    Settings::load(|name| vars.get(name).cloned()).expect("test settings load")
}

/// A database of its own for one test, migrated; dropped when the value is.
pub struct TestDb {
    pub url: String,
    pub db: Database,
    name: String,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let test_db = Self::empty(backend).await;
        test_db
            .db
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrating the {} test database: {e}", backend.name()));
        test_db
    }

    /// A fresh database without the reference schema (for tests with tables of their own).
    pub async fn empty(backend: Backend) -> Self {
        init_tracing();
        let name = unique("notifier_t");
        let (url, dir) = match backend {
            Backend::Postgres => {
                let admin = postgres_admin_url();
                admin_execute(&admin, &format!("CREATE DATABASE {name}")).await;
                (with_database(&admin, &name), None)
            }
            Backend::MySql => {
                let admin = mysql_admin_url();
                let sql = format!("CREATE DATABASE {name} CHARACTER SET utf8mb4");
                admin_execute(&admin, &sql).await;
                (with_database(&admin, &name), None)
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                (url, Some(dir))
            }
        };
        let settings = settings_with(&[("DATABASE_URL", &url)]);
        let db = Database::connect(&settings.database)
            .await
            .unwrap_or_else(|e| panic!("connecting to the {} test database: {e}", backend.name()));
        Self {
            url,
            db,
            name,
            backend,
            _dir: dir,
        }
    }

    /// Runs statements that all backends accept.
    pub async fn execute(&self, statements: &[&str]) {
        for statement in statements {
            let s = sqlx::AssertSqlSafe(statement.to_string());
            let result = match &self.db {
                Database::Postgres(p) => sqlx::query(s).execute(p).await.map(drop),
                Database::MySql(p) => sqlx::query(s).execute(p).await.map(drop),
                Database::Sqlite(p) => sqlx::query(s).execute(p).await.map(drop),
            };
            result.unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }
}

impl TestDb {
    /// Runs a query that returns one number on the server's admin database.
    pub async fn scalar_on_admin(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL admin connection to {}: {e}", address(&admin)));
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Kills every MariaDB connection to database `name` but this one; returns how many.
    pub async fn kill_mysql_connections(&self, name: &str) -> usize {
        use sqlx::Connection;
        let admin = mysql_admin_url();
        let mut conn = sqlx::MySqlConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("MariaDB admin connection to {}: {e}", address(&admin)));
        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM information_schema.processlist WHERE db = '{name}' AND id <> CONNECTION_ID()"
        )))
        .fetch_all(&mut conn)
        .await
        .expect("processlist");
        for id in &ids {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL {id}")))
                .execute(&mut conn)
                .await;
        }
        ids.len()
    }

    /// Devices disabled, as `id:reason`, in id order.
    pub async fn disabled(&self) -> Vec<String> {
        let sql =
            "SELECT id, disabled_reason FROM devices WHERE disabled_at IS NOT NULL ORDER BY id";
        let rows: Vec<(i64, Option<String>)> = match &self.db {
            Database::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
            Database::MySql(p) => sqlx::query_as(sql).fetch_all(p).await,
            Database::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|(id, reason)| format!("{id}:{}", reason.unwrap_or_default()))
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop is synchronous and may run on the test's runtime, which must not be blocked on:
        // a thread with a runtime of its own drops the database through the same admin URL it
        // was made with (a password in it included, which a client's command line would not get).
        let (admin, sql) = match self.backend {
            Backend::Postgres => (
                postgres_admin_url(),
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ),
            Backend::MySql => (
                mysql_admin_url(),
                format!("DROP DATABASE IF EXISTS {}", self.name),
            ),
            Backend::Sqlite => return,
        };
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = runtime.block_on(try_admin_execute(&admin, &sql));
            }
        })
        .join();
    }
}

async fn try_admin_execute(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let s = sqlx::AssertSqlSafe(sql.to_string());
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::query(s).execute(&mut c).await.map(drop)
    } else {
        let mut c = sqlx::MySqlConnection::connect(url).await?;
        sqlx::query(s).execute(&mut c).await.map(drop)
    }
}

async fn admin_execute(url: &str, sql: &str) {
    if let Err(e) = try_admin_execute(url, sql).await {
        let (service, variable) = if url.starts_with("postgres") {
            ("PostgreSQL", "TEST_POSTGRES_URL")
        } else {
            ("MariaDB", "TEST_MYSQL_URL")
        };
        panic!(
            "{service} at {} is needed by this test and did not work ({sql}): {e} \
             (scripts/test starts it, or set {variable} to one that runs)",
            address(url)
        );
    }
}

/// The scenario most tests use. Talk 100 of program 10 (by user 1) must reach devices
/// 2, 3, 4, 6 and 8: device 1 is the author's, 5 is disabled, 7's user clipped only program 11.
pub const SCENARIO: &[&str] = &[
    "INSERT INTO users (id, name, locale) VALUES (1, 'author', 'en'), (2, 'ben', 'en'), (3, 'chie', 'ja'), (4, 'dan', NULL), (5, 'emi', 'en'), (6, 'fumi', 'ja-JP')",
    "INSERT INTO programs (id, user_id, title) VALUES (10, 1, '深夜ラジオ'), (11, 2, 'Other show')",
    "INSERT INTO talks (id, program_id, user_id, title) VALUES (100, 10, 1, '第1回 Hello'), (101, 11, 2, 'Other talk')",
    "INSERT INTO clips (user_id, program_id) VALUES (1, 10), (2, 10), (3, 10), (4, 10), (5, 11), (6, 10), (6, 11)",
    "INSERT INTO devices (id, user_id, provider, platform, token) VALUES
        (1, 1, 'fcm', 'android', 'token-author-000001'),
        (2, 2, 'fcm', 'android', 'token-ben-android-02'),
        (3, 2, 'apns', 'ios', 'token-ben-iphone-0003'),
        (4, 3, 'apns', 'ios', 'token-chie-iphone-004'),
        (6, 4, 'fcm', 'web', 'token-dan-browser-006'),
        (7, 5, 'fcm', 'android', 'token-emi-android-007'),
        (8, 6, 'apns', 'ios', 'token-fumi-iphone-008')",
    "INSERT INTO devices (id, user_id, provider, platform, token, disabled_at, disabled_reason) VALUES
        (5, 3, 'fcm', 'android', 'token-chie-disabled-5', CURRENT_TIMESTAMP, 'fcm:UNREGISTERED')",
];

pub const SCENARIO_RECIPIENTS: &[i64] = &[2, 3, 4, 6, 8];

/// What a recording pusher saw of one push.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub event_id: String,
    pub device_id: i64,
    pub provider: String,
    pub token: String,
    pub title: String,
    pub body: String,
    pub data: Vec<(String, String)>,
    pub started_at: std::time::Instant,
}

/// A pusher that records every push, optionally takes its time, and measures concurrency.
#[derive(Default)]
pub struct RecordingPusher {
    pub pushes: Mutex<Vec<Recorded>>,
    pub delay: Duration,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// In flight per provider (FCM, APNs), and the most seen at once.
    by_provider: [AtomicUsize; 2],
    pub max_by_provider: [AtomicUsize; 2],
    /// Counts instead of recording, for audiences too large to keep.
    pub count_only: bool,
    pub count: AtomicUsize,
}

impl RecordingPusher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn counting() -> Arc<Self> {
        Arc::new(Self {
            count_only: true,
            ..Self::default()
        })
    }

    pub fn slow(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Self::default()
        })
    }

    pub fn taken(&self) -> Vec<Recorded> {
        let mut v = self.pushes.lock().unwrap().clone();
        v.sort_by_key(|r| (r.event_id.clone(), r.device_id));
        v
    }

    pub fn device_ids(&self) -> Vec<i64> {
        self.taken().iter().map(|r| r.device_id).collect()
    }
}

#[async_trait::async_trait]
impl Pusher for RecordingPusher {
    async fn push(&self, push: &Push) -> PushOutcome {
        let started_at = std::time::Instant::now();
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let lane = usize::from(push.device.provider == Some(notifier::audience::Provider::Apns));
        let mine = self.by_provider[lane].fetch_add(1, Ordering::SeqCst) + 1;
        self.max_by_provider[lane].fetch_max(mine, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.count_only {
            self.count.fetch_add(1, Ordering::Relaxed);
        } else {
            self.pushes.lock().unwrap().push(Recorded {
                event_id: push.event_id.to_string(),
                device_id: push.device.id,
                provider: push
                    .device
                    .provider
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
                token: push.device.token.clone(),
                title: push.notification.title.clone(),
                body: push.notification.body.clone(),
                data: push.notification.data.clone(),
                started_at,
            });
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.by_provider[lane].fetch_sub(1, Ordering::SeqCst);
        PushOutcome::Delivered
    }
}

/// A database with [`SCENARIO`] in it.
pub async fn scenario_db(backend: Backend) -> TestDb {
    let test_db = TestDb::new(backend).await;
    test_db.execute(SCENARIO).await;
    test_db
}

/// Devices 1..=n of user 2 on SQLite: odd ids through FCM, even ids through APNs.
pub async fn sqlite_devices(test_db: &TestDb, n: u32) {
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
         INSERT INTO devices (id, user_id, provider, platform, token)
         SELECT i, 2, CASE WHEN i % 2 = 0 THEN 'apns' ELSE 'fcm' END, 'android', 'token-' || i FROM n"
    );
    test_db.execute(&[&sql]).await;
}

/// A worker (not subscribed) whose dry-run pushes go to the returned recorder.
pub fn recording_worker(
    settings: Settings,
    test_db: &TestDb,
    recorder: &Arc<RecordingPusher>,
) -> Worker {
    Worker::new(settings, test_db.db.clone(), dry_run_pushers(recorder)).expect("worker settings")
}

pub fn dry_run_pushers(recorder: &Arc<RecordingPusher>) -> Pushers {
    Pushers::dry_run(Arc::clone(recorder) as Arc<dyn Pusher>)
}

/// A worker running in the background, as `notifier run` runs it.
pub struct RunningWorker {
    pub worker: Arc<Worker>,
    pub outcomes: broadcast::Receiver<EventOutcome>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    /// Starts a worker as `notifier run` does, claims and status listener included (under a key
    /// prefix of its own, unless the settings already name one shared with other workers).
    pub async fn start(mut settings: Settings, db: Database, pushers: Pushers) -> Self {
        if settings.claims.key_prefix == "notifier:" {
            settings.claims.key_prefix = format!("{}:", unique("claims"));
        }
        // Tests run side by side: each worker's status listener on a port of its own.
        settings.service.http_addr = "127.0.0.1:0".parse().expect("an address");
        let redis = settings.redis.url.clone();
        let overrides = Overrides {
            database: Some(db),
            pushers: Some(pushers),
            ..Overrides::default()
        };
        let app = Application::build(settings, overrides)
            .await
            .unwrap_or_else(|e| panic!("the worker starts (Redis at {redis}): {e:#}"));
        let worker = Arc::clone(app.worker());
        let outcomes = worker.outcomes();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(stop.clone()));
        let running = Self {
            worker,
            outcomes,
            stop,
            handle,
        };
        let s = running.worker.settings();
        match s.input.mode {
            InputMode::Pubsub => {
                let client = notifier::redis_client::open(&s.redis).expect("Redis settings");
                wait_for_subscriber_with(&client, &s.service.channel).await;
            }
            InputMode::Stream => running.wait_until_reading().await,
        }
        running
    }

    async fn wait_until_reading(&self) {
        for _ in 0..300 {
            match self.worker.not_ready().await {
                None => return,
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let why = self.worker.not_ready().await.unwrap_or_default();
        panic!("the worker is not reading its stream within 15 s: {why}");
    }

    /// The next event outcome, or a panic if none comes in time.
    pub async fn next_outcome(&mut self) -> EventOutcome {
        tokio::time::timeout(Duration::from_secs(30), self.outcomes.recv())
            .await
            .expect("an event outcome within 30 s")
            .expect("the outcome channel is open")
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the worker stops within 30 s")
            .expect("the worker task does not panic")
            .expect("the worker stops without error");
    }
}

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
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
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

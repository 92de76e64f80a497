//! Never twice, never lost: real `notifier` processes (one to three replicas), a redis-server the
//! test owns, a real database and the FCM stand-in, put through crashes, duplicates, restarts and
//! outages. The stand-in counts every message by token and collapse key, so "each device once"
//! and "no more duplicates than pushes in flight" are read off its counters.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use notifier::Backend;
use stand_in::{StandIn, StandInConfig};
use tokio::process::{Child, Command};

use crate::helpers::*;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_notifier");
/// NOTIFIER_CONCURRENCY in these tests: the bound on pushes repeated after a crash.
pub(crate) const CONCURRENCY: u64 = 100;
/// What a crash mid-event may repeat: the pushes in flight then (at most CONCURRENCY) and those
/// finished since the last checkpoint (written every CONCURRENCY / 5 finished pushes).
pub(crate) const CRASH_REPEATS: u64 = CONCURRENCY + CONCURRENCY / 5;

/// Everything a fault test runs against (the replica tests too).
pub(crate) struct Cluster {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) redis: OwnRedis,
    pub(crate) db: TestDb,
    pub(crate) stand_in: StandIn,
    pub(crate) channel: String,
    pub(crate) devices: u64,
    pub(crate) replicas: Vec<Replica>,
}

pub(crate) struct Replica {
    pub(crate) child: Child,
    log: PathBuf,
}

impl Cluster {
    /// `devices` FCM devices of one listener, a talk 1 they all get, the stand-in answering after
    /// `latency_ms`.
    pub(crate) async fn new(
        backend: Backend,
        devices: u64,
        latency_ms: u64,
        extra_config: &str,
    ) -> Self {
        let stand_in = StandInConfig {
            latency: Duration::from_millis(latency_ms),
            ..Default::default()
        };
        Self::with_stand_in(backend, devices, stand_in, extra_config).await
    }

    /// The same, with the stand-in configured as given (a quota, say).
    pub(crate) async fn with_stand_in(
        backend: Backend,
        devices: u64,
        stand_in: StandInConfig,
        extra_config: &str,
    ) -> Self {
        Self::with_lease(
            backend,
            devices,
            stand_in,
            extra_config,
            2,
            OwnRedis::start().await,
        )
        .await
    }

    /// The same, with a lease of `lease_secs` and the given Redis (one keeping an AOF, say).
    pub(crate) async fn with_lease(
        backend: Backend,
        devices: u64,
        stand_in: StandInConfig,
        extra_config: &str,
        lease_secs: u64,
        redis: OwnRedis,
    ) -> Self {
        let db = TestDb::new(backend).await;
        db.execute(&[
            "INSERT INTO users (id, name, locale) VALUES (1, 'author', 'en'), (2, 'listener', 'en')",
            "INSERT INTO programs (id, user_id, title) VALUES (1, 1, 'Big show')",
            "INSERT INTO talks (id, program_id, user_id, title) VALUES (1, 1, 1, 'Everyone listens'), (2, 1, 1, 'Again')",
            "INSERT INTO clips (user_id, program_id) VALUES (2, 1)",
        ])
        .await;
        let insert = match backend {
            Backend::Postgres => format!(
                "INSERT INTO devices (id, user_id, provider, platform, token)
                 SELECT i, 2, 'fcm', 'android', 'tok-' || lpad(i::text, 8, '0') FROM generate_series(1, {devices}) AS i"
            ),
            // MariaDB stops recursion at 1000 rows unless told otherwise, for this one statement.
            Backend::MySql => format!(
                "SET STATEMENT max_recursive_iterations = 10000000 FOR
                 INSERT INTO devices (id, user_id, provider, platform, token)
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {devices})
                 SELECT i, 2, 'fcm', 'android', CONCAT('tok-', LPAD(i, 8, '0')) FROM n"
            ),
            Backend::Sqlite => format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {devices})
                 INSERT INTO devices (id, user_id, provider, platform, token)
                 SELECT i, 2, 'fcm', 'android', 'tok-' || substr('00000000' || i, -8, 8) FROM n"
            ),
        };
        db.execute(&[&insert]).await;
        let stand_in = StandIn::start(stand_in).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        stand_in.write_files(dir.path()).unwrap();
        let base = format!(
            "[claims]\nkey_prefix = \"{}:\"\nlease_secs = {lease_secs}\n\n\
             [database]\npage_size = 500\n\n\
             [service]\ndrain_timeout_secs = 3\n\n\
             [retry]\ninitial_backoff_ms = 100\nmax_backoff_ms = 2000\nmax_attempts = 40\npush_deadline_secs = 120\n",
            unique("faults")
        );
        let config = merged(&base, extra_config);
        std::fs::write(dir.path().join("notifier.toml"), config).unwrap();
        Self {
            dir,
            redis,
            db,
            stand_in,
            channel: unique("talk_posted"),
            devices,
            replicas: Vec::new(),
        }
    }

    /// Starts one more replica, as `notifier run` in production.
    pub(crate) async fn start_replica(&mut self, extra: &[(&str, &str)]) -> usize {
        let n = self.replicas.len();
        let log = self.dir.path().join(format!("replica-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let d = self.dir.path();
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NOTIFIER_CONFIG", d.join("notifier.toml"))
            .env("APP_ENV", "production")
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", self.redis.url())
            .env("NOTIFIER_CHANNEL", &self.channel)
            .env("NOTIFIER_CONCURRENCY", CONCURRENCY.to_string())
            .env("LOG_FORMAT", "json")
            .env("NOTIFIER_HTTP_ADDR", "127.0.0.1:0")
            .env("FCM_ENDPOINT", self.stand_in.tls_endpoint())
            .env("NOTIFIER_EXTRA_CA_FILE", d.join("ca.pem"))
            .env(
                "GOOGLE_APPLICATION_CREDENTIALS",
                d.join("service-account.json"),
            )
            .envs(extra.iter().copied())
            .arg("run")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        self.replicas.push(Replica {
            child: cmd.spawn().unwrap(),
            log,
        });
        n
    }

    pub(crate) async fn wait_subscribed(&self, count: i64) {
        let mut conn = redis_connection(&self.redis.url()).await;
        for _ in 0..300 {
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&self.channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            if n >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{count} replicas did not subscribe in time:\n{}",
            self.logs()
        );
    }

    pub(crate) async fn publish(&self, event: &str) {
        publish(&self.redis.url(), &self.channel, event).await;
    }

    pub(crate) fn delivered(&self) -> u64 {
        self.stand_in.counters.snapshot()["delivered"]
            .as_u64()
            .unwrap()
    }

    pub(crate) fn unique(&self) -> u64 {
        self.stand_in.counters.snapshot()["unique_delivered"]
            .as_u64()
            .unwrap()
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.stand_in.counters.snapshot()["duplicates"]
            .as_u64()
            .unwrap()
    }

    /// Waits until the stand-in has delivered at least `n` messages.
    pub(crate) async fn wait_delivered(&self, n: u64, within: Duration) {
        let started = std::time::Instant::now();
        while self.delivered() < n {
            if started.elapsed() > within {
                panic!(
                    "{} of {n} delivered after {within:?}:\n{}",
                    self.delivered(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every device has the event `event_id`, and checks each has it once more at
    /// most than `allowed_duplicates` allows overall.
    pub(crate) async fn assert_everyone_got(
        &self,
        event_id: &str,
        events: u64,
        allowed_duplicates: u64,
        within: Duration,
    ) {
        let started = std::time::Instant::now();
        while self.unique() < self.devices * events {
            if started.elapsed() > within {
                panic!(
                    "{} of {} unique deliveries after {within:?}:\n{}",
                    self.unique(),
                    self.devices * events,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Nothing more trickles in afterwards.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in [1, self.devices / 2, self.devices] {
            let token = format!("tok-{i:08}");
            assert!(
                self.stand_in.counters.deliveries(&token, event_id) >= 1,
                "{token} never got {event_id}"
            );
        }
        assert_eq!(self.unique(), self.devices * events, "lost none");
        assert!(
            self.duplicates() <= allowed_duplicates,
            "{} duplicates, at most {allowed_duplicates} allowed:\n{}",
            self.duplicates(),
            self.logs()
        );
    }

    pub(crate) fn kill(&mut self, n: usize) {
        let _ = self.replicas[n].child.start_kill();
    }

    pub(crate) fn terminate(&self, n: usize) {
        self.signal(n, "-TERM");
    }

    /// Freezes a replica (SIGSTOP): it keeps its connections and its state, and does nothing.
    pub(crate) fn freeze(&self, n: usize) {
        self.signal(n, "-STOP");
    }

    pub(crate) fn thaw(&self, n: usize) {
        self.signal(n, "-CONT");
    }

    fn signal(&self, n: usize, signal: &str) {
        let pid = self.replicas[n].child.id().expect("running");
        std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
    }

    pub(crate) fn log(&self, n: usize) -> String {
        std::fs::read_to_string(&self.replicas[n].log).unwrap_or_default()
    }

    /// Whether any replica logged `text`, anywhere in its log: [`Cluster::logs`] shows only
    /// the last lines, which a slow run's progress lines push an early line out of.
    pub(crate) fn logged(&self, text: &str) -> bool {
        (0..self.replicas.len()).any(|n| self.log(n).contains(text))
    }

    /// Each replica's last 30 lines (all of them with `TEST_FULL_LOGS` set).
    pub(crate) fn logs(&self) -> String {
        let lines = match std::env::var_os("TEST_FULL_LOGS") {
            Some(_) => usize::MAX,
            None => 30,
        };
        (0..self.replicas.len())
            .map(|n| format!("--- replica {n}\n{}", tail(&self.log(n), lines)))
            .collect()
    }

    /// How many replicas logged a finished `event_id`.
    pub(crate) fn processed_by(&self, event_id: &str) -> usize {
        (0..self.replicas.len())
            .filter(|n| {
                self.log(*n).lines().any(|l| {
                    l.contains("\"Event processed.\"")
                        && l.contains(&format!("\"event_id\":\"{event_id}\""))
                })
            })
            .count()
    }

    /// The replica (by index) whose process owns `event_id`'s claim.
    pub(crate) async fn owner_of(&self, event_id: &str) -> Option<usize> {
        let mut conn = redis_connection(&self.redis.url()).await;
        let prefix = std::fs::read_to_string(self.dir.path().join("notifier.toml")).unwrap();
        let prefix = prefix
            .lines()
            .find_map(|l| l.strip_prefix("key_prefix = \""))
            .unwrap()
            .trim_end_matches('"');
        // The claim sits under the deployment's part of the prefix ({channel:…} or {stream:…}).
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}{{*}}:event:{event_id}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let owner: Option<String> = redis::cmd("HGET")
            .arg(keys.first()?)
            .arg("owner")
            .query_async(&mut conn)
            .await
            .unwrap();
        let pid = owner?.split(':').nth(1)?.parse::<u32>().ok()?;
        self.replicas.iter().position(|r| r.child.id() == Some(pid))
    }
}

/// `extra` laid over `base`, table by table, so a test may add keys to a table the cluster writes.
fn merged(base: &str, extra: &str) -> String {
    let mut base: toml::Table = base.parse().unwrap();
    let extra: toml::Table = extra.parse().expect("extra_config is TOML");
    for (name, value) in extra {
        match (base.get_mut(&name), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => into.extend(from),
            (_, value) => {
                base.insert(name, value);
            }
        }
    }
    toml::to_string(&base).unwrap()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

const EVENT: &str = r#"{"talk_id": 1}"#;
const EVENT_ID: &str = "talk_posted:1";

#[tokio::test]
async fn a_worker_killed_mid_fan_out_resumes_after_restart_with_no_device_lost() {
    let mut cluster = Cluster::new(Backend::Postgres, 20_000, 5, "").await;
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(1).await;
    cluster.publish(EVENT).await;

    cluster.wait_delivered(5_000, Duration::from_secs(60)).await;
    cluster.kill(0);
    let delivered_at_kill = cluster.delivered();
    assert!(delivered_at_kill < 20_000, "the fan-out was still running");

    cluster.start_replica(&[]).await;
    cluster
        .assert_everyone_got(EVENT_ID, 1, CRASH_REPEATS, Duration::from_secs(90))
        .await;
    assert!(
        cluster.log(1).contains("\"resumed\":true"),
        "{}",
        cluster.logs()
    );
}

#[tokio::test]
async fn a_duplicate_publish_and_several_replicas_send_each_device_once() {
    let mut cluster = Cluster::new(Backend::Postgres, 2_000, 0, "").await;
    cluster.start_replica(&[]).await;
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(2).await;

    // Published twice while two replicas listen: both see both messages.
    cluster.publish(EVENT).await;
    cluster.publish(EVENT).await;
    cluster
        .assert_everyone_got(EVENT_ID, 1, 0, Duration::from_secs(60))
        .await;
    assert_eq!(
        cluster.processed_by(EVENT_ID),
        1,
        "one replica processed it"
    );

    // A third replica, the same event again, and a new one.
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(3).await;
    cluster.publish(EVENT).await;
    cluster
        .publish(r#"{"talk_id": 2, "event_id": "talk-2-take-1"}"#)
        .await;
    cluster
        .assert_everyone_got("talk-2-take-1", 2, 0, Duration::from_secs(60))
        .await;
    assert_eq!(cluster.processed_by(EVENT_ID), 1);
    assert_eq!(cluster.processed_by("talk-2-take-1"), 1);
    let skipped: usize = (0..3)
        .map(|n| cluster.log(n).matches("Skipped a duplicate event.").count())
        .sum();
    // Every replica receives every publish. First 2 publishes × 2 replicas: one processed, three
    // skipped. Then 2 publishes × 3 replicas: the old event skipped three times, the new one
    // processed once and skipped twice.
    assert_eq!(
        skipped,
        3 + 3 + 2,
        "every other copy of each publish was skipped"
    );
}

#[tokio::test]
async fn when_the_replica_sending_an_event_is_killed_the_other_finishes_it() {
    let mut cluster = Cluster::new(Backend::Postgres, 20_000, 5, "").await;
    cluster.start_replica(&[]).await;
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(2).await;
    cluster.publish(EVENT).await;

    cluster.wait_delivered(4_000, Duration::from_secs(60)).await;
    let owner = cluster
        .owner_of(EVENT_ID)
        .await
        .expect("a replica owns the event");
    cluster.kill(owner);
    let survivor = 1 - owner;

    cluster
        .assert_everyone_got(EVENT_ID, 1, CRASH_REPEATS, Duration::from_secs(90))
        .await;
    assert!(
        cluster
            .log(survivor)
            .contains("Resuming an event another run left unfinished."),
        "{}",
        cluster.logs()
    );
    assert_eq!(cluster.processed_by(EVENT_ID), 1);
}

#[tokio::test]
async fn redis_restarting_mid_event_loses_nothing() {
    let mut cluster = Cluster::new(Backend::Postgres, 10_000, 5, "").await;
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(1).await;
    cluster.publish(EVENT).await;

    cluster.wait_delivered(2_000, Duration::from_secs(60)).await;
    cluster.redis.restart().await;

    cluster
        .assert_everyone_got(EVENT_ID, 1, CRASH_REPEATS, Duration::from_secs(90))
        .await;
    assert_eq!(cluster.processed_by(EVENT_ID), 1);
}

async fn a_dropped_database_connection_mid_event_loses_nothing(backend: Backend) {
    let mut cluster = Cluster::new(backend, 10_000, 5, "").await;
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(1).await;
    cluster.publish(EVENT).await;

    cluster.wait_delivered(2_000, Duration::from_secs(60)).await;
    let name = cluster.db.url.rsplit('/').next().unwrap().to_string();
    match backend {
        Backend::Postgres => {
            let killed = cluster
                .db
                .scalar_on_admin(&format!(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ))
                .await;
            assert!(killed >= 1, "the worker's connections were terminated");
        }
        _ => {
            let killed = cluster.db.kill_mysql_connections(&name).await;
            assert!(killed >= 1, "the worker's connections were killed");
        }
    }

    cluster
        .assert_everyone_got(EVENT_ID, 1, 0, Duration::from_secs(90))
        .await;
    assert_eq!(cluster.processed_by(EVENT_ID), 1);
}

#[tokio::test]
async fn a_dropped_postgres_connection_mid_event_loses_nothing() {
    a_dropped_database_connection_mid_event_loses_nothing(Backend::Postgres).await;
}

#[tokio::test]
async fn a_killed_mariadb_connection_mid_event_loses_nothing() {
    a_dropped_database_connection_mid_event_loses_nothing(Backend::MySql).await;
}

#[tokio::test]
async fn a_30_second_503_storm_is_ridden_out_with_no_loss_and_no_duplicate() {
    let mut cluster = Cluster::new(Backend::Postgres, 2_000, 2, "").await;
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(1).await;
    cluster.publish(EVENT).await;

    cluster.wait_delivered(300, Duration::from_secs(60)).await;
    cluster.stand_in.set_outage(true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = cluster.delivered();
    cluster.stand_in.set_outage(false);

    cluster
        .assert_everyone_got(EVENT_ID, 1, 0, Duration::from_secs(90))
        .await;
    assert!(during < 2_000, "the storm really held the fan-out up");
    let unavailable = cluster.stand_in.counters.snapshot()["errors"]["UNAVAILABLE"]
        .as_u64()
        .unwrap_or(0);
    assert!(unavailable > 0, "the stand-in answered 503s");
}

#[tokio::test]
async fn stream_entries_added_while_no_worker_runs_are_each_processed_once() {
    let mut cluster = Cluster::new(Backend::Postgres, 1_000, 0, "").await;
    let stream = unique("talk_posted_stream");
    let mut conn = redis_connection(&cluster.redis.url()).await;
    // As PHP does it: $redis->xAdd($stream, '*', ['event' => json_encode([...])]), and the bare form.
    for (i, fields) in [
        vec![(
            "event",
            r#"{"talk_id": 1, "event_id": "stream-a"}"#.to_string(),
        )],
        vec![(
            "event",
            r#"{"talk_id": 2, "event_id": "stream-b"}"#.to_string(),
        )],
        vec![
            ("talk_id", "1".to_string()),
            ("event_id", "stream-c".to_string()),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let id: String = redis::AsyncCommands::xadd(&mut conn, &stream, "*", &fields)
            .await
            .unwrap();
        assert!(!id.is_empty(), "entry {i} added");
    }

    let stream_vars = [
        ("NOTIFIER_INPUT", "stream"),
        ("NOTIFIER_STREAM", stream.as_str()),
    ];
    cluster.start_replica(&stream_vars).await;
    cluster.start_replica(&stream_vars).await;
    cluster
        .assert_everyone_got("stream-c", 3, 0, Duration::from_secs(60))
        .await;
    for event in ["stream-a", "stream-b", "stream-c"] {
        assert_eq!(cluster.processed_by(event), 1, "{event}");
    }
    // Every entry acknowledged.
    let mut pending = 1;
    for _ in 0..100 {
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg("notifier")
            .query_async(&mut conn)
            .await
            .unwrap();
        pending = match summary {
            redis::Value::Array(v) => redis::from_redis_value::<i64>(v[0].clone()).unwrap_or(-1),
            _ => -1,
        };
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0, "all entries acknowledged");
}

#[tokio::test]
async fn two_stream_deployments_each_process_an_event_with_the_same_id() {
    // Arrange: one Redis and one key prefix, two streams, each read by a deployment of its own.
    let mut cluster = Cluster::new(Backend::Postgres, 500, 0, "").await;
    let streams = [unique("talk_posted_stream"), unique("talk_posted_stream")];
    let mut conn = redis_connection(&cluster.redis.url()).await;
    for stream in &streams {
        let _: String = redis::AsyncCommands::xadd(
            &mut conn,
            stream,
            "*",
            &[("event", r#"{"talk_id": 1, "event_id": "shared-id"}"#)],
        )
        .await
        .unwrap();
    }

    // Act
    for stream in &streams {
        cluster
            .start_replica(&[("NOTIFIER_INPUT", "stream"), ("NOTIFIER_STREAM", stream)])
            .await;
    }

    // Assert: both deployments sent it, so every device has it twice.
    cluster
        .wait_delivered(2 * cluster.devices, Duration::from_secs(60))
        .await;
    for _ in 0..100 {
        if cluster.processed_by("shared-id") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.processed_by("shared-id"), 2, "{}", cluster.logs());
    for i in [1, cluster.devices] {
        let token = format!("tok-{i:08}");
        assert_eq!(cluster.stand_in.counters.deliveries(&token, "shared-id"), 2);
    }
}

#[tokio::test]
async fn sigterm_mid_fan_out_exits_0_in_time_and_a_restart_completes_the_event() {
    let mut cluster = Cluster::new(Backend::Postgres, 20_000, 5, "").await;
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(1).await;
    cluster.publish(EVENT).await;

    cluster.wait_delivered(4_000, Duration::from_secs(60)).await;
    cluster.terminate(0);
    let stopping = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(15), cluster.replicas[0].child.wait())
        .await
        .expect("it stops within the drain deadline")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", cluster.logs());
    assert!(
        stopping.elapsed() < Duration::from_secs(3 + 5),
        "drain 3 s, plus margin"
    );
    assert!(cluster.delivered() < 20_000, "it stopped mid fan-out");

    cluster.start_replica(&[]).await;
    cluster
        .assert_everyone_got(EVENT_ID, 1, 0, Duration::from_secs(90))
        .await;
    assert!(
        cluster.log(1).contains("\"resumed\":true"),
        "{}",
        cluster.logs()
    );
}

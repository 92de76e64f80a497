//! The audience is read with one streamed query per lane, whatever order the database can give
//! cheaply: a read cut midway (a killed connection, MariaDB's write timeout on a stalled lane)
//! resumes after the last device read, and each device still gets the push once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use notifier::EventOutcome;
use notifier::Pushers;
use notifier::Settings;
use notifier::{Audience, Device, PageSink, Provider};
use notifier::{Backend, Database, Queries, ReadEnd};
use notifier::{Push, PushOutcome, Pusher};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const ONE_TALK: &[&str] = &[
    "INSERT INTO users (id, name, locale) VALUES (1, 'author', 'en'), (2, 'listener', 'en')",
    "INSERT INTO programs (id, user_id, title) VALUES (1, 1, 'Big show')",
    "INSERT INTO talks (id, program_id, user_id, title) VALUES (1, 1, 1, 'Everyone listens')",
    "INSERT INTO clips (user_id, program_id) VALUES (2, 1)",
];

/// The reference query with an order no index gives (an expression), and still `LIMIT :limit`
/// as queries written for page-by-page reads have it.
const ORDERED_BY_AN_EXPRESSION: &str = "
SELECT d.id AS device_id, d.user_id AS user_id, d.provider AS provider, d.token AS token
FROM devices d
JOIN clips c ON c.user_id = d.user_id AND c.program_id = :program_id
WHERE d.id > :after_id AND d.provider = :provider AND d.disabled_at IS NULL
  AND (:author_id IS NULL OR d.user_id <> :author_id)
ORDER BY d.id + 0
LIMIT :limit";

/// The reference query with 2 KB of padding per row, so that a result of a few thousand rows
/// outgrows the TCP buffers and the server is still sending it when the test strikes.
const PADDED: &str = "
SELECT d.id AS device_id, d.provider AS provider, d.token AS token, REPEAT('x', 2000) AS padding
FROM devices d
WHERE d.id > :after_id AND d.provider = :provider AND d.disabled_at IS NULL
  AND EXISTS (SELECT 1 FROM clips c WHERE c.user_id = d.user_id AND c.program_id = :program_id)
ORDER BY d.id";

/// A database with talk 1, whose program user 2 clipped, and devices 1..=n of user 2: every
/// third through APNs when `apns` is set, else all through FCM.
async fn audience_db(backend: Backend, n: u32, apns: bool) -> TestDb {
    let test_db = TestDb::new(backend).await;
    test_db.execute(ONE_TALK).await;
    let provider = if apns {
        "CASE WHEN i % 3 = 0 THEN 'apns' ELSE 'fcm' END"
    } else {
        "'fcm'"
    };
    let insert = match backend {
        Backend::Postgres => format!(
            "INSERT INTO devices (id, user_id, provider, platform, token)
             SELECT i, 2, {provider}, 'android', 'token-' || i FROM generate_series(1, {n}) AS i"
        ),
        Backend::MySql => format!(
            "SET STATEMENT max_recursive_iterations = 10000000 FOR
             INSERT INTO devices (id, user_id, provider, platform, token)
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})
             SELECT i, 2, {provider}, 'android', CONCAT('token-', i) FROM s"
        ),
        Backend::Sqlite => format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})
             INSERT INTO devices (id, user_id, provider, platform, token)
             SELECT i, 2, {provider}, 'android', 'token-' || i FROM s"
        ),
    };
    test_db.execute(&[&insert]).await;
    test_db
}

fn settings_for(test_db: &TestDb, page_size: u32, audience: Option<&str>) -> Settings {
    let mut settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CONCURRENCY", "50"),
    ]);
    settings.database.page_size = page_size;
    if let Some(query) = audience {
        settings.queries.audience = query.to_string();
    }
    settings
}

async fn processed(outcome: EventOutcome) -> notifier::FanoutReport {
    match outcome {
        EventOutcome::Processed(summary) => summary.report,
        other => panic!("{other:?}"),
    }
}

async fn the_audience_is_read_with_one_query_per_lane_not_one_per_page(backend: Backend) {
    let test_db = audience_db(backend, 3_000, true).await;
    let recorder = RecordingPusher::new();
    let worker = recording_worker(settings_for(&test_db, 100, None), &test_db, &recorder);

    let r = processed(
        worker
            .handle_message(br#"{"talk_id": 1}"#, &CancellationToken::new())
            .await,
    )
    .await;

    assert_eq!(r.sent, 3_000);
    assert_eq!(recorder.device_ids(), (1..=3_000).collect::<Vec<i64>>());
    // 2,000 FCM devices in 20 pages and 1,000 APNs ones in 10, from one query each (and one
    // for the Web Push lane, which finds no device here).
    assert_eq!(r.pages, 20 + 10);
    let lanes = notifier::Provider::ALL.len() as u64;
    assert_eq!(r.queries, lanes, "one query per provider lane");
}

#[tokio::test]
async fn the_audience_is_read_with_one_query_per_lane_not_one_per_page_on_postgres() {
    the_audience_is_read_with_one_query_per_lane_not_one_per_page(Backend::Postgres).await;
}

#[tokio::test]
async fn the_audience_is_read_with_one_query_per_lane_not_one_per_page_on_mariadb() {
    the_audience_is_read_with_one_query_per_lane_not_one_per_page(Backend::MySql).await;
}

#[tokio::test]
async fn the_audience_is_read_with_one_query_per_lane_not_one_per_page_on_sqlite() {
    the_audience_is_read_with_one_query_per_lane_not_one_per_page(Backend::Sqlite).await;
}

async fn a_query_ordered_by_an_expression_reaches_every_device_once_in_bounded_memory(
    backend: Backend,
) {
    let test_db = audience_db(backend, 20_000, true).await;
    let recorder = RecordingPusher::new();
    let settings = settings_for(&test_db, 500, Some(ORDERED_BY_AN_EXPRESSION));
    let worker = recording_worker(settings, &test_db, &recorder);

    let r = processed(
        worker
            .handle_message(br#"{"talk_id": 1}"#, &CancellationToken::new())
            .await,
    )
    .await;

    assert_eq!(r.sent, 20_000);
    assert_eq!(recorder.device_ids(), (1..=20_000).collect::<Vec<i64>>());
    let lanes = notifier::Provider::ALL.len() as u64;
    assert_eq!(r.queries, lanes, "one sort per lane, not one per page");
    // Per lane at most a page being sent, one waiting and one handed on: never the audience.
    assert!(
        r.peak_buffered >= 500 && r.peak_buffered <= 2 * 3 * 500,
        "peak {} devices held",
        r.peak_buffered
    );
}

#[tokio::test]
async fn a_query_ordered_by_an_expression_reaches_every_device_once_in_bounded_memory_on_postgres()
{
    a_query_ordered_by_an_expression_reaches_every_device_once_in_bounded_memory(Backend::Postgres)
        .await;
}

#[tokio::test]
async fn a_query_ordered_by_an_expression_reaches_every_device_once_in_bounded_memory_on_mariadb() {
    a_query_ordered_by_an_expression_reaches_every_device_once_in_bounded_memory(Backend::MySql)
        .await;
}

#[tokio::test]
async fn a_query_ordered_by_an_expression_reaches_every_device_once_in_bounded_memory_on_sqlite() {
    a_query_ordered_by_an_expression_reaches_every_device_once_in_bounded_memory(Backend::Sqlite)
        .await;
}

/// The plan the database gives the reference audience query for `provider`'s lane (the first
/// page, for an event whose author is not in the audience), as text: PostgreSQL's plan, the
/// indexes MariaDB's EXPLAIN names, or SQLite's query plan.
async fn lane_plan(test_db: &TestDb, provider: &str) -> String {
    let query = settings_for(test_db, 100, None)
        .queries
        .audience
        .replace(":after_id", "0")
        .replace(":provider", &format!("'{provider}'"))
        .replace(":author_id", "1")
        .replace(":program_id", "1");
    let lines: Vec<String> = match &test_db.db {
        Database::Postgres(p) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {query}")))
                .fetch_all(p)
                .await
                .expect("EXPLAIN on PostgreSQL")
        }
        Database::MySql(p) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {query}")))
                .fetch_all(p)
                .await
                .expect("EXPLAIN on MariaDB");
            column_of(&rows, "key")
        }
        Database::Sqlite(p) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}")))
                .fetch_all(p)
                .await
                .expect("EXPLAIN QUERY PLAN on SQLite");
            column_of(&rows, "detail")
        }
    };
    lines.join("\n")
}

/// One text column of every row (NULL as empty).
fn column_of<R: sqlx::Row>(rows: &[R], column: &str) -> Vec<String>
where
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let text = |row: &R| row.try_get::<Option<String>, _>(column);
    rows.iter()
        .map(|row| text(row).unwrap_or_else(|e| panic!("the plan's {column}: {e}")))
        .map(Option::unwrap_or_default)
        .collect()
}

/// A provider none of whose devices is in the audience (a deployment with no Web Push
/// subscriber yet) has its lane's read go through the devices' index by provider, so it ends at
/// once instead of walking the audience's devices (every event, on every lane) to find none.
async fn a_lane_whose_provider_has_no_device_reads_through_the_index_by_provider(
    backend: Backend,
    analyze: &str,
) {
    let test_db = audience_db(backend, 5_000, false).await;
    test_db.execute(&[analyze]).await;

    let plan = lane_plan(&test_db, "webpush").await;

    assert!(plan.contains("devices_provider_id"), "{plan}");
}

#[tokio::test]
async fn a_lane_whose_provider_has_no_device_reads_through_the_index_by_provider_on_postgres() {
    a_lane_whose_provider_has_no_device_reads_through_the_index_by_provider(
        Backend::Postgres,
        "ANALYZE",
    )
    .await;
}

#[tokio::test]
async fn a_lane_whose_provider_has_no_device_reads_through_the_index_by_provider_on_mariadb() {
    a_lane_whose_provider_has_no_device_reads_through_the_index_by_provider(
        Backend::MySql,
        "ANALYZE TABLE users, clips, devices",
    )
    .await;
}

#[tokio::test]
async fn a_lane_whose_provider_has_no_device_reads_through_the_index_by_provider_on_sqlite() {
    a_lane_whose_provider_has_no_device_reads_through_the_index_by_provider(
        Backend::Sqlite,
        "ANALYZE",
    )
    .await;
}

/// Collects what a streamed audience hands on.
#[derive(Default)]
struct Collect {
    ids: Vec<i64>,
    pages: usize,
    /// Stop after this many pages (0: never).
    stop_after: usize,
}

impl PageSink for Collect {
    async fn page(&mut self, page: Vec<Device>) -> bool {
        self.ids.extend(page.iter().map(|d| d.id));
        self.pages += 1;
        self.stop_after == 0 || self.pages < self.stop_after
    }
}

#[tokio::test]
async fn a_read_resumed_from_a_checkpoint_or_a_stop_starts_right_after_the_last_device_read() {
    let test_db = audience_db(Backend::Sqlite, 1_000, true).await;
    let settings = settings_for(&test_db, 100, None);
    let queries = Queries::prepare(&settings.queries, Backend::Sqlite).unwrap();
    let audience = |after: i64| {
        Audience::new(
            test_db.db.clone(),
            queries.audience.clone(),
            1,
            1,
            Some(1),
            100,
        )
        .only(Provider::Fcm)
        .resume_after(after)
    };
    let fcm = |from: i64| -> Vec<i64> { (from..=1_000).filter(|i| i % 3 != 0).collect() };

    // From a checkpoint: the lane stood at device 500.
    let mut resumed = audience(500);
    let mut sink = Collect::default();
    assert_eq!(resumed.stream(&mut sink).await.unwrap(), ReadEnd::Exhausted);
    assert_eq!(sink.ids, fcm(501));
    assert_eq!(resumed.after_id(), 1_000);

    // Stopped after two pages, then read on: nothing twice, nothing missed.
    let mut audience = audience(0);
    let mut first = Collect {
        stop_after: 2,
        ..Collect::default()
    };
    assert_eq!(audience.stream(&mut first).await.unwrap(), ReadEnd::Stopped);
    assert_eq!(first.ids.len(), 200);
    let mut rest = Collect::default();
    assert_eq!(
        audience.stream(&mut rest).await.unwrap(),
        ReadEnd::Exhausted
    );
    let mut all = first.ids;
    all.extend(rest.ids);
    assert_eq!(all, fcm(1));
}

/// Kills every connection to the test database once `recorder` has seen `after` pushes.
async fn kill_connections_after(
    test_db: &TestDb,
    recorder: &RecordingPusher,
    after: usize,
) -> usize {
    while recorder.pushes.lock().unwrap().len() < after {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let name = test_db.url.rsplit('/').next().unwrap();
    match test_db.db.backend() {
        Backend::Postgres => test_db
            .scalar_on_admin(&format!(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .await
            .try_into()
            .unwrap(),
        _ => test_db.kill_mysql_connections(name).await,
    }
}

async fn a_connection_killed_mid_read_resumes_after_the_last_device_read(backend: Backend) {
    let test_db = audience_db(backend, 20_000, false).await;
    let recorder = RecordingPusher::slow(Duration::from_millis(1));
    let worker = recording_worker(
        settings_for(&test_db, 200, Some(PADDED)),
        &test_db,
        &recorder,
    );

    let stop = CancellationToken::new();
    let (outcome, killed) = tokio::join!(
        worker.handle_message(br#"{"talk_id": 1}"#, &stop),
        kill_connections_after(&test_db, &recorder, 2_000),
    );

    let r = processed(outcome).await;
    assert!(killed >= 1, "the reading connection was killed");
    assert_eq!(r.sent, 20_000);
    assert_eq!(
        recorder.device_ids(),
        (1..=20_000).collect::<Vec<i64>>(),
        "each device once"
    );
    // One query per provider lane, and the FCM lane's resumed one.
    let lanes = notifier::Provider::ALL.len() as u64;
    assert!(
        r.queries > lanes,
        "{} queries: the read was not cut",
        r.queries
    );
}

#[tokio::test]
async fn a_postgres_connection_killed_mid_read_resumes_after_the_last_device_read() {
    a_connection_killed_mid_read_resumes_after_the_last_device_read(Backend::Postgres).await;
}

#[tokio::test]
async fn a_mariadb_connection_killed_mid_read_resumes_after_the_last_device_read() {
    a_connection_killed_mid_read_resumes_after_the_last_device_read(Backend::MySql).await;
}

/// Once a push for a device from `stall_at` on starts, every push waits until `stall` after it:
/// the lane stops taking pages, as when the provider is paused or paces it.
struct StallingPusher {
    inner: Arc<RecordingPusher>,
    stall_at: i64,
    stall: Duration,
    since: OnceCell<Instant>,
}

#[async_trait::async_trait]
impl Pusher for StallingPusher {
    async fn push(&self, push: &Push) -> PushOutcome {
        if push.device.id >= self.stall_at {
            let since = *self.since.get_or_init(|| async { Instant::now() }).await;
            tokio::time::sleep_until((since + self.stall).into()).await;
        }
        self.inner.push(push).await
    }
}

#[tokio::test]
async fn a_lane_stalled_past_mariadbs_net_write_timeout_resumes_its_read_with_no_device_lost() {
    let test_db = audience_db(Backend::MySql, 20_000, false).await;
    // The server's default is 60 s; one second here so the test need not wait a minute.
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(10)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET SESSION net_write_timeout = 1")
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            })
        })
        .connect(&test_db.url)
        .await
        .expect("MariaDB at 127.0.0.1:3306");
    let db = Database::MySql(pool);
    let recorder = RecordingPusher::new();
    let stalling = Arc::new(StallingPusher {
        inner: Arc::clone(&recorder),
        stall_at: 2_000,
        stall: Duration::from_secs(4),
        since: OnceCell::new(),
    });
    let settings = settings_for(&test_db, 200, Some(PADDED));
    let worker = notifier::Worker::new(settings, db, Pushers::dry_run(stalling as Arc<dyn Pusher>))
        .expect("worker settings");

    let r = processed(
        worker
            .handle_message(br#"{"talk_id": 1}"#, &CancellationToken::new())
            .await,
    )
    .await;

    assert_eq!(r.sent, 20_000);
    assert_eq!(
        recorder.device_ids(),
        (1..=20_000).collect::<Vec<i64>>(),
        "each device once"
    );
    let lanes = notifier::Provider::ALL.len() as u64;
    assert!(
        r.queries > lanes,
        "{} queries: the server did not cut the stalled read",
        r.queries
    );
}

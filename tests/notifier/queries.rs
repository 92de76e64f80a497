//! An app's own tables: the content and audience queries are overridden in the config file and
//! read a differently named schema, with INT (and, on MySQL, unsigned) ids and duplicate rows.

use std::sync::Arc;

use notifier::{Backend, EventOutcome, Worker};

use crate::helpers::*;

const OWN_SCHEMA: &[&str] = &[
    "CREATE TABLE shows (show_no {INT} PRIMARY KEY, owner {INT} NOT NULL, name VARCHAR(200) NOT NULL)",
    "CREATE TABLE episodes (episode_no {INT} PRIMARY KEY, show_no {INT} NOT NULL, posted_by {INT}, headline VARCHAR(200) NOT NULL)",
    "CREATE TABLE members (member_no {INT} PRIMARY KEY, lang VARCHAR(10))",
    // No unique key: the same follow twice is a duplicate row in the join.
    "CREATE TABLE follows (member_no {INT} NOT NULL, show_no {INT} NOT NULL)",
    "CREATE TABLE push_tokens (token_no {INT} PRIMARY KEY, member_no {INT} NOT NULL, kind VARCHAR(10) NOT NULL, value VARCHAR(300) NOT NULL, active SMALLINT NOT NULL)",
    "INSERT INTO shows VALUES (5, 1, 'Talk Show')",
    "INSERT INTO episodes VALUES (50, 5, 1, 'Hello from my own tables'), (51, 5, NULL, 'A station announcement')",
    "INSERT INTO members VALUES (1, 'en'), (2, 'ja'), (3, 'en'), (4, NULL)",
    "INSERT INTO follows VALUES (1, 5), (2, 5), (2, 5), (3, 5), (4, 5), (4, 5)",
    "INSERT INTO push_tokens VALUES (1, 1, 'fcm', 'own-author-token', 1), (2, 2, 'fcm', 'own-token-2', 1),
        (3, 2, 'apns', 'own-token-3', 1), (4, 3, 'fcm', 'own-token-4-off', 0), (5, 4, 'fcm', 'own-token-5', 1)",
];

const OWN_QUERIES: &str = r#"
[database]
page_size = 2

[queries]
content = """
SELECT s.show_no AS program_id, e.posted_by AS author_id, e.headline AS talk_title, s.name AS program_title
FROM episodes e JOIN shows s ON s.show_no = e.show_no
WHERE e.episode_no = :talk_id
"""
audience = """
SELECT t.token_no AS device_id, t.kind AS provider, t.value AS token, m.lang AS locale
FROM push_tokens t
JOIN follows f ON f.member_no = t.member_no
JOIN members m ON m.member_no = t.member_no
WHERE f.show_no = :program_id AND t.active = 1 AND t.token_no > :after_id
  AND (:author_id IS NULL OR t.member_no <> :author_id)
ORDER BY t.token_no
LIMIT :limit
"""
"#;

/// The app's own schema, its ids of type `int_type`, and a worker whose config file is `config`;
/// the directory holding the file, and the database, live as long as the returned values.
async fn own_tables_worker(
    backend: Backend,
    int_type: &str,
    config: &str,
) -> (Worker, Arc<RecordingPusher>, TestDb, tempfile::TempDir) {
    let test_db = TestDb::empty(backend).await;
    let schema: Vec<String> = OWN_SCHEMA
        .iter()
        .map(|s| s.replace("{INT}", int_type))
        .collect();
    test_db
        .execute(&schema.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifier.toml");
    std::fs::write(&path, config).unwrap();
    let settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CONFIG", path.to_str().unwrap()),
    ]);
    assert_eq!(settings.database.page_size, 2);
    let recorder = RecordingPusher::new();
    let worker = recording_worker(settings, &test_db, &recorder);
    (worker, recorder, test_db, dir)
}

async fn overridden_queries_read_an_apps_own_tables(backend: Backend, int_type: &str) {
    let (worker, recorder, _db, _dir) = own_tables_worker(backend, int_type, OWN_QUERIES).await;

    let outcome = worker
        .handle_message(
            br#"{"talk_id": 50}"#,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await;

    let EventOutcome::Processed(summary) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(summary.report.recipients, 3);
    // Device 1 is the author's, 4 is inactive; 2 and 5 appear twice in the join but come once.
    assert_eq!(recorder.device_ids(), [2, 3, 5]);
    let pushes = recorder.taken();
    assert_eq!(pushes[0].title, "Talk Showに新しいトークが投稿されました");
    assert_eq!(pushes[2].title, "New talk on Talk Show");
    assert_eq!(pushes[1].body, "Hello from my own tables");
    assert_eq!(pushes[1].provider, "apns");

    // A talk without an author (a NULL :author_id) reaches every follower, the owner included.
    recorder.pushes.lock().unwrap().clear();
    let outcome = worker
        .handle_message(
            br#"{"talk_id": 51}"#,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await;
    assert!(matches!(outcome, EventOutcome::Processed(_)), "{outcome:?}");
    assert_eq!(recorder.device_ids(), [1, 2, 3, 5]);
}

#[tokio::test]
async fn overridden_queries_read_an_apps_own_tables_on_postgres() {
    overridden_queries_read_an_apps_own_tables(Backend::Postgres, "INT").await;
}

#[tokio::test]
async fn overridden_queries_read_an_apps_own_tables_on_mysql() {
    overridden_queries_read_an_apps_own_tables(Backend::MySql, "INT UNSIGNED").await;
}

#[tokio::test]
async fn overridden_queries_read_an_apps_own_tables_on_sqlite() {
    overridden_queries_read_an_apps_own_tables(Backend::Sqlite, "INTEGER").await;
}

/// The app's own tables on PostgreSQL, read through `audience`; the event's outcome.
async fn own_tables_read_with(audience: &str) -> (EventOutcome, Arc<RecordingPusher>) {
    let (content, _) = OWN_QUERIES
        .split_once("audience = ")
        .expect("OWN_QUERIES sets the audience query");
    let config = format!("{content}audience = \"\"\"\n{audience}\n\"\"\"\n");
    let (worker, recorder, _db, _dir) = own_tables_worker(Backend::Postgres, "INT", &config).await;
    let outcome = worker
        .handle_message(
            br#"{"talk_id": 50}"#,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await;
    (outcome, recorder)
}

const OWN_AUDIENCE_FROM: &str = "FROM push_tokens t
JOIN (SELECT DISTINCT member_no, show_no FROM follows) f ON f.member_no = t.member_no
JOIN members m ON m.member_no = t.member_no
WHERE f.show_no = :program_id AND t.active = 1 AND t.token_no > :after_id
  AND (:author_id IS NULL OR t.member_no <> :author_id)
ORDER BY t.token_no";

#[tokio::test]
async fn postgres_columns_of_every_integer_width_text_and_timestamp_type_are_read_and_a_wrong_one_is_named()
 {
    // Each column a type sqlx reads by another path than BIGINT and TEXT: SMALLINT, NAME,
    // BPCHAR, VARCHAR, an untyped literal, INT, and a timestamp without a time zone (UTC).
    let widths = format!(
        "SELECT t.token_no::smallint AS device_id, t.kind::name AS provider,
                t.value::bpchar AS token, m.lang AS locale, 'android' AS platform,
                t.member_no AS user_id, TIMESTAMP '2026-01-02 03:04:05' AS updated_at
         {OWN_AUDIENCE_FROM}"
    );
    let (outcome, recorder) = own_tables_read_with(&widths).await;
    assert!(matches!(outcome, EventOutcome::Processed(_)), "{outcome:?}");
    assert_eq!(recorder.device_ids(), [2, 3, 5]);
    let pushes = recorder.taken();
    assert_eq!(
        pushes.iter().map(|p| p.token.as_str()).collect::<Vec<_>>(),
        ["own-token-2", "own-token-3", "own-token-5"]
    );
    assert_eq!(pushes[1].provider, "apns");
    let registered = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap();
    assert_eq!(pushes[0].updated_at, Some(registered.to_utc()));

    // A token that is a number is no token: the column is named, and nothing is sent.
    let wrong = format!(
        "SELECT t.token_no AS device_id, t.kind AS provider, t.token_no * 10 AS token
         {OWN_AUDIENCE_FROM}"
    );
    let (outcome, recorder) = own_tables_read_with(&wrong).await;
    assert_column_named(
        &outcome,
        &recorder,
        "token",
        "not compatible with SQL type `INT4`",
    );
}

/// The read failed naming `column` and saying `why`, and nothing was sent.
fn assert_column_named(
    outcome: &EventOutcome,
    recorder: &RecordingPusher,
    column: &str,
    why: &str,
) {
    let said = format!("{outcome:?}");
    assert!(
        said.contains(&format!(r#"column: "{column}""#)) && said.contains(why),
        "the column and what is wrong are named: {said}"
    );
    assert!(recorder.device_ids().is_empty(), "{said}");
}

#[tokio::test]
async fn postgres_timestamps_before_and_after_2000_with_and_without_a_zone_are_read_to_the_microsecond_and_infinity_is_named()
 {
    // PostgreSQL's binary timestamps count microseconds from 2000, before it negatively.
    let cases = [
        (
            "TIMESTAMPTZ '1999-12-31 23:59:59.999999+09'",
            "1999-12-31T14:59:59.999999Z",
        ),
        ("TIMESTAMP '1970-01-01 00:00:00'", "1970-01-01T00:00:00Z"),
        (
            "TIMESTAMPTZ '2026-12-07 20:15:00.000001+00'",
            "2026-12-07T20:15:00.000001Z",
        ),
    ];
    for (literal, expected) in cases {
        let query = format!(
            "SELECT t.token_no AS device_id, t.kind AS provider, t.value AS token,
                    {literal} AS updated_at
             {OWN_AUDIENCE_FROM}"
        );
        let (outcome, recorder) = own_tables_read_with(&query).await;
        assert!(matches!(outcome, EventOutcome::Processed(_)), "{outcome:?}");
        let expected = chrono::DateTime::parse_from_rfc3339(expected).unwrap();
        let pushes = recorder.taken();
        assert_eq!(pushes.len(), 3, "{literal}");
        assert!(
            pushes
                .iter()
                .all(|p| p.updated_at == Some(expected.to_utc())),
            "{literal}: {:?}",
            pushes[0].updated_at
        );
    }

    // 'infinity' is no time a device was registered at: the column is named, nothing is sent.
    let infinite = format!(
        "SELECT t.token_no AS device_id, t.kind AS provider, t.value AS token,
                'infinity'::timestamptz AS updated_at
         {OWN_AUDIENCE_FROM}"
    );
    let (outcome, recorder) = own_tables_read_with(&infinite).await;
    assert_column_named(&outcome, &recorder, "updated_at", "out of range");
}

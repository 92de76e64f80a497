//! An app's own tables: the content and audience queries are overridden in the config file and
//! read a differently named schema, with INT (and, on MySQL, unsigned) ids and duplicate rows.

use notifier::Backend;
use notifier::EventOutcome;

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

async fn overridden_queries_read_an_apps_own_tables(backend: Backend, int_type: &str) {
    let test_db = TestDb::empty(backend).await;
    let schema: Vec<String> = OWN_SCHEMA
        .iter()
        .map(|s| s.replace("{INT}", int_type))
        .collect();
    test_db
        .execute(&schema.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifier.toml");
    std::fs::write(&config, OWN_QUERIES).unwrap();
    let settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CONFIG", config.to_str().unwrap()),
    ]);
    assert_eq!(settings.database.page_size, 2);
    let recorder = RecordingPusher::new();
    let worker = recording_worker(settings, &test_db, &recorder);

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

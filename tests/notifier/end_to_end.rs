//! Publish on a real Redis channel; the pusher receives exactly the expected devices with the
//! right content, on each database backend.

use notifier::Backend;
use notifier::EventOutcome;

use crate::helpers::*;

async fn a_published_talk_reaches_every_clipper_device_once(backend: Backend) {
    // Arrange
    let test_db = TestDb::new(backend).await;
    test_db.execute(SCENARIO).await;
    let channel = unique("talk_posted");
    let settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CHANNEL", &channel),
    ]);
    let recorder = RecordingPusher::new();
    let mut worker =
        RunningWorker::start(settings, test_db.db.clone(), dry_run_pushers(&recorder)).await;

    // Act
    publish(&redis_url(), &channel, r#"{"talk_id": "100"}"#).await;
    let outcome = worker.next_outcome().await;

    // Assert
    let EventOutcome::Processed(summary) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(summary.event_id, "talk_posted:100");
    assert!(summary.dry_run);
    let r = &summary.report;
    assert_eq!(
        (r.recipients, r.sent, r.failed, r.pruned, r.skipped),
        (5, 5, 0, 0, 0)
    );
    assert_eq!(recorder.device_ids(), SCENARIO_RECIPIENTS);

    let pushes = recorder.taken();
    let by_device = |id: i64| pushes.iter().find(|p| p.device_id == id).unwrap();
    let en_title = "New talk on 深夜ラジオ";
    let ja_title = "深夜ラジオに新しいトークが投稿されました";
    assert_eq!(by_device(2).title, en_title); // en
    assert_eq!(by_device(4).title, ja_title); // ja
    assert_eq!(by_device(6).title, en_title); // NULL locale: the default
    assert_eq!(by_device(8).title, ja_title); // ja-JP falls back to ja
    assert_eq!(by_device(3).provider, "apns");
    assert_eq!(by_device(3).token, "token-ben-iphone-0003");
    for p in &pushes {
        assert_eq!(p.body, "第1回 Hello");
        assert_eq!(
            p.data,
            [
                ("program_id".to_string(), "10".to_string()),
                ("talk_id".into(), "100".into()),
                ("type".into(), "talk_posted".into()),
                ("url".into(), "notifier-demo://talks/100".into()),
            ]
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_published_talk_reaches_every_clipper_device_once_on_postgres() {
    a_published_talk_reaches_every_clipper_device_once(Backend::Postgres).await;
}

#[tokio::test]
async fn a_published_talk_reaches_every_clipper_device_once_on_mysql() {
    a_published_talk_reaches_every_clipper_device_once(Backend::MySql).await;
}

#[tokio::test]
async fn a_published_talk_reaches_every_clipper_device_once_on_sqlite() {
    a_published_talk_reaches_every_clipper_device_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_dry_run_event_never_reaches_the_live_pusher() {
    let test_db = scenario_db(Backend::Sqlite).await;
    let settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_SEND_MODE", "live"),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/unused/by/this/test.json",
        ),
    ]);
    let (live, dry) = (RecordingPusher::new(), RecordingPusher::new());
    let pushers = notifier::Pushers::new(
        notifier::PerProvider {
            fcm: Some(live.clone()),
            apns: Some(live.clone()),
            webpush: Some(live.clone()),
        },
        dry.clone(),
    );
    let worker = notifier::Worker::new(settings, test_db.db.clone(), pushers).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();

    worker
        .handle_message(
            br#"{"talk_id": 100, "event_id": "a", "dry_run": true}"#,
            &stop,
        )
        .await;
    assert_eq!((live.taken().len(), dry.taken().len()), (0, 5));

    worker
        .handle_message(
            br#"{"talk_id": 100, "event_id": "b", "dry_run": false}"#,
            &stop,
        )
        .await;
    assert_eq!((live.taken().len(), dry.taken().len()), (5, 5));
}

#[tokio::test]
async fn an_unknown_talk_or_a_mismatched_program_is_skipped() {
    let test_db = scenario_db(Backend::Sqlite).await;
    let settings = settings_with(&[("DATABASE_URL", &test_db.url)]);
    let recorder = RecordingPusher::new();
    let worker = recording_worker(settings, &test_db, &recorder);
    let stop = tokio_util::sync::CancellationToken::new();

    let unknown = worker.handle_message(br#"{"talk_id": 999}"#, &stop).await;
    assert!(matches!(unknown, EventOutcome::UnknownTalk), "{unknown:?}");
    let mismatch = worker
        .handle_message(br#"{"talk_id": 100, "program_id": 11}"#, &stop)
        .await;
    assert!(
        matches!(mismatch, EventOutcome::UnknownTalk),
        "{mismatch:?}"
    );
    let matching = worker
        .handle_message(br#"{"talk_id": 100, "program_id": 10}"#, &stop)
        .await;
    assert!(
        matches!(matching, EventOutcome::Processed(_)),
        "{matching:?}"
    );
    assert_eq!(recorder.taken().len(), 5);
}

#[tokio::test]
async fn a_live_send_mode_without_a_live_pusher_refuses_to_start() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    let settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("APP_ENV", "production"),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/unused/by/this/test.json",
        ),
    ]);
    let recorder = RecordingPusher::new();
    let err = notifier::Worker::new(settings, test_db.db.clone(), dry_run_pushers(&recorder))
        .err()
        .expect("no worker without a live pusher");
    assert_eq!(err.setting, "NOTIFIER_SEND_MODE");
}

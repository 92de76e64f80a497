//! The fan-out keeps to its concurrency limit and streams large audiences in bounded pages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use notifier::Backend;
use notifier::EventOutcome;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const ONE_TALK: &[&str] = &[
    "INSERT INTO users (id, name, locale) VALUES (1, 'author', 'en'), (2, 'listener', 'en')",
    "INSERT INTO programs (id, user_id, title) VALUES (1, 1, 'Big show')",
    "INSERT INTO talks (id, program_id, user_id, title) VALUES (1, 1, 1, 'Everyone listens')",
    "INSERT INTO clips (user_id, program_id) VALUES (2, 1)",
];

#[tokio::test]
async fn in_flight_pushes_never_exceed_the_concurrency_limit() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    test_db.execute(ONE_TALK).await;
    sqlite_devices(&test_db, 2000).await;
    let mut settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CONCURRENCY", "16"),
    ]);
    settings.database.page_size = 100;
    let recorder = RecordingPusher::slow(Duration::from_millis(2));
    let worker = recording_worker(settings, &test_db, &recorder);

    let outcome = worker
        .handle_message(br#"{"talk_id": 1}"#, &CancellationToken::new())
        .await;

    let EventOutcome::Processed(summary) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(summary.report.sent, 2000);
    let max = |i: usize| recorder.max_by_provider[i].load(Ordering::SeqCst);
    assert_eq!(
        recorder.max_in_flight.load(Ordering::SeqCst),
        16,
        "the global limit is reached, never exceeded"
    );
    // Each provider holds at most three quarters of the slots (12 of 16) while the other asks
    // too; the one whose lane ends last may take the rest (see the next test).
    assert!(
        (12..=16).contains(&max(0)) && (12..=16).contains(&max(1)),
        "each provider's share is reached, the global limit never exceeded: {:?}",
        (max(0), max(1))
    );
    assert_eq!(recorder.device_ids(), (1..=2000).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_providers_share_gives_way_when_no_other_provider_has_devices_to_send() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    test_db.execute(ONE_TALK).await;
    sqlite_devices(&test_db, 2000).await;
    test_db.execute(&["UPDATE devices SET provider = 'fcm'"]).await;
    let mut settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CONCURRENCY", "16"),
    ]);
    settings.database.page_size = 100;
    let recorder = RecordingPusher::slow(Duration::from_millis(2));
    let worker = recording_worker(settings, &test_db, &recorder);

    let outcome = worker
        .handle_message(br#"{"talk_id": 1}"#, &CancellationToken::new())
        .await;

    let EventOutcome::Processed(summary) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(summary.report.sent, 2000);
    // FCM's share is 12 of 16; with no APNs device, the other 4 slots are FCM's too.
    assert_eq!(recorder.max_by_provider[0].load(Ordering::SeqCst), 16);
}

#[tokio::test]
async fn an_audience_of_100_000_devices_is_streamed_in_pages_without_holding_them_all() {
    let test_db = TestDb::new(Backend::Postgres).await;
    test_db.execute(ONE_TALK).await;
    test_db
        .execute(&[
            "INSERT INTO devices (id, user_id, provider, platform, token)
            SELECT i, 2, CASE WHEN i % 3 = 0 THEN 'apns' ELSE 'fcm' END, 'android', 'token-' || i
            FROM generate_series(1, 100000) AS i",
        ])
        .await;
    let mut settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CONCURRENCY", "256"),
    ]);
    settings.database.page_size = 1000;
    let recorder = RecordingPusher::counting();
    let worker = recording_worker(settings, &test_db, &recorder);

    let outcome = worker
        .handle_message(br#"{"talk_id": 1}"#, &CancellationToken::new())
        .await;

    let EventOutcome::Processed(summary) = outcome else {
        panic!("{outcome:?}")
    };
    let r = &summary.report;
    assert_eq!((r.recipients, r.sent), (100_000, 100_000));
    assert_eq!(recorder.count.load(Ordering::Relaxed), 100_000);
    // Each provider reads its own devices: 66,667 FCM ones in 67 pages, 33,333 APNs ones in 34.
    assert_eq!(r.pages, 67 + 34);
    // Per provider at most a page being sent, one waiting and one read ahead: never the whole
    // audience.
    assert!(
        r.peak_buffered >= 1000 && r.peak_buffered <= 6000,
        "peak {} devices held",
        r.peak_buffered
    );
    assert!(recorder.max_in_flight.load(Ordering::SeqCst) <= 256);
}

#[tokio::test]
async fn a_stop_mid_fan_out_lets_in_flight_pushes_finish_and_spawns_no_more() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    test_db.execute(ONE_TALK).await;
    sqlite_devices(&test_db, 500).await;
    let settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CONCURRENCY", "10"),
    ]);
    let recorder = RecordingPusher::slow(Duration::from_millis(50));
    let worker = recording_worker(settings, &test_db, &recorder);
    let stop = CancellationToken::new();

    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(180)).await;
            stop.cancel();
            std::time::Instant::now()
        })
    };
    let outcome = worker.handle_message(br#"{"talk_id": 1}"#, &stop).await;
    let cancelled_at = stopper.await.unwrap();

    let EventOutcome::Processed(summary) = outcome else {
        panic!("{outcome:?}")
    };
    let r = &summary.report;
    assert!(r.interrupted);
    let pushes = recorder.taken();
    // Every push that was started finished and was counted…
    assert_eq!(r.sent as usize, pushes.len());
    assert_eq!(r.recipients, r.sent);
    assert!(r.sent >= 10 && r.sent < 500);
    // …and none started after the stop. A push spawned just before it may start a moment later,
    // but a loop that kept spawning would start new ones only as permits free up, 50 ms on.
    let late: Vec<_> = pushes
        .iter()
        .filter(|p| p.started_at > cancelled_at + Duration::from_millis(25))
        .map(|p| p.device_id)
        .collect();
    assert!(late.is_empty(), "pushes started after the stop: {late:?}");
}

#[tokio::test]
async fn pushes_still_running_at_the_drain_deadline_are_abandoned_and_counted_as_failed() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    test_db.execute(ONE_TALK).await;
    sqlite_devices(&test_db, 10).await;
    let mut settings = settings_with(&[("DATABASE_URL", &test_db.url)]);
    settings.service.drain_timeout_secs = 1;
    // Every device is handed out at once; the stop comes while all ten hang in the provider.
    let recorder = RecordingPusher::slow(Duration::from_secs(60));
    let worker = recording_worker(settings, &test_db, &recorder);
    let stop = CancellationToken::new();
    let canceller = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.cancel();
        })
    };

    let started = std::time::Instant::now();
    let outcome = worker.handle_message(br#"{"talk_id": 1}"#, &stop).await;
    canceller.await.unwrap();

    let EventOutcome::Processed(summary) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((summary.report.recipients, summary.report.failed), (10, 10));
    assert!(
        summary.report.interrupted,
        "abandoned pushes leave the event unfinished"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// Hangs every FCM push until released; APNs pushes go through at once.
struct StalledFcm {
    release: tokio::sync::Notify,
    apns_done: AtomicUsize,
}

#[async_trait::async_trait]
impl notifier::Pusher for StalledFcm {
    async fn push(&self, push: &notifier::Push) -> notifier::PushOutcome {
        if push.device.provider == Some(notifier::Provider::Fcm) {
            self.release.notified().await;
        } else {
            self.apns_done.fetch_add(1, Ordering::SeqCst);
        }
        notifier::PushOutcome::Delivered
    }
}

#[tokio::test]
async fn a_stalled_provider_does_not_hold_up_the_other() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    test_db.execute(ONE_TALK).await;
    sqlite_devices(&test_db, 3000).await; // 1,500 for each provider
    let mut settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CONCURRENCY", "16"),
    ]);
    settings.database.page_size = 100;
    let pusher = std::sync::Arc::new(StalledFcm {
        release: tokio::sync::Notify::new(),
        apns_done: AtomicUsize::new(0),
    });
    let worker = std::sync::Arc::new(
        notifier::Worker::new(
            settings,
            test_db.db.clone(),
            notifier::Pushers::dry_run(pusher.clone()),
        )
        .unwrap(),
    );

    let event = {
        let worker = std::sync::Arc::clone(&worker);
        tokio::spawn(async move {
            worker
                .handle_message(br#"{"talk_id": 1}"#, &CancellationToken::new())
                .await
        })
    };
    // Every APNs device is delivered while every FCM push hangs.
    let all_apns = async {
        while pusher.apns_done.load(Ordering::SeqCst) < 1500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all_apns)
        .await
        .expect("APNs finished while FCM was stalled");
    assert!(!event.is_finished());

    // Released, FCM finishes too.
    let release = async {
        loop {
            pusher.release.notify_waiters();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let outcome = tokio::select! {
        outcome = event => outcome.unwrap(),
        _ = release => unreachable!(),
    };
    let EventOutcome::Processed(summary) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(summary.report.sent, 3000);
}

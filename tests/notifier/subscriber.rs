//! The subscription survives Redis dropping it: killed client connections and a restarted server.

use std::time::Duration;

use notifier::Backend;
use notifier::EventOutcome;

use crate::helpers::*;

async fn worker_on(
    redis: &OwnRedis,
    test_db: &TestDb,
    recorder: &std::sync::Arc<RecordingPusher>,
) -> RunningWorker {
    let channel = unique("talk_posted");
    let mut settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CHANNEL", &channel),
        ("REDIS_URL", &redis.url()),
    ]);
    settings.redis.reconnect_initial_ms = 20;
    settings.redis.reconnect_max_ms = 200;
    RunningWorker::start(settings, test_db.db.clone(), dry_run_pushers(recorder)).await
}

/// Publishes once somebody listens again, and returns the event's outcome.
async fn publish_when_subscribed(
    worker: &mut RunningWorker,
    redis_url: &str,
    event: &str,
) -> EventOutcome {
    let channel = worker.worker.settings().service.channel.clone();
    wait_for_subscriber(redis_url, &channel).await;
    assert_eq!(publish(redis_url, &channel, event).await, 1);
    worker.next_outcome().await
}

#[tokio::test]
async fn the_subscriber_resubscribes_after_its_connection_is_killed() {
    let redis = OwnRedis::start().await;
    let test_db = scenario_db(Backend::Sqlite).await;
    let recorder = RecordingPusher::new();
    let mut worker = worker_on(&redis, &test_db, &recorder).await;

    let mut conn = redis_connection(&redis.url()).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);

    let outcome = publish_when_subscribed(&mut worker, &redis.url(), r#"{"talk_id": 100}"#).await;
    assert!(
        matches!(outcome, EventOutcome::Processed(ref s) if s.report.sent == 5),
        "{outcome:?}"
    );
    worker.stop().await;
}

#[tokio::test]
async fn the_subscriber_comes_back_after_redis_restarts() {
    let mut redis = OwnRedis::start().await;
    let test_db = scenario_db(Backend::Sqlite).await;
    let recorder = RecordingPusher::new();
    let mut worker = worker_on(&redis, &test_db, &recorder).await;

    redis.restart().await;
    // Give the worker a moment to notice; the publish below waits for the new subscription.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let outcome = publish_when_subscribed(&mut worker, &redis.url(), r#"{"talk_id": 100}"#).await;
    assert!(
        matches!(outcome, EventOutcome::Processed(ref s) if s.report.sent == 5),
        "{outcome:?}"
    );
    assert_eq!(recorder.device_ids(), SCENARIO_RECIPIENTS);
    worker.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_detected_by_ping_and_replaced() {
    let redis = OwnRedis::start().await;
    let test_db = scenario_db(Backend::Sqlite).await;
    let recorder = RecordingPusher::new();
    let mut worker = {
        let channel = unique("talk_posted");
        let mut settings = settings_with(&[
            ("DATABASE_URL", &test_db.url),
            ("NOTIFIER_CHANNEL", &channel),
            ("REDIS_URL", &redis.url()),
        ]);
        settings.redis.ping_interval_secs = 1;
        settings.redis.timeout_secs = 1;
        settings.redis.reconnect_initial_ms = 20;
        RunningWorker::start(settings, test_db.db.clone(), dry_run_pushers(&recorder)).await
    };

    let before = subscriber_ids(&redis.url()).await;
    assert_eq!(before.len(), 1, "one subscription to begin with");

    // A paused server keeps the socket open but answers nothing, like a half-open connection.
    let mut conn = redis_connection(&redis.url()).await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "2500", "ALL"])
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    wait_for_subscriber(&redis.url(), &worker.worker.settings().service.channel).await;

    let after = subscriber_ids(&redis.url()).await;
    assert_eq!(
        after.len(),
        1,
        "exactly one live subscription after the pause"
    );
    assert_ne!(
        before, after,
        "the unanswered PING replaced the subscription"
    );
    let outcome = publish_when_subscribed(&mut worker, &redis.url(), r#"{"talk_id": 100}"#).await;
    assert!(matches!(outcome, EventOutcome::Processed(_)), "{outcome:?}");
    worker.stop().await;
}

/// Client ids of the connections in pub/sub mode.
async fn subscriber_ids(url: &str) -> Vec<String> {
    let mut admin = redis_connection(url).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    clients
        .lines()
        .filter(|l| l.split(' ').any(|f| f == "sub=1"))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_string)
        })
        .collect()
}

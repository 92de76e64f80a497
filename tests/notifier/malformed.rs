//! Malformed messages are rejected one by one with their reason, and the worker carries on.

use notifier::Backend;
use notifier::EventOutcome;

use crate::helpers::*;

#[tokio::test]
async fn each_malformed_message_is_rejected_and_a_valid_one_after_them_is_processed() {
    let test_db = scenario_db(Backend::Sqlite).await;
    let channel = unique("talk_posted");
    let settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CHANNEL", &channel),
    ]);
    let recorder = RecordingPusher::new();
    // One event at a time, so outcomes come in publish order.
    let mut settings = settings;
    settings.service.max_concurrent_events = 1;
    let mut worker =
        RunningWorker::start(settings, test_db.db.clone(), dry_run_pushers(&recorder)).await;

    let oversized = format!(r#"{{"talk_id": 100, "pad": "{}"}}"#, "x".repeat(70_000));
    let table: Vec<(Vec<u8>, &str)> = vec![
        (b"\xc3\x28 not utf-8".to_vec(), "not_utf8"),
        (b"talk 100".to_vec(), "not_json"),
        (b"[100]".to_vec(), "not_object"),
        (br#"{"program_id": 10}"#.to_vec(), "missing_talk_id"),
        (br#"{"talk_id": 0}"#.to_vec(), "bad_id"),
        (br#"{"talk_id": -100}"#.to_vec(), "bad_id"),
        (br#"{"talk_id": "one hundred"}"#.to_vec(), "bad_id"),
        (
            br#"{"talk_id": 100, "dry_run": "yes"}"#.to_vec(),
            "bad_dry_run",
        ),
        (oversized.into_bytes(), "too_large"),
    ];
    for (message, _) in &table {
        publish(&redis_url(), &channel, message).await;
    }
    publish(&redis_url(), &channel, r#"{"talk_id": 100}"#).await;

    for (message, label) in &table {
        match worker.next_outcome().await {
            EventOutcome::Rejected(rejection) => assert_eq!(
                rejection.label(),
                *label,
                "{}",
                String::from_utf8_lossy(&message[..message.len().min(40)])
            ),
            other => panic!("expected a rejection ({label}), got {other:?}"),
        }
    }
    let last = worker.next_outcome().await;
    assert!(
        matches!(last, EventOutcome::Processed(ref s) if s.report.sent == 5),
        "{last:?}"
    );
    assert_eq!(recorder.device_ids(), SCENARIO_RECIPIENTS);
    worker.stop().await;
}

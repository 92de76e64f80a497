//! Claims belong to one deployment (contract §6): two deployments sharing a Redis each notify for
//! the same event, while the replicas of one deployment still skip each other's duplicates.

use notifier::Backend;
use notifier::EventOutcome;

use crate::helpers::*;

/// A deployment of one worker on `channel`, claims under the shared `prefix`, devices from its
/// own database.
async fn deployment(prefix: &str, channel: &str, test_db: &TestDb) -> RunningWorker {
    let mut settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CHANNEL", channel),
    ]);
    settings.claims.key_prefix = prefix.to_string();
    RunningWorker::start(
        settings,
        test_db.db.clone(),
        dry_run_pushers(&RecordingPusher::new()),
    )
    .await
}

fn recipients(outcome: &EventOutcome) -> u64 {
    match outcome {
        EventOutcome::Processed(summary) => summary.report.recipients,
        other => panic!("expected the event processed, got {other:?}"),
    }
}

#[tokio::test]
async fn two_deployments_on_one_redis_each_notify_for_the_same_talk() {
    // Arrange: as the compose file's `notifier` and `notifier-mysql`, one Redis and one key
    // prefix, two channels, two databases.
    let prefix = format!("{}:", unique("deployments"));
    let (postgres, mysql) = (
        scenario_db(Backend::Postgres).await,
        scenario_db(Backend::MySql).await,
    );
    let (first, second) = (unique("talk_posted"), unique("talk_posted"));
    let mut on_postgres = deployment(&prefix, &first, &postgres).await;
    let mut on_mysql = deployment(&prefix, &second, &mysql).await;

    // Act: the same event, with the same event_id, on both channels.
    publish(&redis_url(), &first, r#"{"talk_id": 100}"#).await;
    let first_outcome = on_postgres.next_outcome().await;
    publish(&redis_url(), &second, r#"{"talk_id": 100}"#).await;
    let second_outcome = on_mysql.next_outcome().await;

    // Assert
    assert_eq!(recipients(&first_outcome), 5);
    assert_eq!(recipients(&second_outcome), 5, "not skipped as a duplicate");
    on_postgres.stop().await;
    on_mysql.stop().await;
}

#[tokio::test]
async fn replicas_of_one_deployment_still_skip_each_others_duplicates() {
    // Arrange: two replicas on one channel, one database.
    let prefix = format!("{}:", unique("deployments"));
    let db = scenario_db(Backend::Sqlite).await;
    let channel = unique("talk_posted");
    let mut a = deployment(&prefix, &channel, &db).await;
    let mut b = deployment(&prefix, &channel, &db).await;

    // Act: one publish reaches both replicas.
    publish(&redis_url(), &channel, r#"{"talk_id": 100}"#).await;
    let outcomes = [a.next_outcome().await, b.next_outcome().await];

    // Assert
    let processed = outcomes
        .iter()
        .filter(|o| matches!(o, EventOutcome::Processed(_)))
        .count();
    let skipped = outcomes
        .iter()
        .filter(|o| matches!(o, EventOutcome::Duplicate { .. }))
        .count();
    assert_eq!((processed, skipped), (1, 1), "{outcomes:?}");
    a.stop().await;
    b.stop().await;
}

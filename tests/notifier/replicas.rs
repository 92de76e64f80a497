//! One event across several replicas (issue 12, contract §8), with real `notifier` processes, a
//! Redis the test owns, PostgreSQL and the FCM stand-in (the fault tests' [`Cluster`]): the
//! split into jobs survives a replica killed mid-event, and the deployment's shared pace keeps
//! three replicas under the stand-in's quota.

use std::time::{Duration, Instant};

use notifier::Backend;
use stand_in::StandInConfig;

use crate::faults::{CONCURRENCY, Cluster};

const EVENT: &str = r#"{"talk_id": 1}"#;
const EVENT_ID: &str = "talk_posted:1";

/// Starts `n` replicas with these extra variables, and waits until all listen.
async fn start_replicas(cluster: &mut Cluster, n: usize, env: &[(&str, &str)]) {
    for _ in 0..n {
        cluster.start_replica(env).await;
    }
    cluster.wait_subscribed(n as i64).await;
}

/// How many replicas logged `text`.
fn replicas_logging(cluster: &Cluster, text: &str) -> usize {
    (0..cluster.replicas.len())
        .filter(|n| cluster.log(*n).contains(text))
        .count()
}

#[tokio::test]
async fn an_event_split_over_three_replicas_survives_one_killed_mid_event() {
    let mut cluster = Cluster::new(Backend::Postgres, 6_000, 50, "").await;
    start_replicas(&mut cluster, 3, &[("NOTIFIER_JOB_SIZE", "500")]).await;
    cluster.publish(EVENT).await;

    cluster.wait_delivered(1_800, Duration::from_secs(60)).await;
    cluster.kill(0);
    assert!(cluster.delivered() < 6_000, "killed mid-event");

    // Each device once, but for the pushes the killed replica had in flight (at most
    // CONCURRENCY, shared by its jobs) and those each of its jobs at once (4, the default
    // max_concurrent_events) finished since its last checkpoint (every CONCURRENCY / 5).
    let repeats = CONCURRENCY + 4 * (CONCURRENCY / 5);
    cluster
        .assert_everyone_got(EVENT_ID, 1, repeats, Duration::from_secs(90))
        .await;
    let logs = cluster.logs();
    assert!(
        logs.contains("Event split into jobs for every replica."),
        "{logs}"
    );
    assert!(
        replicas_logging(&cluster, "\"Job processed.\"") >= 2,
        "the jobs were shared:\n{logs}"
    );
    // One summary for the whole event, written by whichever replica finished it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.processed_by(EVENT_ID), 1, "{logs}");
}

#[tokio::test]
async fn three_replicas_share_one_pace_under_the_providers_quota() {
    // The stand-in takes 50 sends in any 5 s (10 a second); the deployment paces at 8 a second,
    // so any 5 s holds at most 40 and the half second of budget at the start.
    let quota = StandInConfig {
        fcm_quota_per_minute: 50,
        fcm_quota_window: Duration::from_secs(5),
        ..Default::default()
    };
    let devices = 80;
    let mut cluster = Cluster::with_stand_in(Backend::Postgres, devices, quota, "").await;
    let env = [("NOTIFIER_JOB_SIZE", "27"), ("FCM_QUOTA_PER_MINUTE", "480")];
    start_replicas(&mut cluster, 3, &env).await;
    let started = Instant::now();
    cluster.publish(EVENT).await;

    cluster
        .assert_everyone_got(EVENT_ID, 1, 0, Duration::from_secs(60))
        .await;
    let took = started.elapsed().as_secs_f64();
    let errors = cluster.stand_in.counters.snapshot()["errors"].clone();
    assert!(
        errors.get("QUOTA_EXCEEDED").is_none(),
        "no send over the quota: {errors}\n{}",
        cluster.logs()
    );
    // 80 sends at 8 a second, less the half second of budget there is at the start.
    let floor = (devices as f64 - 4.0) / 8.0;
    assert!(
        took >= floor * 0.9,
        "paced: {took:.1} s for a {floor:.1} s floor"
    );
    assert!(
        took <= floor * 1.5 + 3.0,
        "not slower than the pace: {took:.1} s"
    );
    assert!(
        replicas_logging(&cluster, "\"Job processed.\"") >= 2,
        "the replicas shared the event:\n{}",
        cluster.logs()
    );
}

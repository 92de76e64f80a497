//! One owner for every piece of work (contract §11): real replicas (the fault tests' [`Cluster`])
//! put through what outside tests found on the paths built after the first: a dry-run replica
//! beside a live one, a slow provider behind `POST /push`, a replica frozen past its lease, a
//! split cut short, a retried request, a dry-run deployment's status, and Redis losing
//! everything mid split event. Each test names its bound: nothing lost, and repeats at most what
//! the owner that lost its claim had in flight (plus one checkpoint's worth a job).

use std::time::{Duration, Instant};

use notifier::Backend;
use serde_json::{Value, json};
use stand_in::{StandIn, StandInConfig};

use crate::faults::{CONCURRENCY, Cluster};
use crate::gaurun::{android_tokens, post, start_api_replica, wait_unique};
use crate::helpers::{OwnRedis, OwnRedisOptions};

const EVENT: &str = r#"{"talk_id": 1}"#;
const EVENT_ID: &str = "talk_posted:1";
/// What a replica killed or frozen mid split event may have sent that another sends again: its
/// pushes in flight (at most CONCURRENCY, shared by its jobs) and those each of its jobs at
/// once (4, the default max_concurrent_events) finished since its last checkpoint (written
/// every CONCURRENCY / 5).
const SPLIT_REPEATS: u64 = CONCURRENCY + 4 * (CONCURRENCY / 5);

async fn replicas(cluster: &mut Cluster, n: usize, env: &[(&str, &str)]) {
    for _ in 0..n {
        cluster.start_replica(env).await;
    }
    cluster.wait_subscribed(n as i64).await;
}

#[tokio::test]
async fn a_live_and_a_dry_run_replica_on_one_channel_each_do_their_own_work_completely() {
    notifier::install_crypto_provider();
    let mut cluster = Cluster::new(Backend::Postgres, 6_000, 5, "").await;
    let split = ("NOTIFIER_JOB_SIZE", "500");
    let live = start_api_replica(&mut cluster, &[split]).await;
    // A staging box left without APP_ENV=production, on the same Redis and channel.
    let dry = start_api_replica(&mut cluster, &[split, ("NOTIFIER_SEND_MODE", "dry-run")]).await;
    cluster.wait_subscribed(2).await;
    cluster.publish(EVENT).await;
    for (n, base) in [&live, &live].into_iter().enumerate() {
        let tokens = android_tokens(&format!("api{n}"), 0..100);
        assert_eq!(post(base, &tokens).await.0, 200);
    }
    // And a request to the dry-run replica: its own mode's, never sent.
    assert_eq!(post(&dry, &android_tokens("dry", 0..50)).await.0, 200);

    wait_unique(&cluster, 6_000 + 200).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (cluster.unique(), cluster.duplicates()),
        (6_200, 0),
        "each device and token once, none from the dry run:\n{}",
        cluster.logs()
    );
    let dry_log = cluster.log(1);
    assert!(
        dry_log.contains("Dry run: would push."),
        "{}",
        cluster.logs()
    );
    let processed = |log: &str| {
        log.lines()
            .any(|l| l.contains("\"Event processed.\"") && l.contains("\"dry_run\":true"))
    };
    for _ in 0..100 {
        if processed(&cluster.log(1)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        processed(&cluster.log(1)),
        "the dry run's own summary:\n{}",
        cluster.logs()
    );
    assert!(
        !cluster.log(0).contains("Dry run: would push."),
        "the live replica took no dry-run work"
    );
}

#[tokio::test]
async fn post_push_behind_a_slow_provider_sends_each_token_once() {
    notifier::install_crypto_provider();
    let slow = StandInConfig {
        latency: Duration::from_millis(300),
        ..Default::default()
    };
    let redis = OwnRedis::start().await;
    let mut cluster = Cluster::with_lease(Backend::Postgres, 0, slow, "", 4, redis).await;
    let base = start_api_replica(&mut cluster, &[("NOTIFIER_CONCURRENCY", "16")]).await;
    // Entries wait far longer than a lease for the few slots: nothing may take them back.
    let requests = 24;
    for r in 0..requests {
        let tokens = android_tokens(&format!("slow{r}"), 0..40);
        assert_eq!(post(&base, &tokens).await.0, 200);
    }
    wait_unique(&cluster, requests * 40).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (cluster.unique(), cluster.duplicates()),
        (requests * 40, 0),
        "{}",
        cluster.logs()
    );
}

#[tokio::test]
async fn a_replica_frozen_past_its_lease_sends_nothing_when_it_wakes() {
    let mut cluster = Cluster::new(Backend::Postgres, 20_000, 100, "").await;
    // Replica 0 sends to a stand-in of its own, so what it sends after it wakes can be told.
    let own = StandIn::start(StandInConfig {
        latency: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let own_dir = tempfile::tempdir().unwrap();
    own.write_files(own_dir.path()).unwrap();
    let (endpoint, ca) = (own.tls_endpoint(), own_dir.path().join("ca.pem"));
    let account = own_dir.path().join("service-account.json");
    let split = ("NOTIFIER_JOB_SIZE", "1000");
    cluster
        .start_replica(&[
            split,
            ("FCM_ENDPOINT", &endpoint),
            ("NOTIFIER_EXTRA_CA_FILE", ca.to_str().unwrap()),
            ("GOOGLE_APPLICATION_CREDENTIALS", account.to_str().unwrap()),
        ])
        .await;
    cluster.start_replica(&[split]).await;
    cluster.wait_subscribed(2).await;
    cluster.publish(EVENT).await;
    let sent_by = |s: &StandIn| s.counters.snapshot()["delivered"].as_u64().unwrap();
    let started = Instant::now();
    while sent_by(&own) < 1_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.freeze(0);
    // Frozen until the other replica, having taken over whatever it held once its lease (2 s)
    // ran out, has sent every device: nothing is left that the frozen one may still send.
    let started = Instant::now();
    let got = |id: u64| {
        let token = format!("tok-{id:08}");
        own.counters.deliveries(&token, EVENT_ID)
            + cluster.stand_in.counters.deliveries(&token, EVENT_ID)
    };
    while (1..=20_000).any(|id| got(id) == 0) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before_waking = sent_by(&own);
    cluster.thaw(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        sent_by(&own),
        before_waking,
        "the frozen replica sent pushes after it woke:\n{}",
        cluster.logs()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let repeats: u64 = (1..=20_000).map(|id| u64::from(got(id)) - 1).sum();
    assert!(
        repeats <= SPLIT_REPEATS,
        "{repeats} repeats, at most {SPLIT_REPEATS}"
    );
    assert!(
        cluster.log(0).contains("Another run took this unit over"),
        "the frozen replica found out it lost its jobs:\n{}",
        cluster.logs()
    );
}

/// The audience query of the shipped file, made slow by one 50 ms sleep a query: each boundary
/// probe of a split takes that long, so a split of many jobs takes seconds. One event at a time:
/// the replica that cuts runs none of its jobs meanwhile, so what it queued waits, unclaimed.
const SLOW_PROBES: &str = r#"
[service]
max_concurrent_events = 1

[queries]
audience = """
SELECT d.id AS device_id, d.user_id AS user_id, d.provider AS provider, d.platform AS platform,
       d.token AS token, u.locale AS locale, d.updated_at AS updated_at, d.app AS app
FROM devices d
LEFT JOIN users u ON u.id = d.user_id
WHERE d.id > :after_id
  AND d.provider = :provider
  AND d.disabled_at IS NULL
  AND (:author_id IS NULL OR d.user_id <> :author_id)
  AND EXISTS (SELECT 1 FROM clips c WHERE c.user_id = d.user_id AND c.program_id = :program_id)
  AND (SELECT 1 FROM pg_sleep(0.05)) = 1
ORDER BY d.id
"""
"#;

#[tokio::test]
async fn a_split_cut_short_is_redone_with_cut_points_that_miss_no_device_and_repeat_none() {
    let mut cluster = Cluster::new(Backend::Postgres, 8_000, 5, SLOW_PROBES).await;
    let split = [("NOTIFIER_JOB_SIZE", "100")];
    replicas(&mut cluster, 1, &split).await;
    cluster.publish(EVENT).await;
    // 80 jobs, two probes each at 50 ms: the cutting takes about 8 s. Killed in the middle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !cluster.log(0).contains("Event split into jobs"),
        "still cutting when killed:\n{}",
        cluster.logs()
    );
    cluster.kill(0);
    // Meanwhile the audience changes below the first cuts: every later cut moves.
    cluster
        .db
        .execute(&["DELETE FROM devices WHERE id <= 150"])
        .await;
    let after_kill = cluster.delivered();
    cluster.start_replica(&split).await;
    let remaining = 8_000 - 150;
    let started = Instant::now();
    while cluster.unique() < remaining + after_kill.min(150)
        && started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in [151u64, 4_000, 8_000] {
        let token = format!("tok-{id:08}");
        assert_eq!(
            cluster.stand_in.counters.deliveries(&token, EVENT_ID),
            1,
            "{token}:\n{}",
            cluster.logs()
        );
    }
    assert!(
        cluster.unique() >= remaining,
        "lost none: {}",
        cluster.unique()
    );
    assert_eq!(cluster.duplicates(), 0, "{}", cluster.logs());
}

#[tokio::test]
async fn a_post_push_retried_with_the_same_idempotency_key_is_sent_once() {
    notifier::install_crypto_provider();
    let mut cluster = Cluster::new(Backend::Postgres, 0, 5, "").await;
    let base = start_api_replica(&mut cluster, &[]).await;
    let tokens = android_tokens("retried", 0..100);
    // The client's first try timed out after the append; its retry carries the same key.
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(format!("{base}/push"))
            .header("Idempotency-Key", "order-42-push")
            .json(&tokens)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let again = send().await.unwrap();
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"message": "ok"})
    );
    wait_unique(&cluster, 100).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((cluster.delivered(), cluster.duplicates()), (100, 0));
}

#[tokio::test]
async fn a_dry_run_deployment_s_event_reaches_done_with_its_counts() {
    notifier::install_crypto_provider();
    let mut cluster = Cluster::new(Backend::Postgres, 40, 5, "").await;
    let base = start_api_replica(&mut cluster, &[("NOTIFIER_SEND_MODE", "dry-run")]).await;
    let client = reqwest::Client::new();
    let posted = client
        .post(format!("{base}/v1/events"))
        .json(&json!({"talk_id": 1, "event_id": "dry-status"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 202);
    let mut status = Value::Null;
    for _ in 0..200 {
        let r = client
            .get(format!("{base}/v1/events/dry-status"))
            .send()
            .await
            .unwrap();
        status = r.json().await.unwrap();
        if status["state"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (&status["state"], &status["recipients"], &status["sent"]),
        (&json!("done"), &json!(40), &json!(40)),
        "{status}\n{}",
        cluster.logs()
    );
    assert_eq!(cluster.delivered(), 0, "a dry run contacts no provider");
}

#[tokio::test]
async fn redis_restarted_empty_mid_split_event_loses_no_device() {
    let mut cluster = Cluster::new(Backend::Postgres, 20_000, 50, "").await;
    // 20 jobs, at most 8 running at once: most wait in the stream when Redis loses it.
    replicas(&mut cluster, 2, &[("NOTIFIER_JOB_SIZE", "1000")]).await;
    cluster.publish(EVENT).await;
    cluster.wait_delivered(4_000, Duration::from_secs(60)).await;
    // No persistence: the claims, the plan, the job stream and the totals are all gone.
    cluster.redis.restart().await;
    // The jobs finished in the second before the loss (the event's owner reads their totals
    // every second) may be sent again: at most the 8 that run at once, besides the usual repeats.
    cluster
        .assert_everyone_got(
            EVENT_ID,
            1,
            8 * 1_000 + SPLIT_REPEATS,
            Duration::from_secs(120),
        )
        .await;
    assert!(
        cluster.logged("Redis had lost the event's jobs"),
        "the owner queued them again:\n{}",
        cluster.logs()
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_from_its_aof_mid_split_event_loses_no_device() {
    let aof = OwnRedisOptions {
        args: vec!["--appendonly".into(), "yes".into()],
        ..Default::default()
    };
    let redis = OwnRedis::start_with(aof, |port| {
        redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap()
    })
    .await;
    let stand_in = StandInConfig {
        latency: Duration::from_millis(50),
        ..Default::default()
    };
    let mut cluster = Cluster::with_lease(Backend::Postgres, 20_000, stand_in, "", 2, redis).await;
    replicas(&mut cluster, 2, &[("NOTIFIER_JOB_SIZE", "2000")]).await;
    cluster.publish(EVENT).await;
    cluster.wait_delivered(4_000, Duration::from_secs(60)).await;
    // SIGKILL: what was written before is in the AOF (appended before each reply).
    cluster.redis.restart().await;
    cluster
        .assert_everyone_got(EVENT_ID, 1, SPLIT_REPEATS, Duration::from_secs(120))
        .await;
}

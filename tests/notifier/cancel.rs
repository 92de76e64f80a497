//! Stopping a fan-out (contract §12): `DELETE /v1/events/{id}` and `notifier cancel` stop an
//! event on every replica within two seconds (pushes in flight finish and are counted), its
//! queued jobs are dropped, it ends `cancelled` with the counts it reached, and a later publish
//! within the dedup window sends nothing. Real replicas (the fault tests' [`Cluster`]).

use std::time::{Duration, Instant};

use notifier::Backend;
use serde_json::{Value, json};

use crate::faults::{BIN, Cluster};
use crate::gaurun::start_api_replica;

const EVENT: &str = r#"{"talk_id": 1}"#;
const EVENT_ID: &str = "talk_posted:1";

/// The event's status once it is `cancelled`, waiting up to 30 s.
async fn cancelled(base: &str) -> Value {
    let client = reqwest::Client::new();
    let mut status = Value::Null;
    for _ in 0..300 {
        let r = client
            .get(format!("{base}/v1/events/{EVENT_ID}"))
            .send()
            .await
            .unwrap();
        status = r.json().await.unwrap();
        if status["state"] == "cancelled" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not cancelled: {status}");
}

/// Deliveries stop within `within` of `since`: none more in the three seconds after.
async fn stopped(cluster: &Cluster, since: Instant, within: Duration) -> u64 {
    tokio::time::sleep((since + within).saturating_duration_since(Instant::now())).await;
    let then = cluster.delivered();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cluster.delivered(),
        then,
        "pushes went on more than {within:?} after the cancel was answered:\n{}",
        cluster.logs()
    );
    then
}

#[tokio::test]
async fn a_cancelled_split_event_stops_on_every_replica_within_two_seconds_and_is_not_run_again() {
    notifier::install_crypto_provider();
    let mut cluster = Cluster::new(Backend::Postgres, 20_000, 100, "").await;
    let split = ("NOTIFIER_JOB_SIZE", "2000");
    let base = start_api_replica(&mut cluster, &[split]).await;
    start_api_replica(&mut cluster, &[split]).await;
    cluster.wait_subscribed(2).await;
    cluster.publish(EVENT).await;
    cluster.wait_delivered(4_000, Duration::from_secs(60)).await;

    let r = reqwest::Client::new()
        .delete(format!("{base}/v1/events/{EVENT_ID}"))
        .send()
        .await
        .unwrap();
    let answered = Instant::now();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"event_id": EVENT_ID, "state": "cancelling"})
    );
    let delivered = stopped(&cluster, answered, Duration::from_secs(2)).await;
    assert!(delivered < 20_000, "cut short: {delivered}");
    let status = cancelled(&base).await;
    assert_eq!(
        status["sent"],
        json!(delivered),
        "the counts reached: {status}"
    );
    assert_eq!(cluster.duplicates(), 0);

    cluster.publish(EVENT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cluster.delivered(),
        delivered,
        "a later publish sends nothing"
    );
    let lines =
        |text: &str| -> usize { (0..2).map(|n| cluster.log(n).matches(text).count()).sum() };
    assert_eq!(lines("\"Event cancelled.\""), 1, "{}", cluster.logs());
    assert_eq!(lines("\"Event processed.\""), 0, "{}", cluster.logs());
    let again = reqwest::Client::new()
        .delete(format!("{base}/v1/events/{EVENT_ID}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status().as_u16(),
        202,
        "cancelled: the same answer, nothing more"
    );
    let unknown = reqwest::Client::new()
        .delete(format!("{base}/v1/events/no-such-event"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

#[tokio::test]
async fn notifier_cancel_stops_an_event_running_whole_and_a_done_one_is_too_late() {
    notifier::install_crypto_provider();
    let mut cluster = Cluster::new(Backend::Postgres, 8_000, 100, "").await;
    let base = start_api_replica(&mut cluster, &[("NOTIFIER_JOB_SIZE", "0")]).await;
    cluster.wait_subscribed(1).await;
    cluster.publish(EVENT).await;
    cluster.wait_delivered(1_000, Duration::from_secs(60)).await;

    let cancel = |event: &'static str| {
        let d = cluster.dir.path();
        std::process::Command::new(BIN)
            .env_clear()
            .env("NOTIFIER_CONFIG", d.join("notifier.toml"))
            .env("APP_ENV", "production")
            .env(
                "GOOGLE_APPLICATION_CREDENTIALS",
                d.join("service-account.json"),
            )
            .env("REDIS_URL", cluster.redis.url())
            .env("NOTIFIER_CHANNEL", &cluster.channel)
            .args(["cancel", event])
            .output()
            .unwrap()
    };
    let out = cancel(EVENT_ID);
    let answered = Instant::now();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Cancelling"), "{text}");
    let delivered = stopped(&cluster, answered, Duration::from_secs(2)).await;
    assert!(delivered < 8_000);
    assert_eq!(cancelled(&base).await["sent"], json!(delivered));
    let unknown = cancel("no-such-event");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no event no-such-event"));
}

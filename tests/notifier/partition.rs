//! An owner cut off from Redis while it sends: the others take its unit over once its lease
//! runs out, and resume from the checkpoint it last stored. Its renewals had kept its fence open
//! for half a lease while no checkpoint could be stored, so everything it sent then came twice
//! (the fault campaign's round 45: 349 repeats against a bound of 220). A run now holds new
//! pushes while more than two checkpoints' worth of finished ones wait to be stored.

use std::time::{Duration, Instant};

use notifier::Backend;

use crate::faults::{CONCURRENCY, Cluster};
use crate::helpers::{Partition, address};

/// What the owner cut off may repeat: its pushes in flight, and the finished pushes it may hold
/// unsaved (two checkpoints' worth, a checkpoint every CONCURRENCY / 5).
const CUT_OFF_REPEATS: u64 = CONCURRENCY + 2 * (CONCURRENCY / 5);

#[tokio::test]
async fn an_owner_cut_off_from_redis_past_its_lease_repeats_at_most_its_in_flight_and_unsaved_pushes()
 {
    notifier::install_crypto_provider();
    let devices = 8_000;
    let mut cluster = Cluster::new(Backend::Postgres, devices, 50, "").await;
    let hop = Partition::start(address(&cluster.redis.url())).await;
    let owner = cluster
        .start_replica(&[("REDIS_URL", hop.redis_url().as_str())])
        .await;
    cluster.wait_subscribed(1).await;
    cluster.publish(r#"{"talk_id": 1}"#).await;
    cluster.wait_delivered(1_000, Duration::from_secs(30)).await;
    let other = cluster.start_replica(&[]).await;

    hop.cut();
    let cut_at = Instant::now();
    // The other replica takes the event over once the owner's lease (2 s) runs out.
    let taken_over = |log: &str| log.contains("Resuming an event another run left unfinished.");
    while !taken_over(&cluster.log(other)) {
        assert!(
            cut_at.elapsed() < Duration::from_secs(20),
            "no takeover while the owner was cut off:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hop.heal();

    cluster
        .wait_delivered(devices, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let repeats = cluster.duplicates();
    assert_eq!(
        cluster.unique(),
        devices,
        "nothing lost:\n{}",
        cluster.logs()
    );
    assert!(
        repeats <= CUT_OFF_REPEATS,
        "{repeats} repeats, at most {CUT_OFF_REPEATS}:\n{}",
        cluster.log(owner)
    );
}

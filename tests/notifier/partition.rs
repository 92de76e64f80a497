//! An owner cut off from Redis while it sends: the others take its unit over once its lease
//! runs out, and resume from the checkpoint it last stored. Its renewals had kept its fence open
//! for half a lease while no checkpoint could be stored, so everything it sent then came twice
//! (the fault campaign's round 45: 349 repeats against a bound of 220). A run now holds new
//! pushes while more than two checkpoints' worth of finished ones wait to be stored.
//!
//! A push gives its slot back before it settles, so one settling was neither in flight nor
//! finished, and the pushes handed out in its place were outside the bound: with the prune
//! statements waiting on a row lock, the owner handed out its whole audience, and the takeover
//! sent again every push still settling. Settling pushes now count as unsaved.

use std::time::{Duration, Instant};

use notifier::Backend;
use sqlx::Connection;

use crate::faults::{CONCURRENCY, Cluster};
use crate::helpers::{Partition, address};

/// What the owner cut off may repeat: its pushes in flight, and the finished pushes it may hold
/// unsaved (two checkpoints' worth, a checkpoint every CONCURRENCY / 5).
const CUT_OFF_REPEATS: u64 = CONCURRENCY + 2 * (CONCURRENCY / 5);

/// Starts the owner, its Redis connection through a hop the test can cut, and publishes the
/// event to it.
async fn owner_behind_a_hop(cluster: &mut Cluster) -> (Partition, usize) {
    let hop = Partition::start(address(&cluster.redis.url())).await;
    let owner = cluster
        .start_replica(&[("REDIS_URL", hop.redis_url().as_str())])
        .await;
    cluster.wait_subscribed(1).await;
    cluster.publish(r#"{"talk_id": 1}"#).await;
    (hop, owner)
}

/// Starts another replica and cuts the owner off until it takes the event over, once the
/// owner's lease (2 s) runs out; then heals the cut.
async fn cut_until_taken_over(cluster: &mut Cluster, hop: &Partition) {
    let other = cluster.start_replica(&[]).await;
    hop.cut();
    let cut_at = Instant::now();
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
}

#[tokio::test]
async fn an_owner_cut_off_from_redis_past_its_lease_repeats_at_most_its_in_flight_and_unsaved_pushes()
 {
    notifier::install_crypto_provider();
    let devices = 8_000;
    let mut cluster = Cluster::new(Backend::Postgres, devices, 50, "").await;
    let (hop, owner) = owner_behind_a_hop(&mut cluster).await;
    cluster.wait_delivered(1_000, Duration::from_secs(30)).await;
    cut_until_taken_over(&mut cluster, &hop).await;

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

/// FCM requests the stand-in answered 404 UNREGISTERED.
fn unregistered(cluster: &Cluster) -> u64 {
    cluster.stand_in.counters.snapshot()["errors"]["UNREGISTERED"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until the stand-in's UNREGISTERED answers reach `at_least` and then stop rising for a
/// second (or reach `all`): the sender has stalled or sent everything. Returns the count.
async fn wait_unregistered_settle(
    cluster: &Cluster,
    at_least: u64,
    all: u64,
    within: Duration,
) -> u64 {
    let started = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let now = unregistered(cluster);
        if now >= all
            || (now >= at_least && last.0 == now && last.1.elapsed() > Duration::from_secs(1))
        {
            return now;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
        assert!(
            started.elapsed() < within,
            "{now} UNREGISTERED answers after {within:?}, waiting for {at_least}:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_owner_cut_off_while_its_prunes_wait_on_a_row_lock_repeats_at_most_its_in_flight_and_unsaved_pushes()
 {
    notifier::install_crypto_provider();
    // More dead tokens than the pruner holds while its statements wait (about 11,000): the pushes
    // after them wait, settling, with their slots given back.
    let devices = 15_000;
    let mut cluster = Cluster::new(Backend::Postgres, devices, 10, "").await;
    cluster
        .db
        .execute(&["UPDATE devices SET token = 'unregistered-' || id"])
        .await;
    // The app's own transaction holds every device row: each prune statement waits for it.
    let mut holder = sqlx::PgConnection::connect(&cluster.db.url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", address(&cluster.db.url)));
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT id FROM devices FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let (hop, owner) = owner_behind_a_hop(&mut cluster).await;
    let sent = wait_unregistered_settle(&cluster, 5_000, devices, Duration::from_secs(60)).await;
    cut_until_taken_over(&mut cluster, &hop).await;
    // The takeover sends the rest, and its prunes wait on the lock too; then the app commits.
    wait_unregistered_settle(&cluster, devices, u64::MAX, Duration::from_secs(60)).await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    let started = Instant::now();
    while (cluster.db.disabled().await.len() as u64) < devices {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {devices} devices pruned:\n{}",
            cluster.db.disabled().await.len(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Every device pruned: each token reached the provider, nothing was lost.
    let repeats = unregistered(&cluster) - devices;
    assert!(
        repeats <= CUT_OFF_REPEATS,
        "{repeats} repeats, at most {CUT_OFF_REPEATS} (the owner had {sent} answers when cut off):\n{}",
        cluster.log(owner)
    );
}

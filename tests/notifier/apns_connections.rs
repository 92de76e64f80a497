//! APNs connections against the stand-in acting as Apple does: a GOAWAY mid-burst loses no push
//! and sends none twice, and a stream limit that starts at one and is raised after the first
//! answer is honoured throughout. Pushes go through the shipped transport.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use notifier::push::{PushOutcome, Pusher};
use stand_in::StandInConfig;

use crate::apns_tokens::{Apple, TestClock, push};

/// `n` pushes at once, each its own task as the fan-out sends them; their outcomes.
async fn burst(pusher: Arc<dyn Pusher>, n: usize) -> Vec<PushOutcome> {
    let tasks = (0..n).map(|i| {
        let pusher = pusher.clone();
        tokio::spawn(async move { pusher.push(&push(&format!("device-{i}"), "burst")).await })
    });
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|done| done.expect("the push task ends"))
        .collect()
}

#[tokio::test]
async fn a_goaway_mid_burst_loses_no_push_and_sends_none_twice() {
    let apple = Apple::start(StandInConfig {
        // The first connection goes away after its 200th stream, with pushes still streaming;
        // the 100 left fit on the next connection before it would go away in turn.
        goaway_after: Some(200),
        latency: Duration::from_millis(20),
        ..StandInConfig::default()
    })
    .await;
    let pusher = Arc::new(apple.pusher(apple.transport(1, TestClock::offset(0))));
    let outcomes = burst(pusher, 300).await;
    let undelivered: Vec<_> = outcomes
        .iter()
        .filter(|o| **o != PushOutcome::Delivered)
        .collect();
    assert!(undelivered.is_empty(), "{undelivered:?}");
    let stats = apple.stats();
    assert_eq!(stats["apns"]["goaways"], 1, "{stats}");
    assert_eq!(stats["delivered"], 300, "{stats}");
    assert_eq!(stats["unique_delivered"], 300, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    // The rest went over one new connection, not one per push.
    assert_eq!(stats["connections"]["tls"], 2, "{stats}");
    // Some streams were sent after the last one the GOAWAY kept, and came back unprocessed.
    assert!(
        stats["apns"]["refused_after_goaway"].as_u64() >= Some(1),
        "{stats}"
    );
}

#[tokio::test]
async fn a_stream_limit_of_one_raised_after_the_first_answer_is_honoured() {
    let apple = Apple::start(StandInConfig {
        initial_streams: Some(1),
        max_streams: 1000,
        latency: Duration::from_millis(30),
        ..StandInConfig::default()
    })
    .await;
    let pusher = Arc::new(apple.pusher(apple.transport(1, TestClock::offset(0))));
    let outcomes = burst(pusher, 250).await;
    assert!(
        outcomes.iter().all(|o| *o == PushOutcome::Delivered),
        "{outcomes:?}"
    );
    let stats = apple.stats();
    assert_eq!(stats["delivered"], 250, "{stats}");
    // Never more in flight than the connection allowed at the time…
    assert_eq!(stats["apns"]["stream_limit_exceeded"], 0, "{stats}");
    // …and the raise was used, up to the client's own cap of 100 per connection.
    let most = apple
        .stand_in
        .counters
        .max_in_flight
        .load(Ordering::Relaxed);
    assert_eq!(most, 100, "{stats}");
    assert_eq!(stats["connections"]["tls"], 1, "{stats}");
}

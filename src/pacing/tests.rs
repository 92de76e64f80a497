//! The pacer against the real Redis on 127.0.0.1:6379 (each test under a prefix of its own), and
//! against no Redis at all.

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use super::shared::{DECREASE, RECOVERY_PER_SECOND};
use super::*;

fn prefix() -> String {
    format!("test:pacing:{:016x}:", fastrand::u64(..))
}

fn client(url: &str) -> redis::Client {
    redis::Client::open(url).expect("a valid URL")
}

/// Runs `tasks` pushes in a loop on each pacer for `run`; returns when each permit came.
async fn send_for(pacers: &[Pacer], tasks: usize, run: Duration) -> Vec<Duration> {
    let start = Instant::now();
    let times = Arc::new(StdMutex::new(Vec::new()));
    let mut handles = Vec::new();
    for pacer in pacers {
        for _ in 0..tasks {
            let (pacer, times) = (pacer.clone(), Arc::clone(&times));
            handles.push(tokio::spawn(async move {
                loop {
                    pacer.acquire().await;
                    let at = start.elapsed();
                    if at >= run {
                        break;
                    }
                    times.lock().unwrap().push(at);
                }
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut times = times.lock().unwrap().clone();
    times.sort();
    times
}

/// The most permits in any window of `width` starting at or after `from`.
fn busiest(times: &[Duration], from: Duration, width: Duration) -> usize {
    times
        .iter()
        .enumerate()
        .filter(|(_, t)| **t >= from)
        .map(|(i, t)| times[i..].iter().take_while(|u| **u < *t + width).count())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_smooth_rate_in_batches() {
    let prefix = prefix();
    let rate = 400.0;
    let pacers: Vec<Pacer> = (0..3)
        .map(|_| {
            Pacer::new(
                client("redis://127.0.0.1:6379"),
                &prefix,
                "default",
                "fcm",
                rate,
            )
        })
        .collect();
    let times = send_for(&pacers, 20, Duration::from_secs(3)).await;
    let sent = times.len() as f64;
    // Three seconds at the rate, plus at most the burst Redis lets accumulate.
    assert!(sent <= rate * (3.0 + BURST.as_secs_f64()) + 3.0, "{sent}");
    assert!(sent >= rate * 3.0 * 0.85, "{sent}");
    // Past the start's burst, any second holds about one second's share.
    let second = busiest(&times, Duration::from_secs(1), Duration::from_secs(1));
    assert!(second as f64 <= rate * 1.15, "{second} in one second");
    // A batch is 50 ms of the rate (20 permits): far fewer takes than pushes.
    let refills: u64 = pacers.iter().map(Pacer::refills).sum();
    assert!(
        refills as f64 <= sent / 5.0,
        "{refills} takes for {sent} pushes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_slows_every_replica_once_per_gap() {
    let prefix = prefix();
    let rate = 400.0;
    let a = Pacer::new(
        client("redis://127.0.0.1:6379"),
        &prefix,
        "default",
        "fcm",
        rate,
    );
    let b = Pacer::new(
        client("redis://127.0.0.1:6379"),
        &prefix,
        "default",
        "fcm",
        rate,
    );
    assert_eq!(a.quota_exceeded().await, Some(DECREASE));
    // The 429s of the same overshoot, from any replica, do not slow it again.
    assert_eq!(b.quota_exceeded().await, None);
    assert_eq!(a.quota_exceeded().await, None);
    let times = send_for(std::slice::from_ref(&b), 20, Duration::from_secs(3)).await;
    let second = busiest(&times, Duration::from_secs(1), Duration::from_secs(1)) as f64;
    let slowed = rate * (DECREASE + 2.0 * RECOVERY_PER_SECOND * 3.0);
    assert!(
        second <= slowed * 1.1,
        "{second} a second, slowed to {slowed}"
    );
    assert!(second >= rate * DECREASE * 0.85, "{second} a second");
    // Another provider's rate is its own.
    let apns = Pacer::new(
        client("redis://127.0.0.1:6379"),
        &prefix,
        "default",
        "apns",
        rate,
    );
    assert_eq!(apns.quota_exceeded().await, Some(DECREASE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_replica_paces_alone_after_a_bounded_wait() {
    // Nothing listens on port 1: the connection is refused at once.
    let alone = Pacer::new(
        client("redis://127.0.0.1:1"),
        &prefix(),
        "default",
        "fcm",
        200.0,
    );
    let started = Instant::now();
    alone.acquire().await;
    assert!(started.elapsed() <= REDIS_WAIT + Duration::from_millis(500));
    let times = send_for(std::slice::from_ref(&alone), 10, Duration::from_secs(2)).await;
    let sent = times.len() as f64;
    assert!(sent <= 200.0 * (2.0 + BURST.as_secs_f64()) + 2.0, "{sent}");
    assert!(sent >= 200.0 * 2.0 * 0.85, "{sent}");
    // The slow-down works alone too.
    assert_eq!(alone.quota_exceeded().await, Some(DECREASE));
}

#[tokio::test]
async fn an_unpaced_provider_never_waits() {
    let free = Pacer::new(
        client("redis://127.0.0.1:1"),
        &prefix(),
        "default",
        "apns",
        0.0,
    );
    let started = Instant::now();
    for _ in 0..10_000 {
        free.acquire().await;
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(free.refills(), 0);
    assert_eq!(free.quota_exceeded().await, None);
}

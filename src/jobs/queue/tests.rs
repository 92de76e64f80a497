//! The job stream against the real Redis on 127.0.0.1:6379, each test under a prefix of its own.

use std::time::Duration;

use super::*;
use crate::jobs::JobRange;

fn prefix() -> String {
    format!("test:jobs:{:016x}:", fastrand::u64(..))
}

async fn queue(prefix: &str, consumer: &str, idle_ms: u64) -> JobQueue {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    JobQueue::connect(client, prefix, consumer, Duration::from_millis(idle_ms))
        .await
        .unwrap()
}

fn job(number: u32) -> Job {
    Job {
        event_id: "e".into(),
        number,
        range: JobRange {
            after: i64::from(number) * 10,
            upto: Some(i64::from(number) * 10 + 10),
        },
        payload: "{}".into(),
    }
}

const BLOCK: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_dead_replicas_jobs_are_all_taken_over_through_the_cursor() {
    let prefix = prefix();
    let mut dead = queue(&prefix, "dead", 200).await;
    let mut alive = queue(&prefix, "alive", 200).await;
    for n in 0..250 {
        dead.add(&job(n)).await.unwrap();
    }
    let held = dead.next(BLOCK, 1000).await.unwrap();
    assert_eq!(held.len(), 250);
    assert!(held.iter().all(|d| !d.taken_over && d.job.is_some()));
    // Nothing new, and nothing idle long enough yet.
    assert!(alive.next(BLOCK, 1000).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(250)).await;
    alive.last_claim = None;
    // One XAUTOCLAIM returns at most 100: the cursor loop gathers the rest.
    let taken = alive.next(BLOCK, 1000).await.unwrap();
    assert_eq!(taken.len(), 250);
    assert!(taken.iter().all(|d| d.taken_over));
    let mut numbers: Vec<u32> = taken
        .iter()
        .filter_map(|d| d.job.as_ref())
        .map(|j| j.number)
        .collect();
    numbers.sort();
    assert_eq!(numbers, (0..250).collect::<Vec<_>>());
}

#[tokio::test]
async fn only_finished_entries_leave_the_stream_and_touched_ones_stay_put() {
    let prefix = prefix();
    let mut a = queue(&prefix, "a", 300).await;
    let mut b = queue(&prefix, "b", 300).await;
    a.add(&job(0)).await.unwrap();
    a.add(&job(1)).await.unwrap();
    let held = a.next(BLOCK, 10).await.unwrap();
    assert_eq!(held.len(), 2);
    a.finish(&held[0].entry).await.unwrap();
    assert_eq!(a.backlog().await.unwrap(), 1);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.touch(&held[1].entry).await.unwrap();
    }
    b.last_claim = None;
    assert!(
        b.next(BLOCK, 10).await.unwrap().is_empty(),
        "a touched entry is not idle"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    b.last_claim = None;
    let taken = b.next(BLOCK, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].job, Some(job(1)));
    b.finish(&taken[0].entry).await.unwrap();
    assert_eq!(b.backlog().await.unwrap(), 0);
}

#[tokio::test]
async fn a_lost_group_is_made_again_from_the_start_of_the_stream() {
    let prefix = prefix();
    let mut q = queue(&prefix, "a", 60_000).await;
    q.add(&job(0)).await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&q.key)
        .arg(GROUP)
        .query_async(&mut q.redis.clone())
        .await
        .unwrap();
    q.last_claim = Some(Instant::now());
    assert!(q.next(BLOCK, 10).await.unwrap().is_empty());
    q.last_claim = Some(Instant::now());
    let again = q.next(BLOCK, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job, Some(job(0)));
}

#[tokio::test]
async fn an_entry_that_is_no_job_is_delivered_as_none() {
    let prefix = prefix();
    let mut q = queue(&prefix, "a", 60_000).await;
    let _: String = q
        .redis
        .clone()
        .xadd(&q.key, "*", &[("junk", "1")])
        .await
        .unwrap();
    let got = q.next(BLOCK, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].job.is_none());
}

//! The stream consumer against the real Redis on 127.0.0.1:6379, each test on a stream of its own.

use std::time::Duration;

use super::*;
use crate::work::plan::{Job, JobRange, job_fields};

const GROUP: &str = "notifier";
const BLOCK: Duration = Duration::from_millis(100);

fn stream() -> String {
    format!("test:stream:{:016x}", fastrand::u64(..))
}

async fn reader(key: &str, consumer: &str, idle_ms: u64) -> StreamReader {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    StreamReader::connect(client, key, GROUP, consumer, Duration::from_millis(idle_ms))
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

async fn add(r: &StreamReader, job: &Job) {
    let fields: Vec<(String, Vec<u8>)> = job_fields(job)
        .into_iter()
        .map(|(k, v)| (k, redis::from_redis_value::<Vec<u8>>(v).unwrap()))
        .collect();
    let h = r.handle();
    let _: String = h.redis.clone().xadd(&h.key, "*", &fields).await.unwrap();
}

async fn len(r: &StreamReader) -> u64 {
    let h = r.handle();
    h.redis.clone().xlen(&h.key).await.unwrap()
}

fn numbers(entries: &[Entry]) -> Vec<u32> {
    let mut numbers: Vec<u32> = entries
        .iter()
        .filter_map(Job::from_entry)
        .map(|j| j.number)
        .collect();
    numbers.sort();
    numbers
}

#[tokio::test]
async fn a_dead_replicas_entries_are_all_taken_over_through_the_cursor() {
    let key = stream();
    let mut dead = reader(&key, "dead", 200).await;
    let mut alive = reader(&key, "alive", 200).await;
    for n in 0..250 {
        add(&dead, &job(n)).await;
    }
    let held = dead.next(BLOCK, 1000).await.unwrap();
    assert_eq!(held.len(), 250);
    assert!(held.iter().all(|e| !e.taken_over));
    // Nothing new, and nothing idle long enough yet.
    assert!(alive.next(BLOCK, 1000).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(250)).await;
    alive.last_claim = None;
    // One XAUTOCLAIM returns at most 100: the cursor loop gathers the rest.
    let taken = alive.next(BLOCK, 1000).await.unwrap();
    assert!(taken.iter().all(|e| e.taken_over));
    assert_eq!(numbers(&taken), (0..250).collect::<Vec<_>>());
}

#[tokio::test]
async fn only_finished_entries_leave_the_stream_and_touched_ones_stay_put() {
    let key = stream();
    let mut a = reader(&key, "a", 300).await;
    let mut b = reader(&key, "b", 300).await;
    add(&a, &job(0)).await;
    add(&a, &job(1)).await;
    let held = a.next(BLOCK, 10).await.unwrap();
    assert_eq!(held.len(), 2);
    a.handle().finish(&held[0].id).await.unwrap();
    assert_eq!(len(&a).await, 1);
    let touch = a.handle().touch(&held[1].id);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        touch.touch().await.unwrap();
    }
    b.last_claim = None;
    assert!(
        b.next(BLOCK, 10).await.unwrap().is_empty(),
        "a touched entry is not idle"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    b.last_claim = None;
    let taken = b.next(BLOCK, 10).await.unwrap();
    assert_eq!(numbers(&taken), [1]);
    b.handle().finish(&taken[0].id).await.unwrap();
    assert_eq!(len(&b).await, 0);
}

#[tokio::test]
async fn a_lost_group_is_made_again_from_the_start_of_the_stream() {
    let key = stream();
    let mut r = reader(&key, "a", 60_000).await;
    add(&r, &job(0)).await;
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&key)
        .arg(GROUP)
        .query_async(&mut r.handle().redis.clone())
        .await
        .unwrap();
    r.last_claim = Some(Instant::now());
    assert!(r.next(BLOCK, 10).await.unwrap().is_empty());
    r.last_claim = Some(Instant::now());
    let again = r.next(BLOCK, 10).await.unwrap();
    assert_eq!(numbers(&again), [0]);
}

#[tokio::test]
async fn a_replica_leaves_its_group_only_with_nothing_pending() {
    let key = stream();
    let mut a = reader(&key, "a", 60_000).await;
    add(&a, &job(0)).await;
    let held = a.next(BLOCK, 10).await.unwrap();
    a.leave().await;
    let consumers = |r: &StreamReader| {
        let h = r.handle().clone();
        async move {
            let info: Vec<redis::Value> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&h.key)
                .arg(&h.group)
                .query_async(&mut h.redis.clone())
                .await
                .unwrap();
            info.len()
        }
    };
    assert_eq!(
        consumers(&a).await,
        1,
        "its pending entry would be lost with it"
    );
    a.handle().finish(&held[0].id).await.unwrap();
    a.leave().await;
    assert_eq!(consumers(&a).await, 0);
}

#[tokio::test]
async fn a_stream_read_by_several_groups_is_trimmed_to_what_all_acknowledged() {
    let key = stream();
    let client = || redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let idle = Duration::from_secs(60);
    let mut live = StreamReader::connect(client(), &key, "notifier", "l", idle)
        .await
        .unwrap();
    let mut dry = StreamReader::connect(client(), &key, "notifier:dry-run", "d", idle)
        .await
        .unwrap();
    for n in 0..3 {
        add(&live, &job(n)).await;
    }
    let read_live = live.next(BLOCK, 10).await.unwrap();
    for e in &read_live {
        live.handle().ack(&e.id).await.unwrap();
    }
    let read_dry = dry.next(BLOCK, 10).await.unwrap();
    dry.handle().ack(&read_dry[0].id).await.unwrap();
    live.trim_acknowledged().await.unwrap();
    assert_eq!(
        len(&live).await,
        2,
        "the dry-run group still needs the last two"
    );
    for e in &read_dry[1..] {
        dry.handle().ack(&e.id).await.unwrap();
    }
    live.trim_acknowledged().await.unwrap();
    assert_eq!(len(&live).await, 0);
}

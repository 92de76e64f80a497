//! The claim scripts against the real Redis on 127.0.0.1:6379, each test under a prefix of its own.

use std::time::Duration;

use super::*;
use crate::work::plan::{Finished as Done, JobRange, Plan, Stored};
use crate::work::totals::Totals;

async fn claims(lease_ms: u64) -> Claims {
    let settings = crate::redis_client::RedisSettings {
        url: "redis://127.0.0.1:6379".into(),
        ping_interval_secs: 10,
        timeout_secs: 5,
        reconnect_initial_ms: 100,
        reconnect_max_ms: 1000,
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
    };
    let prefix = format!("test:claims:{:016x}:", fastrand::u64(..));
    let lease = Duration::from_millis(lease_ms);
    Claims::connect(
        &settings,
        &prefix,
        owner_name(),
        lease,
        Duration::from_secs(60),
    )
    .await
    .expect("Redis at 127.0.0.1:6379")
}

fn counts(sent: u64) -> Counts {
    vec![("sent".into(), sent), ("failed".into(), 1)]
}

async fn run(c: &Claims, key: &str, parent: Option<&str>) -> Held {
    match c.claim(key, "", "{}", parent).await.unwrap() {
        Claim::Run { held, .. } => held,
        other => panic!("{key} was not claimed: {other:?}"),
    }
}

#[tokio::test]
async fn a_run_taken_over_can_write_nothing_more() {
    let c = claims(200).await;
    let key = c.keys().event("e");
    let first = run(&c, &key, None).await;
    assert_eq!(c.claim(&key, "", "{}", None).await.unwrap(), Claim::Busy);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let Claim::Run {
        held: second,
        resume: Some(resume),
    } = c.claim(&key, "", "{}", None).await.unwrap()
    else {
        panic!("an expired lease is taken over");
    };
    assert_eq!((second.epoch, resume.attempts), (first.epoch + 1, 2));
    // Every write of the first run is refused: it was frozen past its lease.
    assert_eq!(c.renew(&first, "{}", "cp").await.unwrap(), Renewal::Lost);
    assert_eq!(
        c.checkpoint(&first, "{}", "cp", &counts(1)).await.unwrap(),
        Renewal::Lost
    );
    assert!(!c.release(&first, false, "cp", &counts(1)).await.unwrap());
    assert_eq!(
        c.finish(&first, Finished::Done, &counts(1), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        c.finish(&second, Finished::Done, &counts(2), None)
            .await
            .unwrap(),
        Some(Finished::Done)
    );
    assert_eq!(c.claim(&key, "", "{}", None).await.unwrap(), Claim::Done);
}

#[tokio::test]
async fn failures_count_against_the_attempts_and_stops_do_not() {
    let c = claims(60_000).await;
    let key = c.keys().event("e");
    let held = run(&c, &key, None).await;
    assert!(c.release(&held, false, "cp", &counts(3)).await.unwrap());
    let Claim::Run {
        held,
        resume: Some(resume),
    } = c.claim(&key, "", "{}", None).await.unwrap()
    else {
        panic!("a released claim is resumed at once");
    };
    assert_eq!((resume.failures, resume.checkpoint.as_str()), (0, "cp"));
    assert_eq!(resume.counts, counts(3));
    assert!(c.release(&held, true, "cp2", &counts(4)).await.unwrap());
    let Claim::Run {
        resume: Some(resume),
        ..
    } = c.claim(&key, "", "{}", None).await.unwrap()
    else {
        panic!("resumed");
    };
    assert_eq!(resume.failures, 1);
}

#[tokio::test]
async fn a_plan_is_stored_once_and_a_redo_keeps_its_cut_points() {
    let c = claims(60_000).await;
    let held = run(&c, &c.keys().event("e"), None).await;
    let plan = |cuts: &[i64]| Plan {
        ranges: cuts
            .windows(2)
            .map(|w| JobRange {
                after: w[0],
                upto: Some(w[1]),
            })
            .chain([JobRange {
                after: *cuts.last().unwrap(),
                upto: None,
            }])
            .collect(),
    };
    let first = plan(&[0, 500, 1000]);
    let stored = c
        .store_plan(&held, ("e", "{}"), &first, &Done::default())
        .await
        .unwrap();
    assert_eq!(stored, Stored::Planned(first.clone()));
    // A redo whose audience changed meanwhile cuts elsewhere: the stored cuts stand.
    let second = plan(&[0, 499, 998]);
    let stored = c
        .store_plan(&held, ("e", "{}"), &second, &Done::default())
        .await
        .unwrap();
    assert_eq!(stored, Stored::Existing(first.clone()));
    assert_eq!(c.stored_plan("e").await.unwrap(), Some(first));
    let mut redis = c.connection().unwrap();
    let queued: u64 = redis::AsyncCommands::xlen(&mut redis, c.keys().jobs())
        .await
        .unwrap();
    assert_eq!(queued, 3, "the jobs were queued once");
    let totals = Totals::read(&redis, &c.keys().totals("e")).await.unwrap();
    assert_eq!(totals.jobs, Some(3));
}

#[tokio::test]
async fn a_finished_job_counts_once_towards_its_event() {
    let c = claims(200).await;
    let held = run(&c, &c.keys().event("e"), None).await;
    let one = Plan {
        ranges: vec![
            JobRange {
                after: 0,
                upto: Some(9),
            },
            JobRange {
                after: 9,
                upto: None,
            },
        ],
    };
    c.store_plan(&held, ("e", "{}"), &one, &Done::default())
        .await
        .unwrap();
    let parent = c.keys().event("e");
    let job = run(&c, &c.keys().job("e", 0), Some(&parent)).await;
    let at = ("notifier", "0-1");
    assert!(
        c.finish_job(&job, Finished::Done, ("e", 0), at, &counts(5))
            .await
            .unwrap()
    );
    // A takeover that finishes it again (its first owner's end was recorded) adds nothing.
    let redis = c.connection().unwrap();
    let totals = Totals::read(&redis, &c.keys().totals("e")).await.unwrap();
    assert_eq!(
        (totals.finished.clone(), totals.complete()),
        (vec![0], false)
    );
    let again = c
        .finish_job(&job, Finished::Done, ("e", 0), at, &counts(5))
        .await
        .unwrap();
    assert!(again);
    let totals = Totals::read(&redis, &c.keys().totals("e")).await.unwrap();
    assert_eq!(
        totals.counts,
        [("failed".to_string(), 1), ("sent".to_string(), 5)]
    );
}

#[tokio::test]
async fn a_cancel_reaches_every_run_and_settles_the_jobs_not_started() {
    let c = claims(60_000).await;
    let event = c.keys().event("e");
    let held = run(&c, &event, None).await;
    let two = Plan {
        ranges: vec![
            JobRange {
                after: 0,
                upto: Some(9),
            },
            JobRange {
                after: 9,
                upto: None,
            },
        ],
    };
    c.store_plan(&held, ("e", "{}"), &two, &Done::default())
        .await
        .unwrap();
    let job0 = run(&c, &c.keys().job("e", 0), Some(&event)).await;
    assert_eq!(
        c.cancel("e", "notifier").await.unwrap(),
        Cancelling::Started
    );
    assert_eq!(
        c.cancel("e", "notifier").await.unwrap(),
        Cancelling::Already
    );
    assert_eq!(c.renew(&held, "{}", "").await.unwrap(), Renewal::Cancelled);
    assert_eq!(c.renew(&job0, "{}", "").await.unwrap(), Renewal::Cancelled);
    // Job 1 had not started: settled by the cancel, its entry gone.
    let job1 = c.keys().job("e", 1);
    assert_eq!(
        c.claim(&job1, "", "{}", Some(&event)).await.unwrap(),
        Claim::Done
    );
    let mut redis = c.connection().unwrap();
    let queued: u64 = redis::AsyncCommands::xlen(&mut redis, c.keys().jobs())
        .await
        .unwrap();
    assert_eq!(queued, 1, "only the started job's entry is left");
    let at = ("notifier", "");
    c.finish_job(&job0, Finished::Cancelled, ("e", 0), at, &counts(2))
        .await
        .unwrap();
    let totals = Totals::read(&redis, &c.keys().totals("e")).await.unwrap();
    assert!(totals.complete(), "{totals:?}");
    assert_eq!(
        c.finish(&held, Finished::Cancelled, &totals.counts, None)
            .await
            .unwrap(),
        Some(Finished::Cancelled)
    );
    assert_eq!(
        c.cancel("e", "notifier").await.unwrap(),
        Cancelling::Cancelled
    );
}

#[tokio::test]
async fn an_event_whose_jobs_ended_on_a_cancel_its_own_run_had_not_seen_yet_ends_cancelled() {
    // The race the console's browser test hit: the jobs' renewals saw the cancel and the jobs
    // ended, and the coordinator, whose own renewal had not come yet, found every job done and
    // ended the event `done` at 3,144 of 20,000 devices.
    let c = claims(60_000).await;
    let held = run(&c, &c.keys().event("e"), None).await;
    assert_eq!(
        c.cancel("e", "notifier").await.unwrap(),
        Cancelling::Started
    );
    assert_eq!(
        c.finish(&held, Finished::Done, &counts(3), None)
            .await
            .unwrap(),
        Some(Finished::Cancelled),
        "a run ending done while its event is being cancelled ends it cancelled"
    );
    assert_eq!(
        c.cancel("e", "notifier").await.unwrap(),
        Cancelling::Cancelled
    );
    // Without a cancel, done stays done.
    let other = run(&c, &c.keys().event("f"), None).await;
    assert_eq!(
        c.finish(&other, Finished::Done, &counts(3), None)
            .await
            .unwrap(),
        Some(Finished::Done)
    );
    assert_eq!(
        c.cancel("f", "notifier").await.unwrap(),
        Cancelling::TooLate
    );
}

#[tokio::test]
async fn only_a_known_unfinished_event_can_be_cancelled() {
    let c = claims(60_000).await;
    assert_eq!(
        c.cancel("nobody", "notifier").await.unwrap(),
        Cancelling::Unknown
    );
    let mut redis = c.connection().unwrap();
    let _: () = redis::AsyncCommands::set(&mut redis, c.keys().queued("q"), 1)
        .await
        .unwrap();
    assert_eq!(
        c.cancel("q", "notifier").await.unwrap(),
        Cancelling::Cancelled
    );
    assert_eq!(
        c.claim(&c.keys().event("q"), "event:q", "{}", None)
            .await
            .unwrap(),
        Claim::Done
    );
    let held = run(&c, &c.keys().event("d"), None).await;
    c.finish(&held, Finished::Done, &counts(1), None)
        .await
        .unwrap();
    assert_eq!(
        c.cancel("d", "notifier").await.unwrap(),
        Cancelling::TooLate
    );
}

#[tokio::test]
async fn a_run_whose_claim_redis_lost_writes_it_again() {
    let c = claims(60_000).await;
    let key = c.keys().event("e");
    let held = run(&c, &key, None).await;
    let mut redis = c.connection().unwrap();
    let _: () = redis::AsyncCommands::del(&mut redis, &key).await.unwrap();
    assert_eq!(
        c.renew(&held, "{}", "cp").await.unwrap(),
        Renewal::Recreated
    );
    assert_eq!(c.renew(&held, "{}", "cp").await.unwrap(), Renewal::Renewed);
    assert_eq!(c.claim(&key, "", "{}", None).await.unwrap(), Claim::Busy);
}

//! One event across the replicas (contract §8): the run that claimed an event larger than one
//! job plans it ([`EventRun::plan`]: cut once, stored with its jobs queued, or the stored plan of
//! an earlier run) and then sees its jobs through ([`EventRun::coordinate`]), holding the event's
//! claim (but not an event slot) until every job is done. Every replica takes jobs from the
//! deployment's stream (`super::jobs`), each under its own claim.
//!
//! Holding the claim is what lets the event survive Redis losing everything (a restart without
//! persistence): the owner keeps the plan and the totals it last read, and when its keeper finds
//! the claim gone it stores them again and queues the jobs not known finished. A cancel reaches
//! the jobs through this claim, and the event ends `cancelled` once they have all stopped. The
//! owner writes the event's one summary line, with the totals of all its jobs.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tracing::{info, warn};

use super::outcome::{EventError, EventOutcome, SplitError, Summary};
use super::run::{EventRun, Running, with_reasons};
use crate::content::Talk;
use crate::fanout::{Checkpoint, FanoutReport};
use crate::telemetry::ErrorChain;
use crate::work::claims::Finished;
use crate::work::fence::Shut;
use crate::work::plan::{AudienceBoundaries, Finished as Done, Plan, Stored};
use crate::work::totals::Totals;
use crate::work::{Counts, retry_redis};

/// How often the owner reads the totals of the jobs.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// After Redis lost the plan, how long the owner waits before queueing the jobs again: the jobs
/// still running renew (and so write again) their claims within a second, so the entries queued
/// again for them find their jobs busy rather than sending them a second time.
const REQUEUE_AFTER: Duration = Duration::from_secs(2);

impl EventRun<'_> {
    /// The event's plan when it is larger than one job and was not started whole: the stored
    /// one (a redo keeps its cut points), or cut now and stored with its jobs queued.
    pub(super) async fn plan(
        &self,
        talk: &Talk,
        running: &Running,
    ) -> Result<Option<Plan>, EventError> {
        let worker = self.worker;
        let size = worker.settings.service.job_size;
        if !worker.splits() || size == 0 {
            return Ok(None);
        }
        if let Some(resume) = &self.resume {
            let event_id = &self.event.event_id;
            let stored = retry_redis(|| worker.claims.stored_plan(event_id), &running.run_stop);
            if let Some(plan) = stored.await.map_err(SplitError::Plan)? {
                info!(
                    jobs = plan.jobs(),
                    "The event's jobs were planned by an earlier run; seeing them through."
                );
                return Ok(Some(plan));
            }
            if started_whole(&resume.checkpoint) {
                // It was run whole when it began, so it is resumed whole.
                return Ok(None);
            }
        }
        let probe = AudienceBoundaries::new(
            worker.db.clone(),
            &worker.settings.queries.audience,
            worker.db.backend(),
            talk.talk_id,
            talk.program_id,
            talk.author_id,
        )
        .map_err(SplitError::Query)?;
        let Some(plan) = Plan::cut(&probe, size)
            .await
            .map_err(SplitError::Database)?
        else {
            return Ok(None);
        };
        let (event_id, payload) = (self.event.event_id.as_str(), self.event.to_json());
        let claims = &worker.claims;
        let nothing_done = Done::default();
        let store = || claims.store_plan(&self.held, (event_id, &payload), &plan, &nothing_done);
        let stored = retry_redis(store, &running.run_stop)
            .await
            .map_err(SplitError::Plan)?;
        self.tell_total(&probe).await;
        Ok(Some(match stored {
            Stored::Planned(plan) => {
                info!(
                    jobs = plan.jobs(),
                    job_size = size,
                    "Event split into jobs for every replica."
                );
                plan
            }
            Stored::Existing(plan) => {
                info!(
                    jobs = plan.jobs(),
                    "The event's jobs were planned by an earlier run; seeing them through."
                );
                plan
            }
            Stored::Lost => {
                running.fence.shut(Shut::Lost);
                plan
            }
        }))
    }

    /// Stores how many devices the whole event has, so that its status and the console can tell
    /// how far it is while its jobs run; the split runs on without it when it cannot be counted.
    async fn tell_total(&self, probe: &AudienceBoundaries) {
        let total = match probe.count_after(0).await {
            Ok(total) => total,
            Err(e) => {
                warn!(error = %e, "Could not count the split event's devices.");
                return;
            }
        };
        let counts = vec![("total".to_string(), total)];
        let payload = self.event.to_json();
        let told = (self.worker.claims)
            .checkpoint(&self.held, &payload, "", &counts)
            .await;
        if let Err(e) = told {
            warn!(error = %ErrorChain(&e), "Could not store the split event's size.");
        }
    }

    /// Waits for every job of `plan` to finish, then records the event's end with their totals
    /// and writes its summary. Settles the claim itself: its outcome is final.
    pub(super) async fn coordinate(&self, running: &Running, plan: Plan) -> EventOutcome {
        let started = Instant::now();
        let worker = self.worker;
        let Some(redis) = worker.claims.connection() else {
            return EventOutcome::Coordinating;
        };
        let key = worker.claims.keys().totals(&self.event.event_id);
        let mut last = Totals::default();
        loop {
            if running.fence.shut_by() == Some(Shut::Lost) {
                warn!("Another run holds the event now; it sees its jobs through.");
                return EventOutcome::Lost;
            }
            tokio::select! {
                _ = running.run_stop.cancelled() => return self.hand_back(running).await,
                _ = running.recreated.notified() => self.requeue(running, &plan, &last).await,
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
            match Totals::read(&redis, &key).await {
                Ok(totals) if totals.jobs.is_some() => last = totals,
                // The plan stores the count of jobs with the totals, in one step: totals without
                // it are what is left after Redis lost them (whichever write of ours noticed the
                // lost claim first). The last totals read are kept, and what was lost queued again.
                Ok(_) => self.requeue(running, &plan, &last).await,
                Err(e) => warn!(error = %e, "Could not read the event's totals; looking again."),
            }
            if last.complete() {
                return self.complete(running, &last, started).await;
            }
            self.store_progress(&redis, &plan, &last).await;
        }
    }

    /// Stores the event's counts so far with its claim, where its status and the console read
    /// them: the finished jobs' totals and what the running ones stored at their last checkpoint.
    async fn store_progress(&self, redis: &ConnectionManager, plan: &Plan, last: &Totals) {
        const LIVE: [&str; 5] = ["recipients", "sent", "failed", "pruned", "skipped"];
        let keys = self.worker.claims.keys();
        let event_id = &self.event.event_id;
        let running: Vec<u32> = (0..plan.jobs())
            .filter(|n| !last.finished.contains(n))
            .collect();
        let mut pipe = redis::pipe();
        for n in &running {
            pipe.cmd("HMGET").arg(keys.job(event_id, *n));
            for name in LIVE {
                pipe.arg(format!("c:{name}"));
            }
        }
        let live: Vec<Vec<Option<u64>>> = match pipe.query_async(&mut redis.clone()).await {
            Ok(live) => live,
            Err(_) => return, // the next look tries again
        };
        let mut counts: Counts = last.counts.clone();
        for (i, name) in LIVE.iter().enumerate() {
            let running: u64 = live
                .iter()
                .filter_map(|job| job.get(i).copied().flatten())
                .sum();
            match counts.iter_mut().find(|(n, _)| n == name) {
                Some((_, count)) => *count += running,
                None => counts.push((name.to_string(), running)),
            }
        }
        // `total` is the event's, stored at the split: the jobs' own add up only as they end.
        counts.retain(|(name, _)| name != "total");
        let payload = self.event.to_json();
        let claims = &self.worker.claims;
        if let Err(e) = claims.checkpoint(&self.held, &payload, "", &counts).await {
            warn!(error = %ErrorChain(&e), "Could not store the split event's counts so far.");
        }
    }

    /// Redis lost the event's claim (restarted without persistence), and with it the plan, the
    /// totals and the jobs not taken yet: stores the plan and the totals again, and queues the
    /// jobs not known finished.
    async fn requeue(&self, running: &Running, plan: &Plan, last: &Totals) {
        tokio::time::sleep(REQUEUE_AFTER).await;
        let finished = Done {
            jobs: last.finished.clone(),
            totals: last.counts.clone(),
        };
        let (event_id, payload) = (self.event.event_id.as_str(), self.event.to_json());
        let claims = &self.worker.claims;
        let store = || claims.store_plan(&self.held, (event_id, &payload), plan, &finished);
        match retry_redis(store, &running.run_stop).await {
            Ok(Stored::Planned(_)) => warn!(
                jobs = plan.jobs(),
                finished = finished.jobs.len(),
                "Redis had lost the event's jobs; the plan is stored again and the unfinished jobs queued again."
            ),
            Ok(Stored::Existing(_)) => {}
            Ok(Stored::Lost) => running.fence.shut(Shut::Lost),
            Err(e) => warn!(error = %ErrorChain(&e), "Could not queue the event's jobs again."),
        }
    }

    /// The process is stopping: the event's claim goes back, so another replica's scan sees
    /// its jobs through at once.
    async fn hand_back(&self, running: &Running) -> EventOutcome {
        if running.fence.shut_by() == Some(Shut::Lost) {
            return EventOutcome::Lost;
        }
        let claims = &self.worker.claims;
        if let Err(e) = claims.release(&self.held, false, "", &Vec::new()).await {
            warn!(error = %ErrorChain(&e), "Could not hand the split event back; another replica takes it over once its lease runs out.");
        }
        EventOutcome::Coordinating
    }

    /// Every job is done: the event's end, with their totals. Cancelled when this run was told
    /// so, or when the end is recorded as cancelled: the jobs' runs may learn of a cancel, and
    /// end, before this one's renewal does.
    async fn complete(&self, running: &Running, totals: &Totals, started: Instant) -> EventOutcome {
        let state = match running.fence.shut_by() {
            Some(Shut::Cancelled) => Finished::Cancelled,
            _ => Finished::Done,
        };
        let report = FanoutReport {
            jobs: totals.jobs.unwrap_or(0),
            ..FanoutReport::from_totals(&totals.counts)
        };
        let counts = with_reasons(report.totals(), &totals.counts);
        let claims = &self.worker.claims;
        let never = tokio_util::sync::CancellationToken::new();
        let finish = || claims.finish(&self.held, state, &counts, None);
        let cancelled = match retry_redis(finish, &never).await {
            Ok(Some(ended)) => ended == Finished::Cancelled,
            Ok(None) => return EventOutcome::Lost,
            Err(e) => {
                warn!(error = %ErrorChain(&e), "Could not record the split event's end; another run records it.");
                return EventOutcome::Coordinating;
            }
        };
        let summary = Summary {
            event_id: self.event.event_id.clone(),
            talk_id: self.event.talk_id,
            dry_run: self.worker.is_dry_run(&self.event),
            resumed: self.resume.is_some(),
            report,
        };
        // No replica saw the whole event run: from its publication when known.
        let since = self
            .event
            .published_at
            .and_then(|at| (chrono::Utc::now() - at).to_std().ok())
            .unwrap_or_else(|| started.elapsed());
        let from = Instant::now().checked_sub(since).unwrap_or(started);
        if cancelled {
            summary.log_cancelled(from);
            EventOutcome::Cancelled(summary)
        } else {
            summary.log(from);
            EventOutcome::Processed(summary)
        }
    }
}

/// Whether a stored checkpoint shows the event was sent whole when it began (some device was
/// handed out): such an event is never split, or its devices would go twice.
fn started_whole(checkpoint: &str) -> bool {
    if checkpoint.is_empty() {
        return false;
    }
    let checkpoint: Checkpoint = serde_json::from_str(checkpoint).unwrap_or_default();
    checkpoint
        .iter()
        .any(|(_, lane)| lane.upto > 0 || !lane.holes.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_that_began_whole_is_never_split_on_resume() {
        assert!(!started_whole(""));
        let untouched = r#"{"fcm":{"upto":0,"holes":[]},"apns":{"upto":0,"holes":[]}}"#;
        assert!(!started_whole(untouched));
        // Device 1 was handed out and never finished: it began whole (A1 of the review).
        let hole_at_one = r#"{"fcm":{"upto":1,"holes":[1]},"apns":{"upto":0,"holes":[]}}"#;
        assert!(started_whole(hole_at_one));
    }
}

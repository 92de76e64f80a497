//! One event across the replicas (contract §8), the worker's side of `crate::jobs`: the run that
//! claimed a large event cuts it into jobs instead of sending it ([`Worker::split`]), and every
//! replica takes jobs from the deployment's stream and runs each as a bounded event run under
//! the job's own claim ([`Worker::run_jobs`]). Each finished job adds its counts to the event's
//! totals; the replica whose job completes them writes the event's one `Event processed.` line.
//!
//! A job's run keeps its stream entry fresh while its claim is kept, so the entry is taken over
//! (`XAUTOCLAIM`) only once its replica is gone; the job's claim then resumes it from its
//! checkpoint. What a job's end does to its entry is decided in [`Worker::job_finished`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};

use super::Worker;
use super::outcome::{EventError, EventOutcome, Summary};
use super::run::{EventRun, RunClaim};
use crate::claims::{Claim, retry_redis};
use crate::content::Talk;
use crate::event::TalkPosted;
use crate::fanout::{Checkpoint, FanoutReport, LaneCheckpoint};
use crate::jobs::{
    AudienceBoundaries, Boundaries, Completion, Delivered, Job, JobQueue, JobTotals, Ranges,
    SplitError,
};

/// How long a replica waits on the stream for a job before looking again.
const READ_BLOCK: Duration = Duration::from_secs(2);

/// The job stream and the totals, for a worker whose claims are shared.
#[derive(Clone)]
pub(crate) struct Jobs {
    pub queue: JobQueue,
    pub totals: JobTotals,
    /// `NOTIFIER_JOB_SIZE`; 0 never splits.
    pub size: u64,
}

impl Worker {
    /// Cuts the event into jobs when its audience is larger than one job; returns how many
    /// (0: it runs here, as a whole). A run resumed from a checkpoint is never split: it was not
    /// when it started. `claim_id` names the jobs (`{claim_id}#j{n}`).
    pub(super) async fn split(
        &self,
        event: &TalkPosted,
        claim_id: &str,
        talk: &Talk,
    ) -> Result<u32, EventError> {
        let Some(jobs) = self.jobs.as_ref().filter(|j| j.size > 0) else {
            return Ok(0);
        };
        let probe = AudienceBoundaries::new(
            self.db.clone(),
            &self.settings.queries.audience,
            self.db.backend(),
            talk.talk_id,
            talk.program_id,
            talk.author_id,
        )
        .map_err(SplitError::Query)?;
        let beyond_one_job = probe.nth_after(0, jobs.size + 1).await;
        if beyond_one_job.map_err(SplitError::Database)?.is_none() {
            return Ok(0);
        }
        let mut ranges = Ranges::new(&probe, jobs.size);
        let payload = event.to_json();
        while let Some((number, range)) = ranges.next().await.map_err(SplitError::Database)? {
            let job = Job {
                event_id: claim_id.to_string(),
                number,
                range,
                payload: payload.clone(),
            };
            jobs.queue.add(&job).await.map_err(SplitError::Jobs)?;
        }
        let (count, _) = ranges.position();
        info!(
            jobs = count,
            job_size = jobs.size,
            "Event split into jobs for every replica."
        );
        // Every job may already be done (small jobs, quick replicas): then the summary is ours.
        let done = jobs.totals.split_done(claim_id, count).await;
        if let Completion::Complete(totals) = done.map_err(SplitError::Jobs)? {
            log_event_totals(event, self.is_dry_run(event), None, &totals);
        }
        Ok(count)
    }

    /// Takes jobs from the stream, one event slot each, until `stop`. A job is read only while a
    /// slot is free, but the slot is not held while waiting on the stream: events keep every
    /// slot they had. A job read while events took the slots waits for one (unclaimed, so if it
    /// waits past the lease another replica takes it over).
    pub(super) async fn run_jobs(
        self: Arc<Self>,
        events: Arc<Semaphore>,
        running: TaskTracker,
        stop: CancellationToken,
    ) {
        let Some(jobs) = self.jobs.clone() else {
            return;
        };
        let mut queue = jobs.queue.clone();
        while let Some(free) = slot(&events, &stop).await {
            drop(free);
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = queue.next(READ_BLOCK, 1) => next,
            };
            let delivered = match next {
                Ok(delivered) => delivered,
                Err(e) => {
                    warn!(error = %e, "Reading the job stream failed; trying again.");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let Some(delivered) = delivered.into_iter().next() else {
                continue;
            };
            let Some(permit) = slot(&events, &stop).await else {
                return;
            };
            let (worker, queue, stop) = (Arc::clone(&self), queue.clone(), stop.clone());
            running.spawn(async move {
                worker.run_job(&queue, delivered, &stop).await;
                drop(permit);
            });
        }
    }

    async fn run_job(&self, queue: &JobQueue, delivered: Delivered, stop: &CancellationToken) {
        let entry = delivered.entry;
        let Some(job) = delivered.job else {
            warn!(entry, "A job stream entry that is not a job was dropped.");
            finish_entry(queue, &entry).await;
            return;
        };
        let event = match TalkPosted::parse(job.payload.as_bytes()) {
            Ok(event) => event,
            Err(rejection) => {
                error!(entry, reason = %rejection, "A job's event cannot be read; dropped.");
                finish_entry(queue, &entry).await;
                return;
            }
        };
        let span = tracing::info_span!("job", event_id = %event.event_id, talk_id = event.talk_id, job = job.number);
        if delivered.taken_over {
            // Its replica stopped answering for it; the job's claim decides whether we resume it.
            span.in_scope(|| info!(entry, "Took over a job another replica held too long."));
        }
        self.claim_and_run_job(queue, &entry, job, event, stop)
            .instrument(span)
            .await;
    }

    async fn claim_and_run_job(
        &self,
        queue: &JobQueue,
        entry: &str,
        job: Job,
        event: TalkPosted,
        stop: &CancellationToken,
    ) {
        let claims = self.claims.for_run();
        let claim_id = job.claim_id();
        let (resume, attempts) =
            match retry_redis(|| claims.claim(&claim_id, &job.payload), stop).await {
                Ok(Claim::Claimed) => (start_at(job.range.after), 1),
                Ok(Claim::Resumed {
                    checkpoint,
                    attempts,
                }) if checkpoint.is_empty() => (start_at(job.range.after), attempts),
                Ok(Claim::Resumed {
                    checkpoint,
                    attempts,
                }) => (super::intake::parse_checkpoint(&checkpoint), attempts),
                // Its owner lives: the entry comes back to whoever holds it when it is done.
                Ok(Claim::Busy) => return,
                Ok(Claim::Done) => return finish_entry(queue, entry).await,
                Err(e) => {
                    warn!(error = %e, "Could not claim a job; it comes back later.");
                    return;
                }
            };
        let started = Instant::now();
        let touching = CancellationToken::new();
        let toucher = tokio::spawn(touch_while_running(
            queue.clone(),
            entry.to_string(),
            self.settings.claims.lease() / 3,
            touching.clone(),
        ));
        let outcome = EventRun {
            worker: self,
            event: event.clone(),
            claim: RunClaim {
                claims,
                id: claim_id,
            },
            resume: Some(resume),
            attempts,
            job: Some(job.range),
        }
        .run(stop)
        .await;
        touching.cancel();
        let _ = toucher.await;
        let ended = JobEnd {
            entry,
            job: &job,
            event: &event,
            resumed: attempts > 1,
            started,
        };
        self.job_finished(queue, ended, &outcome).await;
    }

    /// A job that ended: counted and its entry removed when finished; left pending otherwise,
    /// so that it is taken over (or resumed here) from its checkpoint.
    async fn job_finished(&self, queue: &JobQueue, end: JobEnd<'_>, outcome: &EventOutcome) {
        let JobEnd {
            entry,
            job,
            event,
            resumed,
            started,
        } = end;
        let report = match outcome {
            EventOutcome::Processed(s) if !s.report.interrupted => &s.report,
            EventOutcome::UnknownTalk => return finish_entry(queue, entry).await,
            _ => return,
        };
        let r = report;
        info!(
            job = job.number,
            recipients = r.recipients,
            sent = r.sent,
            failed = r.failed,
            pruned = r.pruned,
            skipped = r.skipped,
            retries = r.retries,
            resumed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Job processed."
        );
        let mut counts = r.counts();
        counts.push(("retries", r.retries));
        // How many of the event's jobs were picked up from a dead run's checkpoint.
        counts.push(("resumed", u64::from(resumed)));
        let Some(jobs) = &self.jobs else { return };
        match record(&jobs.totals, job, &counts).await {
            Ok(Completion::Complete(totals)) => {
                let split_at = super::intake::entry_time(entry);
                log_event_totals(event, self.is_dry_run(event), split_at, &totals);
            }
            Ok(Completion::Pending) => {}
            Err(e) => {
                // Its claim is done: nothing would count it later. The event gets no summary.
                error!(error = %e, "Could not add the job's counts to the event's totals; the event will have no summary line.");
            }
        }
        finish_entry(queue, entry).await;
    }
}

/// Adds a job's counts, retrying for half a minute: once its claim is done, nothing else would.
async fn record(
    totals: &JobTotals,
    job: &Job,
    counts: &[(&str, u64)],
) -> Result<Completion, crate::jobs::JobError> {
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let started = Instant::now();
    loop {
        match totals.record(&job.event_id, job.number, counts).await {
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            result => return result,
        }
    }
}

/// An event slot, or `None` once stopping.
async fn slot(events: &Arc<Semaphore>, stop: &CancellationToken) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        _ = stop.cancelled() => None,
        permit = Arc::clone(events).acquire_owned() => permit.ok(),
    }
}

/// How a job's run ended, for [`Worker::job_finished`].
struct JobEnd<'a> {
    entry: &'a str,
    job: &'a Job,
    event: &'a TalkPosted,
    /// Picked up from a checkpoint another run left.
    resumed: bool,
    started: Instant,
}

/// A job's start: both lanes as if every device up to `after` were done.
fn start_at(after: i64) -> Checkpoint {
    Checkpoint::from_fn(|_| LaneCheckpoint {
        upto: after,
        holes: Vec::new(),
    })
}

async fn finish_entry(queue: &JobQueue, entry: &str) {
    if let Err(e) = queue.finish(entry).await {
        // Not lost: the entry comes back, its job claim says done, and it is finished then.
        warn!(entry, error = %e, "Could not remove a finished job from the stream.");
    }
}

async fn touch_while_running(
    queue: JobQueue,
    entry: String,
    every: Duration,
    stop: CancellationToken,
) {
    let every = every.max(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = queue.touch(&entry).await {
            warn!(error = %e, "Could not keep the job's stream entry fresh.");
        }
    }
}

/// The event's one summary line, with the totals of all its jobs.
fn log_event_totals(
    event: &TalkPosted,
    dry_run: bool,
    split_at: Option<chrono::DateTime<Utc>>,
    totals: &std::collections::BTreeMap<String, u64>,
) {
    let count = |name: &str| totals.get(name).copied().unwrap_or(0);
    let report = FanoutReport {
        recipients: count("recipients"),
        sent: count("sent"),
        failed: count("failed"),
        pruned: count("pruned"),
        skipped: count("skipped"),
        retries: count("retries"),
        ..FanoutReport::default()
    };
    // No replica saw the whole event run: from its publication when known, else from when its
    // jobs were added (the job's stream entry id is that time).
    let since = event
        .published_at
        .or(split_at)
        .and_then(|at| (Utc::now() - at).to_std().ok())
        .unwrap_or_default();
    let started = Instant::now()
        .checked_sub(since)
        .unwrap_or_else(Instant::now);
    Summary {
        event_id: event.event_id.clone(),
        talk_id: event.talk_id,
        dry_run,
        resumed: count("resumed") > 0,
        report,
    }
    .log(started);
}

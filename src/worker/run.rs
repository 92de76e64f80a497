//! One run of one claimed unit, an event or one job of a split event: load the talk, render the
//! content, read the audience per provider and fan out (or, for an event larger than one job,
//! plan its jobs and see them through: [`super::coordinator`]), then settle the claim and report.
//!
//! The claim is settled by a [`Settlement`] decided from the result and the fence alone: done,
//! given up, cancelled, handed back for another run to resume from the checkpoint, or nothing at
//! all when another run holds the unit now. The stream acknowledgement follows the outcome
//! ([`EventOutcome::settled`]); the table test at the bottom holds the two together. While the
//! unit runs, [`Running`] keeps its claim (the keeper) and logs its progress, both in its span.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Worker;
use super::outcome::{EventError, EventOutcome, Summary};
pub(super) use super::running::Running;
use super::settlement::Settlement;
use crate::audience::{AppResolver, Audience, Provider};
use crate::config::SendMode;
use crate::content::{Talk, load_talk};
use crate::event::TalkPosted;
use crate::fanout::{
    Checkpoint, Content, DeadTokens, Fanout, FanoutError, FanoutReport, LaneCheckpoint, Source,
    fan_out,
};
use crate::prune::Pruner;
use crate::telemetry::ErrorChain;
use crate::work::claims::{Finished, Resume};
use crate::work::plan::Job;
use crate::work::stream::StreamHandle;
use crate::work::{Counts, Held, retry_redis};

/// What a run is of.
pub(super) enum Of {
    /// A whole event (or one whose jobs this run plans and sees through), with the stream entry
    /// that carried it, kept with this replica while it runs.
    Event { entry: Option<crate::input::Entry> },
    /// One job of a split event, carried by its entry in the job stream.
    Job {
        job: Job,
        stream: StreamHandle,
        entry: String,
    },
}

/// One run of a unit under its claim.
pub(super) struct EventRun<'w> {
    pub worker: &'w Worker,
    pub event: TalkPosted,
    pub held: Held,
    /// Where an earlier run stopped, if one did.
    pub resume: Option<Resume>,
    pub of: Of,
    /// The event slot this run holds, given back when it goes on to see its jobs through.
    pub slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl EventRun<'_> {
    /// Runs the unit to its end (or the process's stop) and settles its claim.
    pub(super) async fn run(self, stop: &CancellationToken) -> EventOutcome {
        let started = Instant::now();
        // Publish to start of processing, for events that are processed (not duplicates).
        if let (Some(published), Of::Event { .. }) = (self.event.published_at, &self.of) {
            let lag = (Utc::now() - published).to_std().unwrap_or_default();
            metrics::histogram!(crate::telemetry::EVENT_LAG_SECONDS).record(lag.as_secs_f64());
        }
        let touch = match &self.of {
            Of::Job { stream, entry, .. } => Some(stream.touch(entry)),
            Of::Event { entry } => entry.as_ref().map(|e| e.stream.touch(&e.id)),
        };
        let checkpoint = self.start_checkpoint();
        let payload = self.event.to_json();
        let running = Running::start(
            self.worker,
            self.held.clone(),
            payload,
            checkpoint,
            touch,
            stop,
        );
        let result = self.process(&running).await;
        if let Ok(Processed::Coordinated(outcome)) = result {
            running.end().await;
            return outcome;
        }
        let result = result.map(Processed::into_report);
        let counts = running.progress.counts();
        let checkpoint_now = running.checkpoint();
        let shut = running.end().await;
        let failures = self.resume.as_ref().map_or(0, |r| r.failures);
        let max = self.worker.settings.claims.max_attempts;
        let settlement = Settlement::of(&result, shut, failures, max);
        let summary = self.summary();
        if let Err(e) = &result {
            self.log_failure(e, settlement, &summary, started);
        }
        let kept = match &result {
            Ok(report) => with_reasons(report.totals(), &counts),
            Err(_) => counts,
        };
        let settlement = self.settle(settlement, &checkpoint_now, &kept).await;
        if let Ok(report) = &result {
            record_finished(report, started);
        }
        self.outcome(result, settlement, summary, started)
    }

    /// Where the run starts: a resumed checkpoint, or for a job the start of its range.
    fn start_checkpoint(&self) -> Option<Checkpoint> {
        let stored = self.resume.as_ref().map(|r| r.checkpoint.as_str());
        match (&self.of, stored) {
            (_, Some(text)) if !text.is_empty() => Some(super::intake::parse_checkpoint(text)),
            (Of::Job { job, .. }, _) => Some(start_at(job.range.after)),
            (Of::Event { .. }, _) => None,
        }
    }

    fn summary(&self) -> impl Fn(FanoutReport) -> Summary + '_ {
        move |report| Summary {
            event_id: self.event.event_id.clone(),
            talk_id: self.event.talk_id,
            dry_run: self.worker.is_dry_run(&self.event),
            resumed: self.resume.is_some(),
            report,
        }
    }

    fn outcome(
        &self,
        result: Result<FanoutReport, EventError>,
        settlement: Settlement,
        summary: impl Fn(FanoutReport) -> Summary,
        started: Instant,
    ) -> EventOutcome {
        let job = match &self.of {
            Of::Job { job, .. } => Some(job.number),
            Of::Event { .. } => None,
        };
        match (settlement, result) {
            (Settlement::Lost, _) => {
                warn!("Another run took this unit over; stopped sending it.");
                EventOutcome::Lost
            }
            (Settlement::Cancelled, result) => {
                let summary = summary(result.unwrap_or_default());
                match job {
                    None => summary.log_cancelled(started),
                    Some(n) => info!(job = n, sent = summary.report.sent, "Job cancelled."),
                }
                EventOutcome::Cancelled(summary)
            }
            (_, Ok(report)) => {
                let summary = summary(report);
                if !summary.report.interrupted {
                    match job {
                        None => summary.log(started),
                        Some(n) => log_job(n, &summary, started),
                    }
                }
                EventOutcome::Processed(summary)
            }
            (_, Err(e)) if e.is_unknown_talk() => EventOutcome::UnknownTalk,
            (_, Err(e)) => EventOutcome::Failed(Arc::new(e)),
        }
    }

    fn log_failure(
        &self,
        e: &EventError,
        settlement: Settlement,
        summary: &impl Fn(FanoutReport) -> Summary,
        started: Instant,
    ) {
        if e.is_unknown_talk() {
            warn!(reason = %e, "Skipped an event for an unknown talk.");
            return;
        }
        let will_retry =
            matches!(settlement, Settlement::Resume { .. }) && self.worker.claims.is_shared();
        let attempt = self.resume.as_ref().map_or(1, |r| r.attempts);
        error!(error = %ErrorChain(e), attempt, will_retry, "Event failed.");
        if let EventError::Fanout(FanoutError::Audience { report, .. }) = e {
            summary((**report).clone()).log(started);
        }
    }

    /// Writes the settlement: the claim finished (a job's with its totals and its entry) or
    /// released with the checkpoint; nothing once another run holds it. Returns the settlement
    /// as recorded: an event that ends done while it is being cancelled ends cancelled (a cancel
    /// that came after its last push was handed out, before its renewal told it).
    async fn settle(
        &self,
        settlement: Settlement,
        checkpoint: &str,
        counts: &Counts,
    ) -> Settlement {
        let claims = &self.worker.claims;
        let held = &self.held;
        let never = CancellationToken::new();
        let state = match settlement {
            Settlement::Lost => return settlement,
            Settlement::Resume { failed } => {
                let released =
                    retry_redis(|| claims.release(held, failed, checkpoint, counts), &never);
                match released.await {
                    Ok(true) => {}
                    Ok(false) => warn!("Another run holds the unit now; its checkpoint stands."),
                    Err(e) => {
                        warn!(error = %ErrorChain(&e), "Could not release the unit; another replica resumes it when its lease runs out.")
                    }
                }
                return settlement;
            }
            Settlement::Done => Finished::Done,
            Settlement::GivenUp => Finished::Failed,
            Settlement::Cancelled => Finished::Cancelled,
        };
        let finished = match &self.of {
            Of::Event { .. } => {
                retry_redis(|| claims.finish(held, state, counts, None), &never).await
            }
            Of::Job { job, stream, entry } => {
                let unit = (job.event_id.as_str(), job.number);
                let at = (stream.group.as_str(), entry.as_str());
                let finish = || claims.finish_job(held, state, unit, at, counts);
                retry_redis(finish, &never)
                    .await
                    .map(|ended| ended.then_some(state))
            }
        };
        match finished {
            Ok(Some(Finished::Cancelled)) => return Settlement::Cancelled,
            Ok(Some(_)) => {}
            Ok(None) => warn!("Another run holds the unit now; its end is that run's to record."),
            // The lease runs out and the unit is resumed from its checkpoint: at worst the pushes
            // since the last checkpoint are repeated, under the same collapse id.
            Err(e) => error!(error = %ErrorChain(&e), "Could not record the unit's end."),
        }
        settlement
    }

    async fn process(&self, running: &Running) -> Result<Processed, EventError> {
        let worker = self.worker;
        let talk = load_talk(&worker.db, &worker.queries.content, &self.event).await?;
        let content = worker.templates.render(&talk, &self.event.event_id)?;
        // Plan only an event: a job is a part of a plan already.
        if let Of::Event { .. } = self.of
            && let Some(plan) = self.plan(&talk, running).await?
        {
            // The jobs need the slot more than this run, which only waits for them now.
            drop(self.slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            let outcome = self.coordinate(running, plan).await;
            return Ok(Processed::Coordinated(outcome));
        }
        let dry_run = worker.is_dry_run(&self.event);
        let mode = if dry_run {
            SendMode::DryRun
        } else {
            worker.settings.send_mode
        };
        let pruner = (mode == SendMode::Live)
            .then(|| Pruner::start(worker.db.clone(), worker.queries.prune.clone()));
        let dead = match &pruner {
            Some(pruner) => DeadTokens::Prune(pruner.sender()),
            None => DeadTokens::Kept,
        };
        let fanout = Fanout {
            event_id: Arc::from(self.event.event_id.as_str()),
            content: Content::Talk(Arc::new(content)),
            delivery: worker.delivery(mode),
            dead,
            observer: None,
            progress: Arc::clone(&running.progress),
            fence: Arc::clone(&running.fence),
        };
        let result = fan_out(
            fanout,
            self.audiences(&talk),
            &worker.limits,
            &running.run_stop,
        )
        .await;
        // Flush the dead tokens whatever became of the event: they are dead either way.
        let disabled = match pruner {
            Some(pruner) => Some(pruner.finish().await),
            None => None,
        };
        let mut report = result?;
        if let Some(disabled) = disabled
            && disabled < report.pruned
        {
            // Already disabled by someone else, re-registered meanwhile, or a failed batch.
            let kept = report.pruned - disabled;
            warn!(kept, "Some dead tokens were not disabled.");
            report.pruned = disabled;
            report.failed += kept;
        }
        Ok(Processed::Report(report))
    }

    /// One reader per provider: each lane goes at its own provider's pace. Both resolve rows'
    /// apps through one resolver, so an unknown app is warned about once per event.
    fn audiences(&self, talk: &Talk) -> Vec<(Provider, Source)> {
        let worker = self.worker;
        let apps = AppResolver::new(worker.apps.clone());
        let upto = match &self.of {
            Of::Job { job, .. } => job.range.upto,
            Of::Event { .. } => None,
        };
        Provider::ALL
            .into_iter()
            .map(|provider| {
                let audience = Audience::new(
                    worker.db.clone(),
                    worker.queries.audience.clone(),
                    talk.talk_id,
                    talk.program_id,
                    talk.author_id,
                    worker.settings.database.page_size,
                );
                let audience = audience.only(provider).until(upto).apps(apps.clone());
                (provider, Source::Audience(audience))
            })
            .collect()
    }
}

/// What processing a unit gave: a fan-out's report, or (for a split event) what became of it
/// once its jobs were seen through, settled already.
pub(super) enum Processed {
    Report(FanoutReport),
    Coordinated(EventOutcome),
}

impl Processed {
    fn into_report(self) -> FanoutReport {
        match self {
            Processed::Report(report) => report,
            Processed::Coordinated(_) => FanoutReport::default(),
        }
    }
}

/// The report's totals with what only the progress kept: the failure reasons (`reason:<code>`),
/// the pauses (`paused:<what>`) and the audience's `total`.
pub(super) fn with_reasons(mut totals: Counts, progress: &Counts) -> Counts {
    let kept =
        |name: &str| name.starts_with("reason:") || name.starts_with("paused:") || name == "total";
    totals.extend(progress.iter().filter(|(n, _)| kept(n)).cloned());
    totals
}

fn log_job(number: u32, summary: &Summary, started: Instant) {
    let r = &summary.report;
    info!(
        job = number,
        recipients = r.recipients,
        sent = r.sent,
        failed = r.failed,
        pruned = r.pruned,
        skipped = r.skipped,
        retries = r.retries,
        resumed = summary.resumed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Job processed."
    );
}

/// A job's start: both lanes as if every device up to `after` were done.
fn start_at(after: i64) -> Checkpoint {
    Checkpoint::from_fn(|_| LaneCheckpoint {
        upto: after,
        holes: Vec::new(),
    })
}

/// A partial fan-out is not an event's size or duration; its resume records those.
fn record_finished(report: &FanoutReport, started: Instant) {
    if !report.interrupted {
        metrics::histogram!(crate::telemetry::EVENT_FANOUT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::telemetry::EVENT_RECIPIENTS).record(report.recipients as f64);
    }
}

//! One run of one claimed event: load the talk, render the content, read the audience per
//! provider, fan out, then settle the claim and report.
//!
//! The claim is settled by a [`Settlement`] decided from the result alone: done, given up, or
//! handed back for another run to resume from the checkpoint. The stream acknowledgement follows
//! the outcome ([`EventOutcome::settled`]); the table test at the bottom holds the two together.
//! While the fan-out runs, a [`Keeper`] holds the claim and a progress line is logged; both run in
//! the event's span, as does every task the fan-out spawns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, warn};

use super::Worker;
use super::outcome::{EventError, EventOutcome, Summary};
use super::progress_log::report_progress;
use crate::audience::{AppResolver, Audience, Provider};
use crate::claims::{Claims, Keeper, Renewal, retry_redis};
use crate::config::SendMode;
use crate::content::{Talk, load_talk};
use crate::event::TalkPosted;
use crate::fanout::{Checkpoint, Delivery, FanoutError, FanoutReport, Progress, fan_out};
use crate::jobs::JobRange;
use crate::prune::Pruner;
use crate::telemetry::ErrorChain;

/// What becomes of an event's claim once its run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settlement {
    /// Finished, or nothing to send (an unknown talk): marked done for the dedup window.
    Done,
    /// Failed `claims.max_attempts` times: marked failed, never tried again.
    GivenUp,
    /// Unfinished (stopped, or failed with attempts left): the checkpoint is stored and the lease
    /// released, so that another run resumes at once.
    Resume,
}

impl Settlement {
    fn of(result: &Result<FanoutReport, EventError>, attempts: u32, max_attempts: u32) -> Self {
        match result {
            Ok(report) if report.interrupted => Settlement::Resume,
            Ok(_) => Settlement::Done,
            Err(e) if e.is_unknown_talk() => Settlement::Done,
            Err(_) if attempts >= max_attempts => Settlement::GivenUp,
            Err(_) => Settlement::Resume,
        }
    }
}

/// The claim a run holds: its own claim store (see [`Claims::for_run`]) and the claimed id.
pub(super) struct RunClaim {
    pub claims: Claims,
    pub id: String,
}

/// One run of an event under its claim.
pub(super) struct EventRun<'w> {
    pub worker: &'w Worker,
    pub event: TalkPosted,
    pub claim: RunClaim,
    /// Where an earlier run stopped, if one did.
    pub resume: Option<Checkpoint>,
    /// This run's attempt at the event, counting from 1.
    pub attempts: u32,
    /// The devices of one job of a split event (`crate::worker::jobs`); `None` for a whole event.
    pub job: Option<JobRange>,
}

/// What runs beside the fan-out: the claim's keeper and the progress line.
struct Companions {
    keeper: Option<JoinHandle<()>>,
    reporter: JoinHandle<()>,
    /// Ends both. The keeper outlives a process stop: the lease must hold through the drain.
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
}

impl Companions {
    /// Ends both; true when another run took the event over meanwhile.
    async fn finish(self) -> bool {
        self.stop.cancel();
        if let Some(keeper) = self.keeper {
            let _ = keeper.await;
        }
        let _ = self.reporter.await;
        self.lost.load(Ordering::Relaxed)
    }
}

impl EventRun<'_> {
    /// Runs the event to its end (or the process's stop) and settles its claim.
    pub(super) async fn run(mut self, stop: &CancellationToken) -> EventOutcome {
        let started = Instant::now();
        // Publish to start of processing, for events that are processed (not duplicates).
        if let Some(published) = self.event.published_at {
            let lag = (Utc::now() - published).to_std().unwrap_or_default();
            metrics::histogram!(crate::telemetry::EVENT_LAG_SECONDS).record(lag.as_secs_f64());
        }
        let dry_run = self.worker.is_dry_run(&self.event);
        let resumed = self.resume.is_some();
        let settings = &self.worker.settings;
        let write_every = (settings.database.page_size as usize)
            .min(settings.service.concurrency / 5)
            .max(1);
        let progress = Progress::new(self.resume.take(), write_every);
        // The event stops when the process stops, or when another run took it over.
        let event_stop = stop.child_token();
        let payload = self.event.to_json();
        let companions = self.start_companions(&payload, &progress, &event_stop);
        let result = self
            .process(dry_run, Arc::clone(&progress), &event_stop)
            .await;
        if companions.finish().await {
            warn!("Another run took this event over; stopped sending it.");
            return EventOutcome::Lost;
        }
        let settlement = Settlement::of(
            &result,
            self.attempts,
            self.worker.settings.claims.max_attempts,
        );
        let summary = |report: FanoutReport| Summary {
            event_id: self.event.event_id.clone(),
            talk_id: self.event.talk_id,
            dry_run,
            resumed,
            report,
        };
        if let Err(e) = &result {
            self.log_failure(e, settlement, &summary, started);
        }
        let counts = result
            .as_ref()
            .map(FanoutReport::counts)
            .unwrap_or_default();
        self.settle(settlement, &payload, &progress, &counts).await;
        if let Ok(report) = &result {
            record_finished(report, started);
        }
        let outcome = into_outcome(result, summary);
        // A job's line is its own; a split event's summary is written by its last job.
        if let EventOutcome::Processed(summary) = &outcome
            && self.job.is_none()
            && summary.report.jobs == 0
        {
            summary.log(started);
        }
        outcome
    }

    fn start_companions(
        &self,
        payload: &str,
        progress: &Arc<Progress>,
        event_stop: &CancellationToken,
    ) -> Companions {
        let stop = CancellationToken::new();
        let lost = Arc::new(AtomicBool::new(false));
        // Only a shared claim has a lease to keep and a checkpoint to store.
        let keeper = self.claim.claims.is_shared().then(|| {
            let keeper = Keeper {
                claims: self.claim.claims.clone(),
                event_id: self.claim.id.clone(),
                payload: payload.to_string(),
                progress: Arc::clone(progress),
                stop: stop.clone(),
                event_stop: event_stop.clone(),
                lost: Arc::clone(&lost),
            };
            tokio::spawn(keeper.run().in_current_span())
        });
        let reporter =
            tokio::spawn(report_progress(Arc::clone(progress), stop.clone()).in_current_span());
        Companions {
            keeper,
            reporter,
            stop,
            lost,
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
        let will_retry = settlement == Settlement::Resume && self.claim.claims.is_shared();
        error!(error = %ErrorChain(e), attempt = self.attempts, will_retry, "Event failed.");
        if let EventError::Fanout(FanoutError::Audience { report, .. }) = e {
            summary(report.clone()).log(started);
        }
    }

    /// Marks the claim done (or failed), or — for an event to be continued — stores the last
    /// checkpoint and releases the lease so that another run resumes at once.
    async fn settle(
        &self,
        settlement: Settlement,
        payload: &str,
        progress: &Progress,
        counts: &[(&str, u64)],
    ) {
        let (claims, id) = (&self.claim.claims, self.claim.id.as_str());
        let never = CancellationToken::new();
        if settlement == Settlement::Resume {
            let checkpoint = serde_json::to_string(&progress.snapshot()).unwrap_or_default();
            match retry_redis(|| claims.checkpoint(id, payload, &checkpoint), &never).await {
                Ok(Renewal::Renewed) => {}
                Ok(Renewal::Lost) => {
                    warn!("Another run owns the event now; its checkpoint stands.");
                    return;
                }
                Err(e) => {
                    warn!(error = %ErrorChain(&e), "Could not store the last checkpoint; a resume repeats the pushes since the one before.")
                }
            }
            if let Err(e) = retry_redis(|| claims.release(id), &never).await {
                warn!(error = %ErrorChain(&e), "Could not release the event; another replica resumes it when its lease runs out.");
            }
            return;
        }
        let failed = settlement == Settlement::GivenUp;
        if let Err(e) = retry_redis(|| claims.finish(id, failed, counts), &never).await {
            // The lease runs out and a scan resumes the event from its checkpoint: at worst the
            // pushes since the last checkpoint are repeated, under the same collapse id.
            error!(error = %ErrorChain(&e), "Could not mark the event done.");
        }
    }

    async fn process(
        &self,
        dry_run: bool,
        progress: Arc<Progress>,
        stop: &CancellationToken,
    ) -> Result<FanoutReport, EventError> {
        let worker = self.worker;
        let talk = load_talk(&worker.db, &worker.queries.content, &self.event).await?;
        let content = worker.templates.render(&talk, &self.event.event_id)?;
        // Split only what has not started: a resumed event was not split when it began.
        let fresh = Provider::ALL.iter().all(|p| progress.read_after(*p) == 0);
        if self.job.is_none() && fresh {
            let jobs = worker.split(&self.event, &self.claim.id, &talk).await?;
            if jobs > 0 {
                return Ok(FanoutReport {
                    jobs,
                    ..FanoutReport::default()
                });
            }
        }
        let mode = if dry_run {
            SendMode::DryRun
        } else {
            worker.settings.send_mode
        };
        let pruner = (mode == SendMode::Live)
            .then(|| Pruner::start(worker.db.clone(), worker.queries.prune.clone()));
        let result = fan_out(
            self.audiences(&talk),
            Arc::from(self.event.event_id.as_str()),
            Arc::new(content),
            self.delivery(mode, pruner.as_ref()),
            progress,
            &worker.limits,
            stop,
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
        Ok(report)
    }

    /// One reader per provider: each lane goes at its own provider's pace. Both resolve rows'
    /// apps through one resolver, so an unknown app is warned about once per event.
    fn audiences(&self, talk: &Talk) -> Vec<(Provider, Audience)> {
        let worker = self.worker;
        let apps = AppResolver::new(worker.apps.clone());
        [Provider::Fcm, Provider::Apns]
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
                let upto = self.job.and_then(|job| job.upto);
                let audience = audience.only(provider).until(upto).apps(apps.clone());
                (provider, audience)
            })
            .collect()
    }

    /// The pusher for each provider in `mode` (see [`crate::push::Pushers::for_mode`]).
    fn delivery(&self, mode: SendMode, pruner: Option<&Pruner>) -> Delivery {
        self.worker.delivery(mode, pruner.map(Pruner::sender))
    }
}

/// A partial fan-out is not an event's size or duration; its resume records those.
fn record_finished(report: &FanoutReport, started: Instant) {
    if !report.interrupted {
        metrics::histogram!(crate::telemetry::EVENT_FANOUT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::telemetry::EVENT_RECIPIENTS).record(report.recipients as f64);
    }
}

fn into_outcome(
    result: Result<FanoutReport, EventError>,
    summary: impl FnOnce(FanoutReport) -> Summary,
) -> EventOutcome {
    match result {
        Ok(report) => EventOutcome::Processed(summary(report)),
        Err(e) if e.is_unknown_talk() => EventOutcome::UnknownTalk,
        Err(e) => EventOutcome::Failed(Arc::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::claims::ClaimError;
    use crate::content::TalkError;

    fn summary(report: FanoutReport) -> Summary {
        Summary {
            event_id: "e".into(),
            talk_id: 1,
            dry_run: false,
            resumed: false,
            report,
        }
    }

    #[test]
    fn each_ending_settles_the_claim_and_decides_the_acknowledgement() {
        use Settlement::{Done, GivenUp, Resume};
        let complete = Ok(FanoutReport::default());
        let interrupted = Ok(FanoutReport {
            interrupted: true,
            ..FanoutReport::default()
        });
        let unknown = Err(EventError::Talk(TalkError::Unknown { talk_id: 1 }));
        let timeout = || EventError::Claim(ClaimError::Timeout(Duration::from_secs(1)));
        let max = 3;
        // (case, result, attempts, settlement, acknowledged)
        let table = [
            ("done", complete, 1, Done, true),
            ("interrupted", interrupted, 1, Resume, false),
            ("failed, attempts left", Err(timeout()), 2, Resume, false),
            ("failed at max", Err(timeout()), 3, GivenUp, false),
            ("unknown talk", unknown, 1, Done, true),
        ];
        for (case, result, attempts, settlement, acknowledged) in table {
            assert_eq!(Settlement::of(&result, attempts, max), settlement, "{case}");
            let outcome = into_outcome(result, summary);
            assert_eq!(outcome.settled(), acknowledged, "{case}: {outcome:?}");
        }
    }
}

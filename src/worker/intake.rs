//! From a message to a claimed run: parse the event, drop it if stale, claim it (a duplicate is
//! skipped), and start its run in the event's span. Also the way in for the events a dead replica
//! left: the worker's scan takes them over and resumes them from their checkpoints.
//!
//! The span (`event`: `event_id`, `talk_id`, `dry_run`) opens here, so every line an event logs,
//! in any task it spawns, names the event: log calls inside it do not repeat those fields.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, error, info, info_span, warn};

use super::Worker;
use super::outcome::{EventError, EventOutcome};
use super::run::{EventRun, RunClaim};
use crate::claims::{Claim, Claims, TakenOver, retry_redis};
use crate::config::SendMode;
use crate::event::{Preview, TalkPosted};
use crate::fanout::Checkpoint;
use crate::input::stream::Incoming;
use crate::telemetry::ErrorChain;

impl Worker {
    /// Processes one raw message and logs what became of it. Never fails: a bad message or a
    /// failed event is logged, and the worker goes on.
    pub async fn handle_message(&self, message: &[u8], stop: &CancellationToken) -> EventOutcome {
        let incoming = Incoming {
            payload: message.to_vec(),
            entry: None,
            acker: None,
        };
        self.handle_incoming(&incoming, stop).await
    }

    pub(super) async fn handle_incoming(
        &self,
        incoming: &Incoming,
        stop: &CancellationToken,
    ) -> EventOutcome {
        let outcome = match TalkPosted::parse(&incoming.payload) {
            Ok(mut event) => {
                if event.published_at.is_none() {
                    event.published_at = incoming.entry.as_deref().and_then(entry_time);
                }
                self.handle_event(event, stop).await
            }
            Err(rejection) => {
                warn!(
                    reason = %rejection,
                    preview = %Preview(&incoming.payload),
                    "Rejected a message that is not a valid talk_posted event."
                );
                EventOutcome::Rejected(rejection)
            }
        };
        self.report(outcome.clone());
        outcome
    }

    /// Counts the outcome and hands it to its followers.
    fn report(&self, outcome: EventOutcome) {
        outcome.count();
        // Nobody listening is the normal case in production.
        let _ = self.outcomes.send(outcome);
    }

    pub async fn handle_event(&self, event: TalkPosted, stop: &CancellationToken) -> EventOutcome {
        let span = self.span(&event);
        self.claim_and_run(event, stop).instrument(span).await
    }

    fn span(&self, event: &TalkPosted) -> Span {
        info_span!(
            "event",
            event_id = %event.event_id,
            talk_id = event.talk_id,
            dry_run = self.is_dry_run(event)
        )
    }

    async fn claim_and_run(&self, event: TalkPosted, stop: &CancellationToken) -> EventOutcome {
        let max_age = Duration::from_secs(self.settings.service.max_event_age_secs);
        if let Some(published) = event.published_at {
            let age = (Utc::now() - published).to_std().unwrap_or_default();
            if age > max_age {
                warn!(
                    age_secs = age.as_secs(),
                    "Dropped a stale event: it was published too long ago to be news."
                );
                return EventOutcome::Stale;
            }
        }
        // A dry run is claimed apart, so that it never counts as the live event having been sent.
        let claim_id = if self.is_dry_run(&event) {
            format!("{}:dry-run", event.event_id)
        } else {
            event.event_id.clone()
        };
        let claims = self.claims.for_run();
        let payload = event.to_json();
        let claim = match retry_redis(|| claims.claim(&claim_id, &payload), stop).await {
            Ok(claim) => claim,
            Err(e) => {
                error!(error = %ErrorChain(&e), "Could not claim the event; it was not sent.");
                return EventOutcome::Failed(Arc::new(EventError::Claim(e)));
            }
        };
        let (resume, attempts) = match claim {
            Claim::Claimed => (None, 1),
            Claim::Resumed {
                checkpoint,
                attempts,
            } => (Some(parse_checkpoint(&checkpoint)), attempts),
            Claim::Busy | Claim::Done => {
                let done = claim == Claim::Done;
                info!(
                    status = if done {
                        "already processed"
                    } else {
                        "being processed by another replica"
                    },
                    "Skipped a duplicate event."
                );
                return EventOutcome::Duplicate { done };
            }
        };
        let claim = RunClaim {
            claims,
            id: claim_id,
        };
        self.event_run(event, claim, resume, attempts)
            .run(stop)
            .await
    }

    pub(super) fn is_dry_run(&self, event: &TalkPosted) -> bool {
        event.dry_run == Some(true) || self.settings.send_mode == SendMode::DryRun
    }

    fn event_run(
        &self,
        event: TalkPosted,
        claim: RunClaim,
        resume: Option<Checkpoint>,
        attempts: u32,
    ) -> EventRun<'_> {
        EventRun {
            worker: self,
            event,
            claim,
            resume,
            attempts,
            job: None,
        }
    }

    /// Takes over the events whose owner's lease ran out, as far as free slots allow.
    pub(super) async fn scan_abandoned(
        self: &Arc<Self>,
        events: &Arc<Semaphore>,
        running: &TaskTracker,
        stop: &CancellationToken,
    ) -> ControlFlow<()> {
        let active = match self.claims.active().await {
            Ok(active) => active,
            Err(e) => {
                warn!(error = %ErrorChain(&e), "Looking for abandoned events failed.");
                return ControlFlow::Continue(());
            }
        };
        // Jobs come back through the job stream, bounded to their range: never as events.
        for event_id in active
            .into_iter()
            .filter(|id| !crate::jobs::is_job_claim(id))
        {
            // A slot first, then the take-over: a lease taken must be renewed at once.
            let Ok(permit) = Arc::clone(events).try_acquire_owned() else {
                break; // busy: the next scan looks again
            };
            let claims = self.claims.for_run();
            let taken = match claims.take_over(&event_id).await {
                Ok(Some(taken)) => taken,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %ErrorChain(&e), "Taking over an abandoned event failed.");
                    continue;
                }
            };
            if stop.is_cancelled() {
                let _ = claims.release(&event_id).await;
                return ControlFlow::Break(());
            }
            let (worker, stop) = (Arc::clone(self), stop.clone());
            running.spawn(async move {
                worker.resume_abandoned(claims, taken, &stop).await;
                drop(permit);
            });
        }
        ControlFlow::Continue(())
    }

    /// Resumes an event a scan took over (`claims` is the run's claim store).
    pub(super) async fn resume_abandoned(
        &self,
        claims: Claims,
        taken: TakenOver,
        stop: &CancellationToken,
    ) {
        let outcome = match TalkPosted::parse(taken.payload.as_bytes()) {
            Ok(event) => {
                let span = self.span(&event);
                span.in_scope(|| {
                    info!(
                        attempt = taken.attempts,
                        "Resuming an event another run left unfinished."
                    )
                });
                let resume = Some(parse_checkpoint(&taken.checkpoint));
                let claim = RunClaim {
                    claims,
                    id: taken.event_id,
                };
                self.event_run(event, claim, resume, taken.attempts)
                    .run(stop)
                    .instrument(span)
                    .await
            }
            Err(rejection) => {
                // Cannot happen for payloads the worker stored itself; finish it rather than loop.
                error!(event_id = %taken.event_id, reason = %rejection, "An abandoned event cannot be read; giving it up.");
                let _ = claims.finish(&taken.event_id, true, &[]).await;
                EventOutcome::Rejected(rejection)
            }
        };
        self.report(outcome);
    }
}

/// The time a stream entry was added, from its id (`<milliseconds>-<sequence>`).
pub(super) fn entry_time(entry: &str) -> Option<DateTime<Utc>> {
    let ms = entry.split('-').next()?.parse::<i64>().ok()?;
    DateTime::from_timestamp_millis(ms)
}

/// A stored checkpoint; an unreadable one resumes from the start (pushes repeat, none is lost).
pub(super) fn parse_checkpoint(text: &str) -> Checkpoint {
    if text.is_empty() {
        return Checkpoint::default();
    }
    serde_json::from_str(text).unwrap_or_else(|e| {
        warn!(error = %ErrorChain(&e), "An event's checkpoint cannot be read; resuming it from the start.");
        Checkpoint::default()
    })
}

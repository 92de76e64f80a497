//! From a message to a claimed run: parse the event, drop it if stale, claim it (a duplicate is
//! skipped, a cancelled one ended), and start its run in the event's span. Also the way in for
//! the events a dead replica left: the worker's scan takes them over and resumes them from their
//! checkpoints (or ends them, when they were being cancelled).
//!
//! The span (`event`: `event_id`, `talk_id`, `dry_run`) opens here, so every line an event logs,
//! in any task it spawns, names the event: log calls inside it do not repeat those fields.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, error, info, info_span, warn};

use super::Worker;
use super::outcome::{EventError, EventOutcome, Summary};
use super::run::{EventRun, Of};
use crate::config::SendMode;
use crate::event::{Preview, TalkPosted};
use crate::fanout::{Checkpoint, FanoutReport};
use crate::input::Incoming;
use crate::telemetry::ErrorChain;
use crate::work::claims::{Claim, Finished};
use crate::work::{Counts, Held, TakenOver, Unit, retry_redis};

impl Worker {
    /// Processes one raw message and logs what became of it. Never fails: a bad message or a
    /// failed event is logged, and the worker goes on.
    pub async fn handle_message(&self, message: &[u8], stop: &CancellationToken) -> EventOutcome {
        self.handle_incoming(&Incoming::bare(message.to_vec()), None, stop)
            .await
    }

    /// `slot` is the event slot the run holds (given back if it goes on to coordinate jobs).
    pub(super) async fn handle_incoming(
        &self,
        incoming: &Incoming,
        slot: Option<OwnedSemaphorePermit>,
        stop: &CancellationToken,
    ) -> EventOutcome {
        let outcome = match TalkPosted::parse(&incoming.payload) {
            Ok(mut event) => {
                if event.published_at.is_none() {
                    let id = incoming.entry.as_ref().map(|e| e.id.as_str());
                    event.published_at = id.and_then(entry_time);
                }
                let span = self.span(&event);
                self.claim_and_run(event, incoming, slot, stop)
                    .instrument(span)
                    .await
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
        let incoming = Incoming::bare(Vec::new());
        let outcome = self
            .claim_and_run(event, &incoming, None, stop)
            .instrument(span)
            .await;
        self.report(outcome.clone());
        outcome
    }

    fn span(&self, event: &TalkPosted) -> Span {
        info_span!(
            "event",
            event_id = %event.event_id,
            talk_id = event.talk_id,
            dry_run = self.is_dry_run(event)
        )
    }

    async fn claim_and_run(
        &self,
        event: TalkPosted,
        incoming: &Incoming,
        slot: Option<OwnedSemaphorePermit>,
        stop: &CancellationToken,
    ) -> EventOutcome {
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
        let unit = self.unit(&event);
        let (key, member) = (self.claims.keys().unit(&unit), unit.member());
        let payload = event.to_json();
        let claimed = retry_redis(|| self.claims.claim(&key, &member, &payload, None), stop).await;
        let (held, resume) = match claimed {
            Ok(Claim::Run { held, resume }) => (held, resume),
            Ok(claim @ (Claim::Busy | Claim::Done)) => {
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
            Ok(Claim::Cancel { held, counts }) => {
                return self.end_cancelled(&event, &held, counts).await;
            }
            Err(e) => {
                error!(error = %ErrorChain(&e), "Could not claim the event; it was not sent.");
                return EventOutcome::Failed(Arc::new(EventError::Claim(e)));
            }
        };
        EventRun {
            worker: self,
            event,
            held,
            resume,
            of: Of::Event {
                entry: incoming.entry.clone(),
            },
            slot: Mutex::new(slot),
        }
        .run(stop)
        .await
    }

    /// The unit an event is: the event itself, or in a replica that sends, a dry run it asked
    /// for, claimed apart so that it never counts as the live event having been sent.
    fn unit(&self, event: &TalkPosted) -> Unit {
        let id = event.event_id.clone();
        if event.dry_run == Some(true) && self.settings.send_mode != SendMode::DryRun {
            Unit::DryRunEvent(id)
        } else {
            Unit::Event(id)
        }
    }

    pub(super) fn is_dry_run(&self, event: &TalkPosted) -> bool {
        event.dry_run == Some(true) || self.settings.send_mode == SendMode::DryRun
    }

    /// An event found being cancelled with no run left to end it: ended with what it reached.
    async fn end_cancelled(&self, event: &TalkPosted, held: &Held, counts: Counts) -> EventOutcome {
        let never = CancellationToken::new();
        let finish = || self.claims.finish(held, Finished::Cancelled, &counts, None);
        if let Err(e) = retry_redis(finish, &never).await {
            error!(error = %ErrorChain(&e), "Could not record a cancelled event's end.");
        }
        let summary = Summary {
            event_id: event.event_id.clone(),
            talk_id: event.talk_id,
            dry_run: self.is_dry_run(event),
            resumed: true,
            report: FanoutReport::from_totals(&counts),
        };
        summary.log_cancelled(Instant::now());
        EventOutcome::Cancelled(summary)
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
        for member in active {
            // A slot first, then the take-over: a lease taken must be renewed at once.
            let Ok(permit) = Arc::clone(events).try_acquire_owned() else {
                break; // busy: the next scan looks again
            };
            let taken = match self.claims.take_over(&member).await {
                Ok(Some(taken)) => taken,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %ErrorChain(&e), "Taking over an abandoned event failed.");
                    continue;
                }
            };
            if stop.is_cancelled() {
                let _ = self
                    .claims
                    .release(&taken.held, false, &taken.resume.checkpoint, &Vec::new())
                    .await;
                return ControlFlow::Break(());
            }
            let (worker, stop) = (Arc::clone(self), stop.clone());
            running.spawn(async move {
                worker.resume_abandoned(taken, permit, &stop).await;
            });
        }
        ControlFlow::Continue(())
    }

    /// Resumes an event a scan took over.
    async fn resume_abandoned(
        &self,
        taken: TakenOver,
        slot: OwnedSemaphorePermit,
        stop: &CancellationToken,
    ) {
        let outcome = match TalkPosted::parse(taken.payload.as_bytes()) {
            Ok(event) => {
                let span = self.span(&event);
                span.in_scope(|| {
                    info!(
                        attempt = taken.resume.attempts,
                        "Resuming an event another run left unfinished."
                    )
                });
                if taken.cancelling {
                    let counts = taken.resume.counts.clone();
                    self.end_cancelled(&event, &taken.held, counts)
                        .instrument(span)
                        .await
                } else {
                    let run = EventRun {
                        worker: self,
                        event,
                        held: taken.held,
                        resume: Some(taken.resume),
                        of: Of::Event { entry: None },
                        slot: Mutex::new(Some(slot)),
                    };
                    run.run(stop).instrument(span).await
                }
            }
            Err(rejection) => {
                // Cannot happen for payloads the worker stored itself; finish it rather than loop.
                error!(member = %taken.held.member, reason = %rejection, "An abandoned event cannot be read; giving it up.");
                let _ = self
                    .claims
                    .finish(&taken.held, Finished::Failed, &Vec::new(), None)
                    .await;
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
        warn!(error = %ErrorChain(&e), "A checkpoint cannot be read; resuming from the start.");
        Checkpoint::default()
    })
}

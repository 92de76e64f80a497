//! The worker: takes each message from the subscriber through the whole pipeline — parse the
//! event, load the talk, render the content, read the audience, fan out — and reports it in one
//! summary line.
//!
//! Events run concurrently up to `service.max_concurrent_events`, all sharing one push
//! concurrency limit. On stop, no new message is taken, running fan-outs stop spawning pushes,
//! and in-flight pushes get the drain timeout to finish.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::audience::{Audience, Provider};
use crate::content::{Talk, TalkRow, Templates};
use crate::database::{Database, DatabaseError, Param, Queries};
use crate::event::{Preview, Rejection, TalkPosted};
use crate::fanout::{Delivery, FanoutError, FanoutLimits, FanoutReport, fan_out};
use crate::prune::Pruner;
use crate::push::Pusher;
use crate::push::retry::RetryPolicy;
use crate::settings::{SendMode, Settings, SettingsError};
use crate::subscriber::Subscriber;

/// The pushers an event can go through.
#[derive(Clone)]
pub struct Pushers {
    /// FCM in the configured mode (live, or validate-only); `None` when FCM is not configured.
    pub fcm: Option<Arc<dyn Pusher>>,
    /// APNs, live; `None` when not configured. (APNs has no validate mode: validate runs use the
    /// dry-run pusher for it.)
    pub apns: Option<Arc<dyn Pusher>>,
    /// Used in dry-run mode and for events that ask for a dry run.
    pub dry_run: Arc<dyn Pusher>,
}

impl Pushers {
    /// Dry run only: what runs outside production.
    pub fn dry_run(pusher: Arc<dyn Pusher>) -> Self {
        Self {
            fcm: None,
            apns: None,
            dry_run: pusher,
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone)]
pub enum EventOutcome {
    Processed(Summary),
    Rejected(Rejection),
    /// The talk is not in the database (or the event's program is not the talk's).
    UnknownTalk,
    Failed(String),
}

/// The per-event summary of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub event_id: String,
    pub talk_id: i64,
    pub dry_run: bool,
    pub report: FanoutReport,
}

#[derive(Debug, thiserror::Error)]
enum EventError {
    #[error("reading the talk failed: {0}")]
    Content(#[source] DatabaseError),
    #[error("talk {talk_id} not found")]
    UnknownTalk { talk_id: i64 },
    #[error("event says program {given} but talk {talk_id} belongs to program {actual}")]
    ProgramMismatch {
        talk_id: i64,
        given: i64,
        actual: i64,
    },
    #[error(transparent)]
    Render(#[from] crate::content::ContentError),
    #[error(transparent)]
    Fanout(#[from] FanoutError),
}

pub struct Worker {
    settings: Arc<Settings>,
    db: Database,
    queries: Queries,
    templates: Templates,
    pushers: Pushers,
    limits: FanoutLimits,
    /// Every event's outcome, for whoever follows them (tests, status endpoints).
    outcomes: broadcast::Sender<EventOutcome>,
}

impl Worker {
    pub fn new(settings: Settings, db: Database, pushers: Pushers) -> Result<Self, SettingsError> {
        let queries = Queries::prepare(&settings.queries, db.backend())?;
        let templates = Templates::new(&settings.content)?;
        if settings.send_mode != SendMode::DryRun && pushers.fcm.is_none() && pushers.apns.is_none()
        {
            return Err(SettingsError {
                setting: "NOTIFIER_SEND_MODE".into(),
                reason: format!(
                    "{} needs FCM or APNs, and neither is configured",
                    settings.send_mode.as_str()
                ),
            });
        }
        let limits = FanoutLimits {
            permits: Arc::new(Semaphore::new(settings.service.concurrency)),
            fcm_permits: Arc::new(Semaphore::new(
                settings.service.provider_limit(settings.fcm.concurrency),
            )),
            apns_permits: Arc::new(Semaphore::new(
                settings.service.provider_limit(settings.apns.concurrency),
            )),
            retry_pages_for: std::time::Duration::from_secs(settings.database.retry_for_secs),
            drain_timeout: settings.service.drain_timeout(),
        };
        Ok(Self {
            settings: Arc::new(settings),
            db,
            queries,
            templates,
            pushers,
            limits,
            outcomes: broadcast::Sender::new(64),
        })
    }

    /// Follows the outcome of every event from now on. A receiver that falls behind misses the
    /// oldest outcomes rather than slowing the worker.
    pub fn outcomes(&self) -> broadcast::Receiver<EventOutcome> {
        self.outcomes.subscribe()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Subscribes and processes events until `stop` is cancelled, then drains.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        let subscriber = Subscriber::new(&self.settings.redis, &self.settings.service.channel)?;
        let (tx, mut messages) = mpsc::channel::<Vec<u8>>(64);
        let subscription = tokio::spawn(subscriber.run(tx, stop.clone()));

        let events = Arc::new(Semaphore::new(self.settings.service.max_concurrent_events));
        let running = TaskTracker::new();
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                message = messages.recv() => message,
            };
            let Some(message) = message else { break };
            let permit = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    warn!(preview = %Preview(&message), "Stopping: a received event waiting for a slot is not processed.");
                    break;
                }
                permit = Arc::clone(&events).acquire_owned() => permit?,
            };
            let worker = Arc::clone(&self);
            let stop = stop.clone();
            running.spawn(async move {
                worker.handle_message(&message, &stop).await;
                drop(permit);
            });
        }
        subscription.abort();
        // Pub/sub messages received but not yet started are lost with the process: say so.
        let mut dropped = 0;
        while messages.try_recv().is_ok() {
            dropped += 1;
        }
        if dropped > 0 {
            warn!(
                dropped,
                "Stopping: received events that had not started are not processed."
            );
        }
        info!(
            running_events = running.len(),
            "Stopping: no new events are taken."
        );
        running.close();
        // Each fan-out bounds its own drain; this bounds the rest (reading a talk, say).
        let deadline = self.settings.service.drain_timeout() + std::time::Duration::from_secs(5);
        if tokio::time::timeout(deadline, running.wait())
            .await
            .is_err()
        {
            warn!("Stopping: events still running at the drain deadline were abandoned.");
        }
        info!("Stopped.");
        Ok(())
    }

    /// Processes one raw message and logs what became of it. Never fails: a bad message or a
    /// failed event is logged, and the worker goes on.
    pub async fn handle_message(&self, message: &[u8], stop: &CancellationToken) -> EventOutcome {
        let outcome = self.handle_raw(message, stop).await;
        // Nobody listening is the normal case in production.
        let _ = self.outcomes.send(outcome.clone());
        outcome
    }

    async fn handle_raw(&self, message: &[u8], stop: &CancellationToken) -> EventOutcome {
        let event = match TalkPosted::parse(message) {
            Ok(event) => event,
            Err(rejection) => {
                warn!(
                    reason = %rejection,
                    preview = %Preview(message),
                    "Rejected a message that is not a valid talk_posted event."
                );
                return EventOutcome::Rejected(rejection);
            }
        };
        self.handle_event(event, stop).await
    }

    pub async fn handle_event(&self, event: TalkPosted, stop: &CancellationToken) -> EventOutcome {
        let started = Instant::now();
        let dry_run = event.dry_run == Some(true) || self.settings.send_mode == SendMode::DryRun;
        match self.process(&event, dry_run, stop).await {
            Ok(report) => {
                let summary = Summary {
                    event_id: event.event_id.clone(),
                    talk_id: event.talk_id,
                    dry_run,
                    report,
                };
                log_summary(&summary, started);
                EventOutcome::Processed(summary)
            }
            Err(e @ (EventError::UnknownTalk { .. } | EventError::ProgramMismatch { .. })) => {
                warn!(event_id = %event.event_id, talk_id = event.talk_id, reason = %e, "Skipped an event for an unknown talk.");
                EventOutcome::UnknownTalk
            }
            Err(e) => {
                error!(event_id = %event.event_id, talk_id = event.talk_id, error = %e, "Event failed.");
                if let EventError::Fanout(FanoutError::Audience { report, .. }) = &e {
                    let summary = Summary {
                        event_id: event.event_id.clone(),
                        talk_id: event.talk_id,
                        dry_run,
                        report: report.clone(),
                    };
                    log_summary(&summary, started);
                }
                EventOutcome::Failed(e.to_string())
            }
        }
    }

    async fn process(
        &self,
        event: &TalkPosted,
        dry_run: bool,
        stop: &CancellationToken,
    ) -> Result<FanoutReport, EventError> {
        let talk = self.load_talk(event).await?;
        let content = self.templates.render(&talk, &event.event_id)?;
        // One reader per provider: each lane goes at its own provider's pace.
        let audiences = [Provider::Fcm, Provider::Apns]
            .into_iter()
            .map(|provider| {
                let audience = Audience::new(
                    self.db.clone(),
                    self.queries.audience.clone(),
                    talk.talk_id,
                    talk.program_id,
                    talk.author_id,
                    self.settings.database.page_size,
                );
                (provider, audience.only(provider))
            })
            .collect();
        let mode = if dry_run {
            SendMode::DryRun
        } else {
            self.settings.send_mode
        };
        let dry = Some(Arc::clone(&self.pushers.dry_run));
        let pruner = (mode == SendMode::Live)
            .then(|| Pruner::start(self.db.clone(), self.queries.prune.clone()));
        let delivery = Delivery {
            fcm: match mode {
                SendMode::DryRun => dry.clone(),
                SendMode::Validate | SendMode::Live => self.pushers.fcm.clone(),
            },
            apns: match mode {
                SendMode::DryRun | SendMode::Validate => dry,
                SendMode::Live => self.pushers.apns.clone(),
            },
            retry: RetryPolicy::from(&self.settings.retry),
            prune: pruner.as_ref().map(Pruner::sender),
        };
        let result = fan_out(
            audiences,
            Arc::from(event.event_id.as_str()),
            Arc::new(content),
            delivery,
            &self.limits,
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
            warn!(event_id = %event.event_id, kept, "Some dead tokens were not disabled.");
            report.pruned = disabled;
            report.failed += kept;
        }
        Ok(report)
    }

    async fn load_talk(&self, event: &TalkPosted) -> Result<Talk, EventError> {
        let row: Option<TalkRow> = self
            .db
            .fetch_optional(
                &self.queries.content,
                &[
                    ("talk_id", Param::Int(Some(event.talk_id))),
                    ("program_id", Param::Int(event.program_id)),
                ],
            )
            .await
            .map_err(EventError::Content)?;
        let row = row.ok_or(EventError::UnknownTalk {
            talk_id: event.talk_id,
        })?;
        // Notifying the wrong program's audience is worse than not notifying: refuse.
        if let Some(given) = event.program_id.filter(|p| *p != row.program_id) {
            return Err(EventError::ProgramMismatch {
                talk_id: event.talk_id,
                given,
                actual: row.program_id,
            });
        }
        Ok(Talk {
            talk_id: event.talk_id,
            program_id: row.program_id,
            author_id: row.author_id,
            talk_title: row.talk_title,
            program_title: row.program_title,
        })
    }
}

fn log_summary(summary: &Summary, started: Instant) {
    let r = &summary.report;
    info!(
        event_id = %summary.event_id,
        talk_id = summary.talk_id,
        recipients = r.recipients,
        sent = r.sent,
        failed = r.failed,
        pruned = r.pruned,
        skipped = r.skipped,
        retries = r.retries,
        paused = %r.paused.join(","),
        dry_run = summary.dry_run,
        elapsed_ms = started.elapsed().as_millis() as u64,
        interrupted = r.interrupted,
        "Event processed."
    );
}

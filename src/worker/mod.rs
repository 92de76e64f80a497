//! The worker: takes each message from the input (pub/sub or stream) through the whole pipeline —
//! parse the event, claim it, load the talk, render the content, read the audience, fan out — and
//! reports it in one summary line.
//!
//! Each event is claimed in Redis first ([`crate::claims`]): a duplicate is skipped, and while the
//! fan-out runs a keeper renews the lease and stores checkpoints, so that if this process dies
//! another replica resumes the event where it stood. Events run concurrently up to
//! `service.max_concurrent_events`, sharing one push concurrency limit. On stop, no new message is
//! taken, fan-outs stop handing out pushes, in-flight pushes get the drain timeout, and the claim
//! is released with its checkpoint for whoever runs next.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::audience::{Audience, PerProvider, Provider};
use crate::claims::{Claim, Claims, Renewal};
use crate::config::{InputMode, SendMode, Settings, SettingsError};
use crate::content::{Talk, TalkRow, Templates};
use crate::database::{Database, DatabaseError, Param, Queries, audience_reads};
use crate::event::{Preview, Rejection, TalkPosted};
use crate::fanout::{
    Checkpoint, Delivery, FanoutError, FanoutLimits, FanoutReport, Progress, fan_out,
};
use crate::input::pubsub::Subscriber;
use crate::input::stream::{Acker, Incoming, StreamInput};
use crate::prune::Pruner;
use crate::push::Pushers;
use crate::push::retry::RetryPolicy;

/// What became of one message.
#[derive(Debug, Clone)]
pub enum EventOutcome {
    Processed(Summary),
    Rejected(Rejection),
    /// The talk is not in the database (or the event's program is not the talk's).
    UnknownTalk,
    /// Published longer ago than `service.max_event_age_secs`.
    Stale,
    /// Claimed already: `done` when it was finished, else another replica is on it.
    Duplicate {
        done: bool,
    },
    /// Another replica took the event over while this one was sending.
    Lost,
    Failed(String),
}

impl EventOutcome {
    /// Whether the message that carried the event is finished with, so a stream entry may be
    /// acknowledged. An event that another replica is still running is not: its entry comes back
    /// and is acknowledged once the event is done.
    fn settled(&self) -> bool {
        match self {
            EventOutcome::Processed(s) => !s.report.interrupted,
            EventOutcome::Rejected(_) | EventOutcome::UnknownTalk | EventOutcome::Stale => true,
            EventOutcome::Duplicate { done } => *done,
            EventOutcome::Lost | EventOutcome::Failed(_) => false,
        }
    }
}

/// The per-event summary of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub event_id: String,
    pub talk_id: i64,
    pub dry_run: bool,
    /// This run picked the event up from a checkpoint left by an earlier one.
    pub resumed: bool,
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
    /// `None` only in tests that drive events directly: then nothing is deduplicated.
    claims: Option<Claims>,
    /// Every event's outcome, for whoever follows them (tests, status endpoints).
    outcomes: broadcast::Sender<EventOutcome>,
    /// True while the input (subscription or stream group) stands: readiness follows it.
    input_ready: watch::Sender<bool>,
    /// Set when a stop begins: readiness turns 503 so no new traffic is routed here.
    stopping: AtomicBool,
}

impl Worker {
    pub fn new(settings: Settings, db: Database, pushers: Pushers) -> Result<Self, SettingsError> {
        let queries = Queries::prepare(&settings.queries, db.backend())?;
        let templates = Templates::new(&settings.content)?;
        if settings.send_mode != SendMode::DryRun && pushers.live.iter().all(|(_, p)| p.is_none()) {
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
            provider_permits: PerProvider {
                fcm: Arc::new(Semaphore::new(
                    settings.service.provider_limit(settings.fcm.concurrency),
                )),
                apns: Arc::new(Semaphore::new(
                    settings.service.provider_limit(settings.apns.concurrency),
                )),
            },
            audience_reads: Arc::new(Semaphore::new(reads_budget(&settings))),
            retry_pages_for: Duration::from_secs(settings.database.retry_for_secs),
            drain_timeout: settings.service.drain_timeout(),
        };
        Ok(Self {
            settings: Arc::new(settings),
            db,
            queries,
            templates,
            pushers,
            limits,
            claims: None,
            outcomes: broadcast::Sender::new(64),
            input_ready: watch::Sender::new(false),
            stopping: AtomicBool::new(false),
        })
    }

    /// Claims every event in Redis before sending it (what `notifier run` does).
    pub fn with_claims(mut self, claims: Claims) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Connects the claim store the settings describe, under a name unique to this process.
    pub async fn connect_claims(settings: &Settings) -> Result<Claims, crate::claims::ClaimError> {
        Claims::connect(
            &settings.redis,
            &settings.claims_prefix(),
            crate::claims::owner_name(),
            settings.claims.lease(),
            settings.claims.window(),
        )
        .await
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

    /// Why the worker is not ready to take events, if it is not: stopping, input not connected,
    /// or the database not answering.
    pub async fn not_ready(&self) -> Option<String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Some("stopping".into());
        }
        if !*self.input_ready.borrow() {
            return Some(match self.settings.input.mode {
                InputMode::Pubsub => format!(
                    "not subscribed to Redis channel {}",
                    self.settings.service.channel
                ),
                InputMode::Stream => {
                    format!("not reading Redis stream {}", self.settings.input.stream)
                }
            });
        }
        match tokio::time::timeout(Duration::from_secs(2), self.db.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("database unreachable: {e}")),
            Err(_) => Some("database did not answer within 2 s".into()),
        }
    }

    /// Reads the input and processes events until `stop` is cancelled, then drains.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        let (tx, mut messages) = mpsc::channel::<Incoming>(64);
        let settings = &self.settings;
        let input = match settings.input.mode {
            InputMode::Pubsub => {
                let subscriber = Subscriber::new(
                    &settings.redis,
                    &settings.service.channel,
                    self.input_ready.clone(),
                )?;
                tokio::spawn(subscriber.run(tx, stop.clone()))
            }
            InputMode::Stream => {
                let consumer = self
                    .claims
                    .as_ref()
                    .map_or_else(crate::claims::owner_name, |c| c.owner().to_string());
                let reader = StreamInput::new(
                    &settings.redis,
                    &settings.input,
                    &consumer,
                    settings.claims.lease(),
                    self.input_ready.clone(),
                )?;
                tokio::spawn(reader.run(tx, stop.clone()))
            }
        };
        let acker = match (&self.claims, settings.input.mode) {
            (Some(claims), InputMode::Stream) => {
                Some(Acker::new(claims.connection(), &settings.input))
            }
            _ => None,
        };

        let events = Arc::new(Semaphore::new(settings.service.max_concurrent_events));
        let running = TaskTracker::new();
        // Events that a dead replica left are found at start and every half lease.
        let mut scan =
            tokio::time::interval((settings.claims.lease() / 2).max(Duration::from_secs(1)));
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'events: loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                message = messages.recv() => match message {
                    Some(message) => Next::Message(message),
                    None => break,
                },
                _ = scan.tick(), if self.claims.is_some() => Next::Scan,
            };
            match next {
                Next::Message(message) => {
                    let permit = tokio::select! {
                        biased;
                        _ = stop.cancelled() => {
                            warn!(preview = %Preview(&message.payload), "Stopping: a received event waiting for a slot is not processed.");
                            break;
                        }
                        permit = Arc::clone(&events).acquire_owned() => permit?,
                    };
                    let (worker, stop, acker) = (Arc::clone(&self), stop.clone(), acker.clone());
                    running.spawn(async move {
                        let outcome = worker.handle_incoming(&message, &stop).await;
                        if let (Some(acker), Some(entry)) = (&acker, &message.entry)
                            && outcome.settled()
                        {
                            acker.ack(entry).await;
                        }
                        drop(permit);
                    });
                }
                Next::Scan => {
                    let Some(claims) = &self.claims else { continue };
                    let active = match claims.active().await {
                        Ok(active) => active,
                        Err(e) => {
                            warn!(error = %e, "Looking for abandoned events failed.");
                            continue;
                        }
                    };
                    for event_id in active {
                        // A slot first, then the take-over: a lease taken must be renewed at once.
                        let permit = match Arc::clone(&events).try_acquire_owned() {
                            Ok(permit) => permit,
                            Err(_) => break, // busy: the next scan looks again
                        };
                        let run = claims.for_run();
                        let taken = match run.take_over(&event_id).await {
                            Ok(Some(taken)) => taken,
                            Ok(None) => continue,
                            Err(e) => {
                                warn!(error = %e, "Taking over an abandoned event failed.");
                                continue;
                            }
                        };
                        if stop.is_cancelled() {
                            let _ = run.release(&event_id).await;
                            break 'events;
                        }
                        let (worker, stop) = (Arc::clone(&self), stop.clone());
                        running.spawn(async move {
                            worker.resume_abandoned(run, taken, &stop).await;
                            drop(permit);
                        });
                    }
                }
            }
        }
        self.stopping.store(true, Ordering::Relaxed);
        input.abort();
        // Pub/sub messages received but not yet started are lost with the process: say so.
        // (Stream entries are not: they stay pending and come back.)
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
        let deadline = self.settings.service.drain_timeout() + Duration::from_secs(5);
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
        let incoming = Incoming {
            payload: message.to_vec(),
            entry: None,
        };
        self.handle_incoming(&incoming, stop).await
    }

    async fn handle_incoming(&self, incoming: &Incoming, stop: &CancellationToken) -> EventOutcome {
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
        count_event(&outcome);
        // Nobody listening is the normal case in production.
        let _ = self.outcomes.send(outcome.clone());
        outcome
    }

    pub async fn handle_event(&self, event: TalkPosted, stop: &CancellationToken) -> EventOutcome {
        let max_age = Duration::from_secs(self.settings.service.max_event_age_secs);
        if let Some(published) = event.published_at {
            let age = (Utc::now() - published).to_std().unwrap_or_default();
            if age > max_age {
                warn!(event_id = %event.event_id, talk_id = event.talk_id, age_secs = age.as_secs(),
                    "Dropped a stale event: it was published too long ago to be news.");
                return EventOutcome::Stale;
            }
        }
        let Some(claims) = &self.claims else {
            return self.run_event(event, None, None, 1, stop).await;
        };
        // A dry run is claimed apart, so that it never counts as the live event having been sent.
        let claim_id = if self.is_dry_run(&event) {
            format!("{}:dry-run", event.event_id)
        } else {
            event.event_id.clone()
        };
        let run = claims.for_run();
        let payload = event.to_json();
        let claim = match retry_redis(|| run.claim(&claim_id, &payload), stop).await {
            Ok(claim) => claim,
            Err(e) => {
                error!(event_id = %event.event_id, error = %e, "Could not claim the event; it was not sent.");
                return EventOutcome::Failed(e.to_string());
            }
        };
        match claim {
            Claim::Claimed => {
                self.run_event(event, Some((run, claim_id)), None, 1, stop)
                    .await
            }
            Claim::Resumed {
                checkpoint,
                attempts,
            } => {
                let resume = parse_checkpoint(&checkpoint);
                self.run_event(event, Some((run, claim_id)), resume, attempts, stop)
                    .await
            }
            Claim::Busy | Claim::Done => {
                let done = claim == Claim::Done;
                info!(event_id = %event.event_id, talk_id = event.talk_id,
                    status = if done { "already processed" } else { "being processed by another replica" },
                    "Skipped a duplicate event.");
                EventOutcome::Duplicate { done }
            }
        }
    }

    fn is_dry_run(&self, event: &TalkPosted) -> bool {
        event.dry_run == Some(true) || self.settings.send_mode == SendMode::DryRun
    }

    async fn resume_abandoned(
        &self,
        run: Claims,
        taken: crate::claims::TakenOver,
        stop: &CancellationToken,
    ) {
        let outcome = match TalkPosted::parse(taken.payload.as_bytes()) {
            Ok(event) => {
                info!(event_id = %taken.event_id, attempt = taken.attempts, "Resuming an event another run left unfinished.");
                let resume = parse_checkpoint(&taken.checkpoint);
                let claim = Some((run, taken.event_id.clone()));
                self.run_event(event, claim, resume, taken.attempts, stop)
                    .await
            }
            Err(rejection) => {
                // Cannot happen for payloads the worker stored itself; finish it rather than loop.
                error!(event_id = %taken.event_id, reason = %rejection, "An abandoned event cannot be read; giving it up.");
                let _ = run.finish(&taken.event_id, true).await;
                EventOutcome::Rejected(rejection)
            }
        };
        count_event(&outcome);
        let _ = self.outcomes.send(outcome);
    }

    /// Runs an event — under its claim (`claim` is the run's claim store and the claimed id), or,
    /// without claims, as is — and settles the claim.
    async fn run_event(
        &self,
        event: TalkPosted,
        claim: Option<(Claims, String)>,
        resume: Option<Checkpoint>,
        attempts: u32,
        stop: &CancellationToken,
    ) -> EventOutcome {
        let started = Instant::now();
        // Publish to start of processing, for events that are processed (not duplicates).
        if let Some(published) = event.published_at {
            let lag = (Utc::now() - published).to_std().unwrap_or_default();
            metrics::histogram!(crate::telemetry::EVENT_LAG_SECONDS).record(lag.as_secs_f64());
        }
        let dry_run = self.is_dry_run(&event);
        let resumed = resume.is_some();
        let write_every = (self.settings.database.page_size as usize)
            .min(self.settings.service.concurrency / 5)
            .max(1);
        let progress = Progress::new(resume, write_every);
        // The event stops when the process stops, or when another run took it over.
        let event_stop = stop.child_token();
        // The keeper outlives a stop: the lease must hold through the drain.
        let keeper_stop = CancellationToken::new();
        let lost = Arc::new(AtomicBool::new(false));
        let payload = event.to_json();
        let keeper = claim.clone().map(|(claims, id)| {
            tokio::spawn(keep_claim(
                claims,
                id,
                payload.clone(),
                Arc::clone(&progress),
                keeper_stop.clone(),
                event_stop.clone(),
                Arc::clone(&lost),
            ))
        });
        let reporter = tokio::spawn(report_progress(
            event.event_id.clone(),
            Arc::clone(&progress),
            keeper_stop.clone(),
        ));

        let result = self
            .process(&event, dry_run, Arc::clone(&progress), &event_stop)
            .await;

        keeper_stop.cancel();
        if let Some(keeper) = keeper {
            let _ = keeper.await;
        }
        let _ = reporter.await;
        if lost.load(Ordering::Relaxed) {
            warn!(event_id = %event.event_id, "Another run took this event over; stopped sending it.");
            return EventOutcome::Lost;
        }
        let summary = |report: FanoutReport| Summary {
            event_id: event.event_id.clone(),
            talk_id: event.talk_id,
            dry_run,
            resumed,
            report,
        };
        let claim = claim.as_ref();
        match result {
            Ok(report) => {
                self.settle_claim(claim, &payload, &progress, report.interrupted, false)
                    .await;
                // A partial fan-out is not an event's size or duration; its resume records those.
                if !report.interrupted {
                    metrics::histogram!(crate::telemetry::EVENT_FANOUT_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!(crate::telemetry::EVENT_RECIPIENTS)
                        .record(report.recipients as f64);
                }
                let summary = summary(report);
                log_summary(&summary, started);
                EventOutcome::Processed(summary)
            }
            Err(e @ (EventError::UnknownTalk { .. } | EventError::ProgramMismatch { .. })) => {
                warn!(event_id = %event.event_id, talk_id = event.talk_id, reason = %e, "Skipped an event for an unknown talk.");
                self.settle_claim(claim, &payload, &progress, false, false)
                    .await;
                EventOutcome::UnknownTalk
            }
            Err(e) => {
                let give_up = attempts >= self.settings.claims.max_attempts;
                error!(event_id = %event.event_id, talk_id = event.talk_id, error = %e, attempt = attempts,
                    will_retry = !give_up && claim.is_some(), "Event failed.");
                if let EventError::Fanout(FanoutError::Audience { report, .. }) = &e {
                    log_summary(&summary(report.clone()), started);
                }
                self.settle_claim(claim, &payload, &progress, !give_up, give_up)
                    .await;
                EventOutcome::Failed(e.to_string())
            }
        }
    }

    /// Marks the claim done (or failed), or — for an event to be continued — stores the last
    /// checkpoint and releases the lease so that another run resumes at once.
    async fn settle_claim(
        &self,
        claim: Option<&(Claims, String)>,
        payload: &str,
        progress: &Progress,
        unfinished: bool,
        failed: bool,
    ) {
        let Some((claims, id)) = claim else { return };
        let id = id.as_str();
        let never = CancellationToken::new();
        if unfinished {
            let checkpoint = serde_json::to_string(&progress.snapshot()).unwrap_or_default();
            match retry_redis(|| claims.checkpoint(id, payload, &checkpoint), &never).await {
                Ok(Renewal::Renewed) => {}
                Ok(Renewal::Lost) => {
                    warn!(
                        event_id = id,
                        "Another run owns the event now; its checkpoint stands."
                    );
                    return;
                }
                Err(e) => {
                    warn!(event_id = id, error = %e, "Could not store the last checkpoint; a resume repeats the pushes since the one before.")
                }
            }
            if let Err(e) = retry_redis(|| claims.release(id), &never).await {
                warn!(event_id = id, error = %e, "Could not release the event; another replica resumes it when its lease runs out.");
            }
        } else if let Err(e) = retry_redis(|| claims.finish(id, failed), &never).await {
            // The lease runs out and a scan resumes the event from its checkpoint: at worst the
            // pushes since the last checkpoint are repeated, under the same collapse id.
            error!(event_id = id, error = %e, "Could not mark the event done.");
        }
    }

    async fn process(
        &self,
        event: &TalkPosted,
        dry_run: bool,
        progress: Arc<Progress>,
        stop: &CancellationToken,
    ) -> Result<FanoutReport, EventError> {
        let talk = self.load_talk(event).await?;
        let content = self.templates.render(&talk, &event.event_id)?;
        // One reader per provider: each lane goes at its own provider's pace.
        let audiences = Provider::ALL
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
        let pruner = (mode == SendMode::Live)
            .then(|| Pruner::start(self.db.clone(), self.queries.prune.clone()));
        let delivery = Delivery {
            pushers: self.pushers.for_mode(mode),
            retry: RetryPolicy::from(&self.settings.retry),
            prune: pruner.as_ref().map(Pruner::sender),
        };
        let result = fan_out(
            audiences,
            Arc::from(event.event_id.as_str()),
            Arc::new(content),
            delivery,
            progress,
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

/// Audience reads open at once; a WARN when the pool is too small for every running event's
/// lanes to read at once.
fn reads_budget(settings: &Settings) -> usize {
    let reads = audience_reads(settings.database.max_connections);
    let lanes = 2 * settings.service.max_concurrent_events;
    if reads < lanes {
        warn!(
            max_connections = settings.database.max_connections,
            max_concurrent_events = settings.service.max_concurrent_events,
            audience_reads = reads,
            "database.max_connections leaves room for {reads} audience reads at once, fewer than the {lanes} lanes of service.max_concurrent_events events: some lanes will wait their turn. Set it to {} to avoid that.",
            lanes + crate::database::SHORT_STATEMENT_CONNECTIONS as usize
        );
    }
    reads
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
        resumed = summary.resumed,
        paused = %r.paused.join(","),
        dry_run = summary.dry_run,
        elapsed_ms = started.elapsed().as_millis() as u64,
        interrupted = r.interrupted,
        "Event processed."
    );
}

enum Next {
    Message(Incoming),
    Scan,
}

/// The time a stream entry was added, from its id (`<milliseconds>-<sequence>`).
fn entry_time(entry: &str) -> Option<DateTime<Utc>> {
    let ms = entry.split('-').next()?.parse::<i64>().ok()?;
    DateTime::from_timestamp_millis(ms)
}

fn parse_checkpoint(text: &str) -> Option<Checkpoint> {
    if text.is_empty() {
        return Some(Checkpoint::default());
    }
    match serde_json::from_str(text) {
        Ok(checkpoint) => Some(checkpoint),
        Err(e) => {
            warn!(error = %e, "An event's checkpoint cannot be read; resuming it from the start.");
            Some(Checkpoint::default())
        }
    }
}

/// Retries a Redis call with backoff for up to 30 s (Redis restarting, failing over).
async fn retry_redis<T, F, Fut>(
    mut call: F,
    stop: &CancellationToken,
) -> Result<T, crate::claims::ClaimError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::claims::ClaimError>>,
{
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if started.elapsed() > Duration::from_secs(30) || stop.is_cancelled() => {
                return Err(e);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis is unavailable; retrying.");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Keeps an event's claim while it runs: renews the lease every third of it, stores a checkpoint
/// whenever the fan-out says one is due, and holds the fan-out once half a lease has passed without
/// a successful renewal (sending on could race a run that takes the event over). If another run
/// owns the event now, it cancels this run's fan-out.
async fn keep_claim(
    claims: Claims,
    event_id: String,
    payload: String,
    progress: Arc<Progress>,
    stop: CancellationToken,
    event_stop: CancellationToken,
    lost: Arc<AtomicBool>,
) {
    let lease = claims.lease();
    let mut renew = tokio::time::interval(lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await; // the claim was just made
    let mut last_ok = tokio::time::Instant::now();
    loop {
        let renewing = tokio::select! {
            _ = stop.cancelled() => return,
            _ = renew.tick() => true,
            _ = progress.due.notified() => false,
            // No call may outlast this point unnoticed, however long it hangs.
            _ = tokio::time::sleep_until(last_ok + lease / 2) => {
                progress.set_hold(true);
                true
            }
        };
        let checkpoint = serde_json::to_string(&progress.snapshot()).unwrap_or_default();
        let call = async {
            if renewing {
                claims.renew(&event_id, &payload, &checkpoint).await
            } else {
                claims.checkpoint(&event_id, &payload, &checkpoint).await
            }
        };
        let result = match tokio::time::timeout(lease / 3, call).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", lease / 3)),
        };
        match result {
            Ok(Renewal::Renewed) => {
                last_ok = tokio::time::Instant::now();
                progress.set_hold(false);
            }
            Ok(Renewal::Lost) => {
                lost.store(true, Ordering::Relaxed);
                event_stop.cancel();
                return;
            }
            Err(e) => {
                warn!(event_id, error = %e, "Could not renew the event's claim.");
                if last_ok.elapsed() > lease / 2 {
                    progress.set_hold(true);
                }
                // Try again soon rather than at the next third of a lease.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                renew.reset_immediately();
            }
        }
    }
}

/// Logs a progress line every few seconds while a fan-out runs: pushes settled, devices read,
/// the total once the audience is read, the rate, and the expected finish.
async fn report_progress(event_id: String, progress: Arc<Progress>, stop: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(5);
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let settled = progress.settled.load(Ordering::Relaxed);
        let read = progress.read.load(Ordering::Relaxed);
        let all_read = progress.lanes_read.load(Ordering::Relaxed) >= 2;
        let rate = settled as f64 / started.elapsed().as_secs_f64().max(0.001);
        let eta_secs = (all_read && rate > 0.0)
            .then(|| ((read.saturating_sub(settled)) as f64 / rate).round() as u64);
        info!(
            event_id,
            done = settled,
            read,
            total = all_read.then_some(read),
            rate_per_sec = rate.round() as u64,
            eta_secs,
            "Fan-out progress."
        );
    }
}

fn count_event(outcome: &EventOutcome) {
    let result = match outcome {
        EventOutcome::Processed(s) if s.report.interrupted => "interrupted",
        EventOutcome::Processed(_) => "processed",
        EventOutcome::Rejected(_) => "rejected",
        EventOutcome::UnknownTalk => "unknown_talk",
        EventOutcome::Stale => "stale",
        EventOutcome::Duplicate { .. } => "duplicate",
        EventOutcome::Lost => "lost",
        EventOutcome::Failed(_) => "failed",
    };
    metrics::counter!(crate::telemetry::EVENTS, "result" => result).increment(1);
}

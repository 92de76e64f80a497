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
//!
//! This file holds the [`Worker`], its input loop, the drain and readiness. [`intake`] goes from
//! a message (or an event the periodic scan finds abandoned) to a claimed run, [`run`] runs one
//! event and settles its claim, [`outcome`] says what became of it, [`progress_log`] logs a long
//! fan-out's progress, and [`limits`] sizes the concurrency every event shares.

mod intake;
mod jobs;
mod limits;
mod outcome;
mod progress_log;
mod run;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub(crate) use jobs::Jobs;
pub use outcome::{EventOutcome, Summary};

use crate::apps::{AppNames, Apps};
use crate::audience::PerProvider;
use crate::claims::Claims;
use crate::config::{InputMode, SendMode, Settings, SettingsError};
use crate::content::Templates;
use crate::database::{Database, Queries};
use crate::event::Preview;
use crate::fanout::{Delivery, FanoutLimits};
use crate::input::pubsub::Subscriber;
use crate::input::stream::{Incoming, StreamInput};
use crate::pacing::Pacer;
use crate::push::Pushers;
use crate::push::metrics::PushMetrics;
use crate::push::retry::RetryPolicy;

pub struct Worker {
    settings: Arc<Settings>,
    db: Database,
    queries: Queries,
    templates: Templates,
    pushers: Pushers,
    limits: FanoutLimits,
    /// Shared in Redis when running as `notifier run`; unshared (remembering nothing) in tests
    /// that drive events directly.
    claims: Claims,
    /// Every event's outcome, for whoever follows them (tests, status endpoints).
    outcomes: broadcast::Sender<EventOutcome>,
    /// True while the input (subscription or stream group) stands: readiness follows it.
    input_ready: watch::Sender<bool>,
    /// Set when a stop begins: readiness turns 503 so no new traffic is routed here.
    stopping: AtomicBool,
    /// The apps device rows resolve against, the default first.
    apps: AppNames,
    /// The deployment's rate per app and provider; unpaced unless [`Worker::with_replicas`] says.
    pacers: Apps<PerProvider<Pacer>>,
    /// The job stream, for an event split across replicas; `None` never splits.
    jobs: Option<jobs::Jobs>,
}

enum Next {
    Message(Incoming),
    Scan,
}

impl Worker {
    /// A worker whose claims remember nothing: every event is sent, none is deduplicated. See
    /// `app::Application` for the worker `notifier run` starts.
    pub fn new(settings: Settings, db: Database, pushers: Pushers) -> Result<Self, SettingsError> {
        let queries = Queries::prepare(&settings.queries, db.backend())?;
        let templates = Templates::new(&settings.content)?;
        let apps = settings.app_names();
        let none_live = pushers
            .for_apps(&apps, settings.send_mode)
            .iter()
            .all(|(_, app)| app.iter().all(|(_, p)| p.is_none()));
        if settings.send_mode != SendMode::DryRun && none_live {
            return Err(SettingsError {
                setting: "NOTIFIER_SEND_MODE".into(),
                reason: format!(
                    "{} needs FCM or APNs, and neither is configured",
                    settings.send_mode.as_str()
                ),
            });
        }
        let limits = limits::fanout_limits(&settings);
        let claims = Claims::unshared(crate::claims::owner_name(), settings.claims.lease());
        Ok(Self {
            settings: Arc::new(settings),
            db,
            queries,
            templates,
            pushers,
            limits,
            claims,
            outcomes: broadcast::Sender::new(64),
            input_ready: watch::Sender::new(false),
            stopping: AtomicBool::new(false),
            pacers: Apps::from_fn(&apps, |_| PerProvider::from_fn(|_| Pacer::unpaced())),
            apps,
            jobs: None,
        })
    }

    /// Paces each provider for the whole deployment and shares large events with the other
    /// replicas through the job stream (what `notifier run` does).
    pub(crate) fn with_replicas(
        mut self,
        pacers: Apps<PerProvider<Pacer>>,
        jobs: jobs::Jobs,
    ) -> Self {
        self.pacers = pacers;
        self.jobs = Some(jobs);
        self
    }

    /// Claims every event in `claims` before sending it (what `notifier run` does).
    pub(crate) fn with_claims(mut self, claims: Claims) -> Self {
        self.claims = claims;
        self
    }

    /// Follows the outcome of every event from now on. A receiver that falls behind misses the
    /// oldest outcomes rather than slowing the worker.
    pub fn outcomes(&self) -> broadcast::Receiver<EventOutcome> {
        self.outcomes.subscribe()
    }

    /// How pushes go in `mode`: its pushers, the retry policy and the deployment's pace (none
    /// in a dry run: nothing reaches a provider, nothing counts against its quota).
    pub(crate) fn delivery(
        &self,
        mode: SendMode,
        prune: Option<mpsc::Sender<crate::prune::Dead>>,
    ) -> Delivery {
        let apps = &self.apps;
        let pacers = match mode {
            SendMode::DryRun => Apps::from_fn(apps, |_| PerProvider::from_fn(|_| Pacer::unpaced())),
            _ => self.pacers.clone(),
        };
        Delivery {
            apps: apps.clone(),
            metrics: Apps::from_fn(apps, |app| PushMetrics::for_app(apps.name(app))),
            pushers: self.pushers.for_apps(apps, mode),
            retry: RetryPolicy::from(&self.settings.retry),
            pacers,
            prune,
        }
    }

    /// The push limits every event shares, for pushes that are not an event's (the HTTP API's).
    pub(crate) fn limits(&self) -> &FanoutLimits {
        &self.limits
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
            // The driver's text may name the database's user and host: not for the status
            // port, which answers anyone.
            Ok(Err(_)) => Some("database unreachable".into()),
            Err(_) => Some("database did not answer within 2 s".into()),
        }
    }

    /// Reads the input and processes events until `stop` is cancelled, then drains.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        let (tx, mut messages) = mpsc::channel::<Incoming>(64);
        let input = self.spawn_input(tx, &stop)?;
        let events = Arc::new(Semaphore::new(self.settings.service.max_concurrent_events));
        let running = TaskTracker::new();
        // Events that a dead replica left are found at start and every half lease.
        let every = (self.settings.claims.lease() / 2).max(Duration::from_secs(1));
        let mut scan = tokio::time::interval(every);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.claims.is_shared();
        let jobs = tokio::spawn(Arc::clone(&self).run_jobs(
            Arc::clone(&events),
            running.clone(),
            stop.clone(),
        ));
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                message = messages.recv() => match message {
                    Some(message) => Next::Message(message),
                    None => break,
                },
                _ = scan.tick(), if shared => Next::Scan,
            };
            let flow = match next {
                Next::Message(message) => {
                    let Some(permit) = slot(&events, &message, &stop).await? else {
                        break;
                    };
                    let (worker, stop) = (Arc::clone(&self), stop.clone());
                    running.spawn(async move {
                        let outcome = worker.handle_incoming(&message, &stop).await;
                        if let (Some(acker), Some(entry)) = (&message.acker, &message.entry)
                            && outcome.settled()
                        {
                            acker.ack(entry).await;
                        }
                        drop(permit);
                    });
                    ControlFlow::Continue(())
                }
                Next::Scan => self.scan_abandoned(&events, &running, &stop).await,
            };
            if flow.is_break() {
                break;
            }
        }
        jobs.abort();
        self.drain(input, messages, running).await;
        Ok(())
    }

    fn spawn_input(
        &self,
        tx: mpsc::Sender<Incoming>,
        stop: &CancellationToken,
    ) -> anyhow::Result<JoinHandle<()>> {
        let settings = &self.settings;
        let ready = self.input_ready.clone();
        let stream = |input: &crate::input::InputSettings, ready| {
            let (owner, lease) = (self.claims.owner(), settings.claims.lease());
            let acker = self.claims.connection();
            StreamInput::new(&settings.redis, input, owner, lease, ready, acker)
        };
        Ok(match settings.input.mode {
            InputMode::Pubsub => {
                let subscriber =
                    Subscriber::new(&settings.redis, &settings.service.channel, ready)?;
                let Some(api_events) = self.api_events() else {
                    return Ok(tokio::spawn(subscriber.run(tx, stop.clone())));
                };
                // Readiness follows the channel; the API's stream reconnects on its own.
                let reader = stream(&api_events, watch::Sender::new(false))?;
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::join!(
                        subscriber.run(tx.clone(), stop.clone()),
                        reader.run(tx, stop)
                    );
                })
            }
            InputMode::Stream => {
                tokio::spawn(stream(&settings.input, ready)?.run(tx, stop.clone()))
            }
        })
    }

    /// The stream events posted over HTTP go to, read beside the channel: only by replicas
    /// whose claims are shared and that serve the API (the others never see such events).
    fn api_events(&self) -> Option<crate::input::InputSettings> {
        let settings = &self.settings;
        (self.claims.is_shared() && settings.api.addr.is_some())
            .then(|| settings.input.api_events(&settings.claims_prefix()))
    }

    /// Stops taking events and waits, within the drain timeout, for those running.
    async fn drain(
        &self,
        input: JoinHandle<()>,
        mut messages: mpsc::Receiver<Incoming>,
        running: TaskTracker,
    ) {
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
    }
}

/// A slot among `service.max_concurrent_events` for `message`, or `None` if a stop came first.
async fn slot(
    events: &Arc<Semaphore>,
    message: &Incoming,
    stop: &CancellationToken,
) -> anyhow::Result<Option<OwnedSemaphorePermit>> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => {
            warn!(preview = %Preview(&message.payload), "Stopping: a received event waiting for a slot is not processed.");
            Ok(None)
        }
        permit = Arc::clone(events).acquire_owned() => Ok(Some(permit?)),
    }
}

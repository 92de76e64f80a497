//! The worker: runs every unit of work of its deployment and send mode through the pipeline.
//! Events come from the input (pub/sub or a stream, [`crate::input`]); jobs of split events from
//! the job stream ([`jobs`]); `POST /push` notifications from the backlog ([`pushes`]). Each is
//! claimed first ([`crate::work`]): a duplicate is skipped, and while it runs a keeper renews its
//! lease, stores its checkpoints and shuts its fence if the claim is lost or the event cancelled,
//! so that if this process dies another replica resumes it where it stood.
//!
//! Events and jobs run concurrently up to `service.max_concurrent_events`, and every push of the
//! process shares one concurrency limit. On stop, no new unit is taken, fan-outs stop handing out
//! pushes, in-flight pushes get the drain timeout, and each claim is released with its checkpoint
//! for whoever runs next.
//!
//! This file holds the [`Worker`], its loop, the drain and readiness. [`intake`] goes from a
//! message (or a unit the periodic scan finds abandoned) to a claimed run, [`run`] runs one event
//! or job and settles its claim, [`coordinator`] plans a split event and sees its jobs through,
//! [`outcome`] says what became of an event, [`progress_log`] logs a long fan-out's progress, and
//! [`limits`] sizes the concurrency every unit shares.

mod coordinator;
mod heartbeat;
mod intake;
mod jobs;
mod limits;
mod outcome;
mod progress_log;
mod pushes;
mod run;
mod running;
mod settlement;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub(crate) use heartbeat::STALE as HEARTBEAT_STALE;
pub use outcome::{EventOutcome, Summary};

use crate::api::PushStats;
use crate::apps::{AppNames, Apps};
use crate::audience::PerProvider;
use crate::config::{InputMode, SendMode, Settings, SettingsError};
use crate::content::Templates;
use crate::database::{Database, Queries};
use crate::event::Preview;
use crate::fanout::FanoutLimits;
use crate::input::pubsub::Subscriber;
use crate::input::stream::StreamInput;
use crate::input::{Incoming, Input};
use crate::pacing::Pacer;
use crate::push::metrics::PushMetrics;
use crate::push::retry::RetryPolicy;
use crate::push::{Delivery, Pushers};
use crate::work::Claims;
use crate::work::stream::StreamReader;

/// Runs the units of work of one deployment in one send mode.
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
    /// Whether large events are split into jobs for every replica (a job stream is read).
    splits: bool,
    /// `/stat/app`'s counts of `POST /push` tokens, when this replica serves the API.
    stats: Option<Arc<PushStats>>,
}

/// The streams a running worker reads besides its input, made by the application.
#[derive(Default)]
pub(crate) struct Streams {
    /// The job stream of split events.
    pub jobs: Option<StreamReader>,
    /// The `POST /push` backlog, on replicas serving the API.
    pub pushes: Option<StreamReader>,
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
        let claims = Claims::unshared(crate::work::claims::owner_name(), settings.claims.lease());
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
            splits: false,
            stats: None,
        })
    }

    /// Paces each provider for the whole deployment and shares large events with the other
    /// replicas through the job stream (what `notifier run` does).
    pub(crate) fn with_replicas(mut self, pacers: Apps<PerProvider<Pacer>>) -> Self {
        self.pacers = pacers;
        self.splits = true;
        self
    }

    /// Claims every unit in `claims` before running it (what `notifier run` does).
    pub(crate) fn with_claims(mut self, claims: Claims) -> Self {
        self.claims = claims;
        self
    }

    /// Counts `POST /push` tokens for `/stat/app` (a replica serving the API).
    pub(crate) fn with_api(mut self, stats: Arc<PushStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Follows the outcome of every event from now on. A receiver that falls behind misses the
    /// oldest outcomes rather than slowing the worker.
    pub fn outcomes(&self) -> broadcast::Receiver<EventOutcome> {
        self.outcomes.subscribe()
    }

    /// How pushes go in `mode`: its pushers, the retry policy and the deployment's pace (none
    /// in a dry run: nothing reaches a provider, nothing counts against its quota).
    pub(crate) fn delivery(&self, mode: SendMode) -> Delivery {
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
        }
    }

    /// The push limits every unit shares (`/stat/app`, `PUT /config/pushers`).
    pub(crate) fn limits(&self) -> &FanoutLimits {
        &self.limits
    }

    pub(crate) fn splits(&self) -> bool {
        self.splits
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Why the worker is not ready to take events, if it is not: stopping, input not connected,
    /// or the database not answering. The reason is shown unauthenticated: it names no server.
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

    /// Reads the input (and `streams`) and runs units until `stop` is cancelled, then drains.
    pub(crate) async fn run(
        self: Arc<Self>,
        stop: CancellationToken,
        streams: Streams,
    ) -> anyhow::Result<()> {
        let (tx, mut messages) = mpsc::channel::<Incoming>(64);
        let input = tokio::spawn(self.input()?.run(tx, stop.clone()));
        let events = Arc::new(Semaphore::new(self.settings.service.max_concurrent_events));
        let running = TaskTracker::new();
        // Events that a dead replica left are found at start and every half lease.
        let every = (self.settings.claims.lease() / 2).max(Duration::from_secs(1));
        let mut scan = tokio::time::interval(every);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.claims.is_shared();
        let mut readers = Vec::new();
        if let Some(jobs) = streams.jobs {
            let task = Arc::clone(&self).run_jobs(
                jobs,
                Arc::clone(&events),
                running.clone(),
                stop.clone(),
            );
            readers.push(tokio::spawn(task));
        }
        if let Some(pushes) = streams.pushes {
            let task = Arc::clone(&self).run_pushes(pushes, running.clone(), stop.clone());
            readers.push(tokio::spawn(task));
        }
        readers.push(tokio::spawn(
            Arc::clone(&self).beat(running.clone(), stop.clone()),
        ));
        loop {
            let next = tokio::select! {
                // A stop first: nothing new is taken once it came, however much is waiting.
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
                        let outcome = worker.handle_incoming(&message, Some(permit), &stop).await;
                        if outcome.settled() {
                            message.ack().await;
                        }
                    });
                    ControlFlow::Continue(())
                }
                Next::Scan => self.scan_abandoned(&events, &running, &stop).await,
            };
            if flow.is_break() {
                break;
            }
        }
        self.drain(input, messages, running, readers).await;
        Ok(())
    }

    /// The input the settings choose. With the pub/sub input and the API on, the API's event
    /// stream is read beside the channel (only by replicas serving the API, whose claims are
    /// shared: the others never see such events).
    fn input(&self) -> anyhow::Result<Input> {
        let settings = &self.settings;
        let ready = self.input_ready.clone();
        let (group, owner) = (settings.work_group(), self.claims.owner().to_string());
        let lease = settings.claims.lease();
        let stream = |input: &crate::input::InputSettings, ready, trims| {
            StreamInput::new(
                &settings.redis,
                input,
                (&group, &owner),
                lease,
                ready,
                trims,
            )
        };
        Ok(match settings.input.mode {
            InputMode::Stream => Input::Stream(Box::new(stream(&settings.input, ready, false)?)),
            InputMode::Pubsub => {
                let subscriber =
                    Subscriber::new(&settings.redis, &settings.service.channel, ready)?;
                if !(self.claims.is_shared() && settings.api.addr.is_some()) {
                    return Ok(Input::PubSub(subscriber));
                }
                // Readiness follows the channel; the API's stream reconnects on its own.
                let api_events = settings.input.api_events(&settings.claims_prefix());
                let reader = stream(&api_events, watch::Sender::new(false), true)?;
                Input::PubSubAndApi(subscriber, Box::new(reader))
            }
        })
    }

    /// Stops taking units and waits, within the drain timeout, for those running.
    async fn drain(
        &self,
        input: JoinHandle<()>,
        mut messages: mpsc::Receiver<Incoming>,
        running: TaskTracker,
        readers: Vec<JoinHandle<()>>,
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
        for reader in readers {
            // They saw the stop: they only leave their groups.
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        info!(
            running_units = running.len(),
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
        // A stop wins over a slot that frees at the same moment: the event stays for a restart.
        biased;
        _ = stop.cancelled() => {
            warn!(preview = %Preview(&message.payload), "Stopping: a received event waiting for a slot is not processed.");
            Ok(None)
        }
        permit = Arc::clone(events).acquire_owned() => Ok(Some(permit?)),
    }
}

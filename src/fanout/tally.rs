//! What the push tasks of one unit share: the counts that become its [`FanoutReport`] (per
//! app), the pauses a credentials rejection sets (per app and provider), and [`Tally::settle`],
//! which counts a push's final outcome and acts on it (queue the token for pruning, log a failure
//! once, pause, tell the [`Observer`]).
//!
//! Everything here is touched by every push, so it is atomics and one rarely taken lock: keep it
//! that way (no allocation per push that the outcome does not already carry).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tracing::{Span, error, warn};

use super::checkpoint::{Counted, Progress};
use super::{AppReport, Content, DeadTokens, Fanout, FanoutReport};
use crate::apps::{AppId, Apps};
use crate::audience::{Device, PerProvider, Platform, Provider};
use crate::prune::Dead;
use crate::push::{Delivery, MaskedToken, PauseScope, PushOutcome, Reason};
use crate::work::Fence;

/// Told of every push a unit settles, after the tally counted it: what a caller reports per
/// token (`POST /push`'s dead tokens, its `/stat/app` counts).
pub(crate) trait Observer: Send + Sync {
    fn settled(&self, app: AppId, provider: Provider, device: &Device, outcome: &PushOutcome);
}

/// Distinct failure reasons logged per event at most; beyond, failures are only counted.
const LOGGED_REASONS: usize = 1000;

/// What a credentials rejection pauses for the rest of the event, as listed in the report.
#[derive(Clone, Copy)]
struct Pause {
    app: AppId,
    provider: Provider,
    scope: PauseScope,
}

impl Pause {
    /// `fcm`, `fcm:ios+web`, `apns` for the default app; `lite/fcm` for another.
    fn label(self, app: &str) -> String {
        let what = match self.scope {
            PauseScope::Provider => self.provider.as_str(),
            // Only FCM reaches Apple and web devices beside Android ones.
            PauseScope::NonAndroid => "fcm:ios+web",
        };
        match self.app {
            AppId::DEFAULT => what.to_string(),
            _ => format!("{app}/{what}"),
        }
    }
}

/// One app's outcomes in this event.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    pruned: AtomicU64,
    skipped: AtomicU64,
}

impl Counts {
    fn load(&self) -> [u64; 4] {
        [&self.sent, &self.failed, &self.pruned, &self.skipped].map(|c| c.load(Ordering::Relaxed))
    }
}

/// What the tasks of one unit share.
pub(super) struct Tally {
    pub(super) event_id: Arc<str>,
    pub(super) content: Content,
    pub(super) delivery: Delivery,
    pub(super) progress: Arc<Progress>,
    pub(super) fence: Arc<Fence>,
    dead: DeadTokens,
    observer: Option<Arc<dyn Observer>>,
    counts: Apps<Counts>,
    /// Devices whose row names an app this process does not serve: skipped.
    unknown_app: AtomicU64,
    /// Pushes that will not settle (see [`Tally::count_lost`]): failed, under no app.
    lost: AtomicU64,
    retries: AtomicU64,
    pages: AtomicU64,
    queries: AtomicU64,
    /// Indexed by [`PauseScope::index`].
    paused: Apps<PerProvider<[AtomicBool; PauseScope::ALL.len()]>>,
    /// Failure reasons already logged for this event: each is logged once, then only counted.
    logged: Mutex<HashSet<String>>,
    buffered: AtomicUsize,
    peak_buffered: AtomicUsize,
    interrupted: AtomicBool,
    /// The unit's span, current when the tally was made: push tasks run outside it and enter
    /// it only where they may log.
    pub(super) span: Span,
}

impl Tally {
    pub(super) fn new(fanout: Fanout) -> Self {
        let Fanout {
            event_id,
            content,
            delivery,
            dead,
            observer,
            progress,
            fence,
        } = fanout;
        Self {
            event_id,
            content,
            counts: Apps::from_fn(&delivery.apps, |_| Counts::default()),
            paused: Apps::from_fn(&delivery.apps, |_| PerProvider::default()),
            delivery,
            progress,
            fence,
            dead,
            observer,
            unknown_app: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            logged: Mutex::new(HashSet::new()),
            buffered: AtomicUsize::new(0),
            peak_buffered: AtomicUsize::new(0),
            interrupted: AtomicBool::new(false),
            span: Span::current(),
        }
    }

    fn flag(&self, pause: Pause) -> &AtomicBool {
        &self.paused[pause.app][pause.provider][pause.scope.index()]
    }

    /// Whether pushes to this device (of a served app) are paused for the rest of the event.
    pub(super) fn is_paused(&self, app: AppId, provider: Provider, device: &Device) -> bool {
        let paused = |scope: PauseScope| {
            let pause = Pause {
                app,
                provider,
                scope,
            };
            self.flag(pause).load(Ordering::Relaxed)
        };
        paused(PauseScope::Provider)
            || (device.platform != Some(Platform::Android) && paused(PauseScope::NonAndroid))
    }

    /// A page of `devices` read and waiting to be handed out.
    pub(super) fn buffer(&self, devices: usize) {
        let now = self.buffered.fetch_add(devices, Ordering::Relaxed) + devices;
        self.peak_buffered.fetch_max(now, Ordering::Relaxed);
    }

    /// Buffered devices taken (handed out, passed, or dropped by a stop).
    pub(super) fn unbuffer(&self, devices: usize) {
        self.buffered.fetch_sub(devices, Ordering::Relaxed);
    }

    pub(super) fn count_page(&self) {
        self.pages.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_query(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// Pushes that will not settle: abandoned at the drain deadline, or their task panicked.
    /// Failed, but under no app: a task that panicked or was abandoned leaves no device behind.
    pub(super) fn count_lost(&self, pushes: u64) {
        self.lost.fetch_add(pushes, Ordering::Relaxed);
    }

    /// A device of an app this process does not serve, skipped.
    pub(super) fn count_unknown_app(&self) {
        self.unknown_app.fetch_add(1, Ordering::Relaxed);
        self.progress.count_settled();
        self.progress.count_outcome(Counted::Skipped, None);
        crate::push::metrics::unknown_app();
    }

    /// The fan-out stopped before the whole audience was reached.
    pub(super) fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Logs a reason the first time this event meets it.
    fn first_time(&self, reason: impl fmt::Display) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        logged.len() < LOGGED_REASONS && logged.insert(reason.to_string())
    }

    /// Counts a push's final outcome and acts on it.
    pub(super) async fn settle(
        &self,
        (app, provider): (AppId, Provider),
        device: &Device,
        outcome: PushOutcome,
        attempts: u32,
    ) {
        self.retries
            .fetch_add(u64::from(attempts.saturating_sub(1)), Ordering::Relaxed);
        self.progress.count_settled();
        self.delivery.metrics[app].outcome(provider, outcome.kind());
        if let Some(observer) = &self.observer {
            observer.settled(app, provider, device, &outcome);
        }
        let counted = match (&outcome, &self.dead) {
            (PushOutcome::Unregistered { .. }, DeadTokens::Prune(_)) => Counted::Pruned,
            (outcome, _) => Counted::of(outcome.kind()),
        };
        let reason = (counted == Counted::Failed)
            .then(|| outcome.reason().map(Reason::metric_label))
            .flatten();
        self.progress.count_outcome(counted, reason.as_deref());
        let counts = &self.counts[app];
        match outcome {
            PushOutcome::Delivered => {
                counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            PushOutcome::Unregistered { reason, since } => {
                // APNs: a token registered again after Apple saw it invalid is alive.
                if let (Some(since), Some(updated)) = (since, device.updated_at)
                    && updated >= since
                {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    if self.first_time("re-registered") {
                        warn!(token = %MaskedToken(&device.token), %reason,
                            "The provider calls a token unregistered that was registered again since; keeping it.");
                    }
                    return;
                }
                // Boxed: the prune queue's wait is most of this future, and inline it would sit
                // in every push's task (a third of its bytes) for the few pushes that need it.
                Box::pin(self.unregistered((app, provider), device, reason)).await;
            }
            PushOutcome::Retryable { reason, .. } => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                if self.first_time(&reason) {
                    warn!(provider = provider.as_str(), app = self.delivery.apps.name(app), %reason, attempts,
                        "A push failed after its retries (further pushes failing for this reason are counted, not logged).");
                }
            }
            PushOutcome::Rejected { reason } => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                if self.first_time(&reason) {
                    warn!(provider = provider.as_str(), app = self.delivery.apps.name(app), %reason, token = %MaskedToken(&device.token),
                        "The provider rejected a push; the token is kept (further pushes failing for this reason are counted, not logged).");
                }
            }
            PushOutcome::CredentialsRejected {
                reason,
                setting,
                scope,
            } => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                let pause = Pause {
                    app,
                    provider,
                    scope,
                };
                self.credentials_rejected(pause, &reason, setting);
            }
            PushOutcome::Skipped { .. } => {
                counts.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A dead token: queued for pruning, or only counted where this send mode writes nothing.
    async fn unregistered(
        &self,
        (app, provider): (AppId, Provider),
        device: &Device,
        reason: Reason,
    ) {
        let counts = &self.counts[app];
        match &self.dead {
            DeadTokens::Prune(prune) => {
                let dead = Dead {
                    device_id: device.id,
                    token: device.token.clone(),
                    reason,
                };
                let _ = prune.send(dead).await;
                counts.pruned.fetch_add(1, Ordering::Relaxed);
                self.delivery.metrics[app].pruned(provider);
            }
            // Validate runs write nothing: "pruned" would promise a change that is not made.
            DeadTokens::Kept => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                if self.first_time(&reason) {
                    warn!(%reason,
                        "The provider reports a dead token; not pruned in this send mode (further ones are counted, not logged).");
                }
            }
            // The caller's observer reports each one.
            DeadTokens::Callers => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn credentials_rejected(&self, pause: Pause, reason: &Reason, setting: &'static str) {
        if !self.flag(pause).swap(true, Ordering::Relaxed) {
            let app = self.delivery.apps.name(pause.app);
            self.progress.pause(pause.label(app));
            // Another app's credentials are its [apps.NAME] section's, not the variable's.
            let setting = match pause.app {
                AppId::DEFAULT => setting.to_string(),
                _ => format!("[apps.{app}.{}]", pause.provider),
            };
            error!(paused = %pause.label(app), app, %reason, setting,
                "The provider rejected our credentials; these pushes are paused for the rest of this event. Check {setting}.");
        }
    }

    /// A push task ended: one that panicked never settled, so it counts as failed here.
    pub(super) fn task_ended(&self, done: Result<(), tokio::task::JoinError>) {
        if let Err(e) = done {
            error!(error = %e, "A push task panicked.");
            self.count_lost(1);
        }
    }

    pub(super) fn report(&self) -> FanoutReport {
        let names = &self.delivery.apps;
        let apps: Vec<AppReport> = self
            .counts
            .iter()
            .map(|(app, counts)| {
                let [sent, failed, pruned, skipped] = counts.load();
                AppReport {
                    app: names.name(app).to_string(),
                    sent,
                    failed,
                    pruned,
                    skipped,
                }
            })
            .collect();
        let sum = |field: fn(&AppReport) -> u64| apps.iter().map(field).sum::<u64>();
        let unknown_app = self.unknown_app.load(Ordering::Relaxed);
        let failed = sum(|a| a.failed) + self.lost.load(Ordering::Relaxed);
        let (sent, pruned) = (sum(|a| a.sent), sum(|a| a.pruned));
        let skipped = sum(|a| a.skipped) + unknown_app;
        let paused = self
            .paused
            .iter()
            .flat_map(|(app, _)| {
                Provider::ALL.into_iter().flat_map(move |provider| {
                    PauseScope::ALL.map(|scope| Pause {
                        app,
                        provider,
                        scope,
                    })
                })
            })
            .filter(|p| self.flag(*p).load(Ordering::Relaxed))
            .map(|p| p.label(names.name(p.app)))
            .collect();
        FanoutReport {
            recipients: sent + failed + pruned + skipped,
            sent,
            failed,
            pruned,
            skipped,
            retries: self.retries.load(Ordering::Relaxed),
            paused,
            pages: self.pages.load(Ordering::Relaxed),
            queries: self.queries.load(Ordering::Relaxed),
            peak_buffered: self.peak_buffered.load(Ordering::Relaxed),
            interrupted: self.is_interrupted(),
            jobs: 0,
            apps: if names.several() { apps } else { Vec::new() },
            unknown_app,
        }
    }
}

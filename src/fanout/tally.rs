//! What the push tasks of one event share: the counts that become its [`FanoutReport`], the
//! pauses a credentials rejection sets, and [`Tally::settle`], which counts a push's final
//! outcome and acts on it (queue the token for pruning, log a failure once, pause).
//!
//! Everything here is touched by every push, so it is atomics and one rarely taken lock: keep it
//! that way (no allocation per push that the outcome does not already carry).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tracing::{error, warn};

use super::checkpoint::Progress;
use super::{Delivery, FanoutReport};
use crate::audience::{Device, PerProvider, Platform, Provider};
use crate::content::Rendered;
use crate::prune::Dead;
use crate::push::metrics::PushMetrics;
use crate::push::{MaskedToken, PauseScope, PushOutcome, Reason};

/// Distinct failure reasons logged per event at most; beyond, failures are only counted.
const LOGGED_REASONS: usize = 1000;

/// What a credentials rejection pauses for the rest of the event, as listed in the report.
#[derive(Clone, Copy)]
struct Pause {
    provider: Provider,
    scope: PauseScope,
}

impl Pause {
    fn label(self) -> &'static str {
        match self.scope {
            PauseScope::Provider => self.provider.as_str(),
            // Only FCM reaches Apple and web devices beside Android ones.
            PauseScope::NonAndroid => "fcm:ios+web",
        }
    }
}

/// What the tasks of one event share.
pub(super) struct Tally {
    pub(super) event_id: Arc<str>,
    pub(super) content: Arc<Rendered>,
    pub(super) delivery: Delivery,
    pub(super) progress: Arc<Progress>,
    sent: AtomicU64,
    failed: AtomicU64,
    pruned: AtomicU64,
    skipped: AtomicU64,
    retries: AtomicU64,
    pages: AtomicU64,
    queries: AtomicU64,
    /// Indexed by [`PauseScope::index`].
    paused: PerProvider<[AtomicBool; PauseScope::ALL.len()]>,
    /// Failure reasons already logged for this event: each is logged once, then only counted.
    logged: Mutex<HashSet<String>>,
    buffered: AtomicUsize,
    peak_buffered: AtomicUsize,
    interrupted: AtomicBool,
}

impl Tally {
    pub(super) fn new(
        event_id: Arc<str>,
        content: Arc<Rendered>,
        delivery: Delivery,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            event_id,
            content,
            delivery,
            progress,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            paused: PerProvider::default(),
            logged: Mutex::new(HashSet::new()),
            buffered: AtomicUsize::new(0),
            peak_buffered: AtomicUsize::new(0),
            interrupted: AtomicBool::new(false),
        }
    }

    fn flag(&self, pause: Pause) -> &AtomicBool {
        &self.paused[pause.provider][pause.scope.index()]
    }

    /// Whether pushes to this device are paused for the rest of the event.
    pub(super) fn is_paused(&self, provider: Provider, device: &Device) -> bool {
        let paused =
            |scope: PauseScope| self.flag(Pause { provider, scope }).load(Ordering::Relaxed);
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
    pub(super) fn count_lost(&self, pushes: u64) {
        self.failed.fetch_add(pushes, Ordering::Relaxed);
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
        provider: Provider,
        device: &Device,
        outcome: PushOutcome,
        attempts: u32,
    ) {
        self.retries
            .fetch_add(u64::from(attempts.saturating_sub(1)), Ordering::Relaxed);
        self.progress.count_settled();
        PushMetrics::get().outcome(provider, outcome.kind());
        match outcome {
            PushOutcome::Delivered => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            PushOutcome::Unregistered { reason, since } => {
                // APNs: a token registered again after Apple saw it invalid is alive.
                if let (Some(since), Some(updated)) = (since, device.updated_at)
                    && updated >= since
                {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    if self.first_time("re-registered") {
                        warn!(token = %MaskedToken(&device.token), %reason,
                            "The provider calls a token unregistered that was registered again since; keeping it.");
                    }
                    return;
                }
                self.unregistered(provider, device, reason).await;
            }
            PushOutcome::Retryable { reason, .. } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if self.first_time(&reason) {
                    warn!(provider = provider.as_str(), %reason, attempts,
                        "A push failed after its retries (further pushes failing for this reason are counted, not logged).");
                }
            }
            PushOutcome::Rejected { reason } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if self.first_time(&reason) {
                    warn!(provider = provider.as_str(), %reason, token = %MaskedToken(&device.token),
                        "The provider rejected a push; the token is kept (further pushes failing for this reason are counted, not logged).");
                }
            }
            PushOutcome::CredentialsRejected {
                reason,
                setting,
                scope,
            } => self.credentials_rejected(Pause { provider, scope }, &reason, setting),
            PushOutcome::Skipped { .. } => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A dead token: queued for pruning, or only counted where this send mode writes nothing.
    async fn unregistered(&self, provider: Provider, device: &Device, reason: Reason) {
        match &self.delivery.prune {
            Some(prune) => {
                let dead = Dead {
                    device_id: device.id,
                    token: device.token.clone(),
                    reason,
                };
                let _ = prune.send(dead).await;
                self.pruned.fetch_add(1, Ordering::Relaxed);
                PushMetrics::get().pruned(provider);
            }
            // Validate runs write nothing: "pruned" would promise a change that is not made.
            None => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if self.first_time(&reason) {
                    warn!(%reason,
                        "The provider reports a dead token; not pruned in this send mode (further ones are counted, not logged).");
                }
            }
        }
    }

    fn credentials_rejected(&self, pause: Pause, reason: &Reason, setting: &'static str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if !self.flag(pause).swap(true, Ordering::Relaxed) {
            error!(paused = pause.label(), %reason, setting,
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
        let (sent, failed, pruned, skipped) = (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.pruned.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
        );
        FanoutReport {
            recipients: sent + failed + pruned + skipped,
            sent,
            failed,
            pruned,
            skipped,
            retries: self.retries.load(Ordering::Relaxed),
            paused: Provider::ALL
                .into_iter()
                .flat_map(|provider| PauseScope::ALL.map(|scope| Pause { provider, scope }))
                .filter(|p| self.flag(*p).load(Ordering::Relaxed))
                .map(Pause::label)
                .collect(),
            pages: self.pages.load(Ordering::Relaxed),
            queries: self.queries.load(Ordering::Relaxed),
            peak_buffered: self.peak_buffered.load(Ordering::Relaxed),
            interrupted: self.is_interrupted(),
            jobs: 0,
        }
    }
}

/// A device not attempted, and why (`fcm not configured`, `apns paused`).
pub(crate) fn skipped(provider: Provider, why: &str) -> PushOutcome {
    PushOutcome::Skipped {
        reason: format!("{} {why}", provider.as_str()),
    }
}

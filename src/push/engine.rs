//! The push engine: how one push goes, whoever asked for it (an event's lane, a job's, a
//! `POST /push` notification's). Admission first ([`PushLimits::admit`]: the app's provider
//! permit, then the global one, both held until the push is done), then [`Delivery::send`]: the
//! app's pace and the retry policy, each attempt let through by the run's [`Gate`] (the fence of
//! its claim), the in-flight gauge and the duration in the app's metrics.
//!
//! A provider's permits are its share of the global ones, so a slow or failing provider never
//! takes every slot (the default share gives way while nothing else asks: `share`); what the push's outcome then does (count, prune, pause, report) is the
//! caller's (`fanout::tally`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::limit::PushLimit;
use super::metrics::PushMetrics;
use super::retry::{Delivered, RetryPolicy, deliver};
use super::share::{ShareSlot, Shares};
use super::{ProviderPushers, Push, PushOutcome, Pusher};
use crate::apps::{AppId, AppNames, Apps};
use crate::device::{PerProvider, Provider};
use crate::pacing::Pacer;

/// Whether a run may start a push (or another attempt of one) now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Go,
    /// Not now: the run's claim cannot be trusted at the moment (Redis slow or away).
    Hold,
    /// Never again: the run lost its claim, or its work was cancelled.
    Shut,
}

/// What lets a run's pushes through: the fence of the run's claim.
pub(crate) trait Gate: Send + Sync {
    fn admission(&self) -> Admission;
}

/// A gate that is always open (a push with no claim behind it: `notifier send`).
pub(crate) struct Open;

impl Gate for Open {
    fn admission(&self) -> Admission {
        Admission::Go
    }
}

/// The limits every push of the process shares.
#[derive(Debug, Clone)]
pub(crate) struct PushLimits {
    /// Pushes in flight at once across the process.
    pub permits: Arc<Semaphore>,
    /// The same semaphore's limit, changeable at run time (`PUT /config/pushers`).
    pub limit: Arc<PushLimit>,
    /// Each app's provider share of those permits.
    pub shares: Arc<Shares>,
    /// After a stop, how long pushes in flight may take before they are abandoned.
    pub drain_timeout: Duration,
}

/// What a push holds until it is done: its slot within its provider's share (none where the
/// share gave way) and a global permit.
#[derive(Debug)]
pub(crate) struct Permits {
    _share: ShareSlot,
    _global: OwnedSemaphorePermit,
}

impl PushLimits {
    /// The permits for one push of `app` through `provider`, the share's first (so a provider
    /// waits within its share); `None` when `stop` came first.
    pub(crate) async fn admit(
        &self,
        app: AppId,
        provider: Provider,
        stop: &CancellationToken,
    ) -> Option<Permits> {
        let permits = async {
            let share = self.shares.slot(app, provider).await;
            let global = Arc::clone(&self.permits).acquire_owned().await.ok()?;
            Some(Permits {
                _share: share,
                _global: global,
            })
        };
        tokio::select! {
            biased; // a stop wins over a permit that frees at the same moment
            _ = stop.cancelled() => None,
            permits = permits => permits,
        }
    }
}

/// How pushes go in one send mode: its pushers, retries, pace and metrics, per app.
#[derive(Clone)]
pub(crate) struct Delivery {
    /// The apps the devices' [`AppId`]s index.
    pub apps: AppNames,
    /// The pusher for each app and provider; `None` where the provider is not configured.
    pub pushers: Apps<ProviderPushers>,
    pub retry: RetryPolicy,
    /// The deployment's rate for each app and provider (unpaced in dry runs).
    pub pacers: Apps<PerProvider<Pacer>>,
    /// Each app's push metrics (labelled with its name).
    pub metrics: Apps<Arc<PushMetrics>>,
}

impl Delivery {
    /// One push: its app's pace and retries, timed and counted in flight in its app's metrics (a
    /// guard, so an aborted or panicking push still leaves the gauge). `paused` stops further
    /// attempts once the provider rejected our credentials; `gate` holds or withdraws them.
    /// `None`: withdrawn unfinished (the run may send nothing more), so it is not settled.
    pub(crate) async fn send(
        &self,
        (app, provider): (AppId, Provider),
        pusher: &dyn Pusher,
        push: &Push,
        paused: &(dyn Fn() -> bool + Send + Sync),
        gate: &dyn Gate,
    ) -> Option<Delivered> {
        let metrics = &self.metrics[app];
        let _in_flight = metrics.in_flight_guard(provider);
        let started = std::time::Instant::now();
        let pacer = &self.pacers[app][provider];
        let app_name = self.apps.name(app);
        let done = deliver(pusher, push, &self.retry, pacer, app_name, paused, gate).await;
        metrics.duration(provider, started.elapsed().as_secs_f64());
        done
    }
}

/// A device not attempted, and why (`fcm not configured`, `apns paused`).
pub(crate) fn skipped(provider: Provider, why: &str) -> PushOutcome {
    PushOutcome::Skipped {
        reason: format!("{} {why}", provider.as_str()),
    }
}

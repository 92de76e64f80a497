//! The metrics every push touches, by app and provider: outcomes, duration, pushes in flight,
//! retries and pruned tokens. Their names and help texts are [`crate::telemetry`]'s; the handles
//! live here, beside the outcome types they count, and are made once per app (name) so a push
//! costs no registry lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::audience::{PerProvider, Provider};
use crate::push::{OutcomeKind, Reason};
use crate::telemetry::{
    DEVICES_UNKNOWN_APP, PUSH_DURATION_SECONDS, PUSH_RETRIES, PUSHES, PUSHES_IN_FLIGHT,
    TOKENS_PRUNED,
};

/// Handles for the metrics every push of one app touches.
pub(crate) struct PushMetrics {
    /// Indexed by [`OutcomeKind::index`].
    pushes: PerProvider<[Counter; OutcomeKind::ALL.len()]>,
    duration: PerProvider<Histogram>,
    in_flight: PerProvider<Gauge>,
    pruned: PerProvider<Counter>,
}

impl PushMetrics {
    /// The handles labelled `app` (`default` for the top-level app), made on first use.
    pub(crate) fn for_app(app: &str) -> Arc<PushMetrics> {
        static BY_APP: OnceLock<Mutex<HashMap<String, Arc<PushMetrics>>>> = OnceLock::new();
        let mut by_app = BY_APP
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let made = by_app
            .entry(app.to_string())
            .or_insert_with(|| Arc::new(Self::new(app)));
        Arc::clone(made)
    }

    fn new(app: &str) -> Self {
        let app = app.to_string();
        Self {
            pushes: PerProvider::from_fn(|p| {
                OutcomeKind::ALL.map(|o| {
                    counter!(PUSHES, "app" => app.clone(), "provider" => p.as_str(), "outcome" => o.label())
                })
            }),
            duration: PerProvider::from_fn(
                |p| histogram!(PUSH_DURATION_SECONDS, "app" => app.clone(), "provider" => p.as_str()),
            ),
            in_flight: PerProvider::from_fn(
                |p| gauge!(PUSHES_IN_FLIGHT, "app" => app.clone(), "provider" => p.as_str()),
            ),
            pruned: PerProvider::from_fn(
                |p| counter!(TOKENS_PRUNED, "app" => app.clone(), "provider" => p.as_str()),
            ),
        }
    }

    pub(crate) fn outcome(&self, provider: Provider, outcome: OutcomeKind) {
        self.pushes[provider][outcome.index()].increment(1);
    }

    pub(crate) fn duration(&self, provider: Provider, seconds: f64) {
        self.duration[provider].record(seconds);
    }

    /// Counts one push in flight until the guard is dropped.
    pub(crate) fn in_flight_guard(&self, provider: Provider) -> InFlight {
        let gauge = self.in_flight[provider].clone();
        gauge.increment(1.0);
        InFlight(gauge)
    }

    pub(crate) fn pruned(&self, provider: Provider) {
        self.pruned[provider].increment(1);
    }
}

/// One push in `notifier_pushes_in_flight` while it lives.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A retry, labelled by the failure's code (`UNAVAILABLE`, `timeout`, `ServiceUnavailable`…),
/// never by its message.
pub(crate) fn retry(app: &str, provider: Provider, reason: &Reason) {
    counter!(PUSH_RETRIES, "app" => app.to_string(), "provider" => provider.as_str(), "reason" => reason.metric_label())
        .increment(1);
}

/// A device skipped because its row names an app this process does not serve. No label: the
/// names come from the database, and a label must not grow with what rows hold.
pub(crate) fn unknown_app() {
    counter!(DEVICES_UNKNOWN_APP).increment(1);
}

//! The metrics every push touches, by provider: outcomes, duration, pushes in flight, retries
//! and pruned tokens. Their names and help texts are [`crate::telemetry`]'s; the handles live here,
//! beside the outcome types they count, and are made once so a push costs no registry lookup.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::audience::{PerProvider, Provider};
use crate::push::{OutcomeKind, Reason};
use crate::telemetry::{
    PUSH_DURATION_SECONDS, PUSH_RETRIES, PUSHES, PUSHES_IN_FLIGHT, TOKENS_PRUNED,
};

/// Handles for the metrics every push touches.
pub struct PushMetrics {
    /// Indexed by [`OutcomeKind::index`].
    pushes: PerProvider<[Counter; OutcomeKind::ALL.len()]>,
    duration: PerProvider<Histogram>,
    in_flight: PerProvider<Gauge>,
    pruned: PerProvider<Counter>,
}

impl PushMetrics {
    pub fn get() -> &'static PushMetrics {
        static METRICS: OnceLock<PushMetrics> = OnceLock::new();
        METRICS.get_or_init(|| PushMetrics {
            pushes: PerProvider::from_fn(|p| {
                OutcomeKind::ALL
                    .map(|o| counter!(PUSHES, "provider" => p.as_str(), "outcome" => o.label()))
            }),
            duration: PerProvider::from_fn(
                |p| histogram!(PUSH_DURATION_SECONDS, "provider" => p.as_str()),
            ),
            in_flight: PerProvider::from_fn(|p| gauge!(PUSHES_IN_FLIGHT, "provider" => p.as_str())),
            pruned: PerProvider::from_fn(|p| counter!(TOKENS_PRUNED, "provider" => p.as_str())),
        })
    }

    pub fn outcome(&self, provider: Provider, outcome: OutcomeKind) {
        self.pushes[provider][outcome.index()].increment(1);
    }

    pub fn duration(&self, provider: Provider, seconds: f64) {
        self.duration[provider].record(seconds);
    }

    /// Counts one push in flight until the guard is dropped.
    pub fn in_flight_guard(&self, provider: Provider) -> InFlight {
        let gauge = self.in_flight[provider].clone();
        gauge.increment(1.0);
        InFlight(gauge)
    }

    pub fn pruned(&self, provider: Provider) {
        self.pruned[provider].increment(1);
    }
}

/// One push in `notifier_pushes_in_flight` while it lives.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A retry, labelled by the failure's code (`UNAVAILABLE`, `timeout`, `ServiceUnavailable`…),
/// never by its message.
pub fn retry(provider: Provider, reason: &Reason) {
    counter!(PUSH_RETRIES, "provider" => provider.as_str(), "reason" => reason.metric_label())
        .increment(1);
}

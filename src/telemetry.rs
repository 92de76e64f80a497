//! Logging and metrics. Logs: human-readable lines for a terminal (`LOG_FORMAT=pretty`) or one
//! JSON object per line for a log pipeline (`LOG_FORMAT=json`), filtered by `RUST_LOG` (default
//! `info`). Metrics: Prometheus, through the `metrics` crate; the names are below and in the README.
//!
//! Per-push metrics use handles registered once, so the hot path pays an atomic add, not a lookup.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::audience::{PerProvider, Provider};
use crate::config::LogFormat;
use crate::push::{OutcomeKind, Reason};

pub const EVENTS: &str = "notifier_events_total";
pub const EVENT_FANOUT_SECONDS: &str = "notifier_event_fanout_seconds";
pub const EVENT_RECIPIENTS: &str = "notifier_event_recipients";
pub const EVENT_LAG_SECONDS: &str = "notifier_event_lag_seconds";
pub const PUSHES: &str = "notifier_pushes_total";
pub const PUSH_DURATION_SECONDS: &str = "notifier_push_duration_seconds";
pub const PUSHES_IN_FLIGHT: &str = "notifier_pushes_in_flight";
pub const PUSH_RETRIES: &str = "notifier_push_retries_total";
pub const TOKENS_PRUNED: &str = "notifier_tokens_pruned_total";
pub const REDIS_RECONNECTS: &str = "notifier_redis_reconnects_total";
pub const BUILD_INFO: &str = "notifier_build_info";

/// Installs the global subscriber; a second call (as in tests) leaves the first in place.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Pretty => builder
            .with_target(false)
            // Colour codes only help a person at a terminal; in files they are noise.
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Installs the Prometheus recorder (once per process) and returns the handle that renders it.
/// Call it before any metric is touched: handles taken earlier would record nowhere.
pub fn install_metrics() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let seconds = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        600.0,
    ];
    let devices = [
        1.0,
        10.0,
        100.0,
        1_000.0,
        10_000.0,
        100_000.0,
        1_000_000.0,
        10_000_000.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)?
        .set_buckets_for_metric(Matcher::Full(EVENT_RECIPIENTS.into()), &devices)?
        .install_recorder()?;
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe_and_register();
    // Histograms are folded into their buckets by upkeep.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .ok();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// What becomes of an event, as `notifier_events_total{result}` labels (see `count_event` in the
/// worker).
pub const EVENT_RESULTS: [&str; 8] = [
    "processed",
    "interrupted",
    "duplicate",
    "rejected",
    "stale",
    "unknown_talk",
    "lost",
    "failed",
];

/// HELP lines for every metric, and the series whose labels are known in advance created at zero.
/// Prometheus's `increase()` cannot count a series' first increment when the series appears
/// with it, and an alert on "no event processed" needs the series before any event arrives.
fn describe_and_register() {
    describe_counter!(EVENTS, "Events by what became of them.");
    describe_histogram!(
        EVENT_FANOUT_SECONDS,
        "Time from an event's start to its last push."
    );
    describe_histogram!(EVENT_RECIPIENTS, "Devices per event.");
    describe_histogram!(
        EVENT_LAG_SECONDS,
        "Time from published_at to the start of processing."
    );
    describe_counter!(PUSHES, "Final outcome of every push.");
    describe_histogram!(PUSH_DURATION_SECONDS, "One push, retries included.");
    describe_gauge!(PUSHES_IN_FLIGHT, "Pushes being sent now.");
    describe_counter!(PUSH_RETRIES, "Retries, by the failure's code.");
    describe_counter!(TOKENS_PRUNED, "Dead tokens disabled.");
    describe_counter!(
        REDIS_RECONNECTS,
        "Subscription or stream connections re-made."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
    for result in EVENT_RESULTS {
        counter!(EVENTS, "result" => result).increment(0);
    }
    PushMetrics::get();
    counter!(REDIS_RECONNECTS).increment(0);
}

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

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

use crate::audience::Provider;

/// How log lines are written (`LOG_FORMAT`). Here, not in config, so telemetry imports no settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

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

/// Final push outcomes, as `notifier_pushes_total{outcome}` labels.
pub const OUTCOMES: [&str; 6] = [
    "delivered",
    "unregistered",
    "retryable",
    "rejected",
    "credentials_rejected",
    "skipped",
];

/// Handles for the metrics every push touches.
pub struct PushMetrics {
    pushes: [[Counter; 6]; 2],
    duration: [Histogram; 2],
    in_flight: [Gauge; 2],
    pruned: [Counter; 2],
}

fn lane(provider: Provider) -> usize {
    usize::from(provider == Provider::Apns)
}

impl PushMetrics {
    pub fn get() -> &'static PushMetrics {
        static METRICS: OnceLock<PushMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let per = |p: &'static str| {
                OUTCOMES.map(|o| counter!(PUSHES, "provider" => p, "outcome" => o))
            };
            PushMetrics {
                pushes: [per("fcm"), per("apns")],
                duration: ["fcm", "apns"]
                    .map(|p| histogram!(PUSH_DURATION_SECONDS, "provider" => p)),
                in_flight: ["fcm", "apns"].map(|p| gauge!(PUSHES_IN_FLIGHT, "provider" => p)),
                pruned: ["fcm", "apns"].map(|p| counter!(TOKENS_PRUNED, "provider" => p)),
            }
        })
    }

    pub fn outcome(&self, provider: Provider, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.pushes[lane(provider)][i].increment(1);
        }
    }

    pub fn duration(&self, provider: Provider, seconds: f64) {
        self.duration[lane(provider)].record(seconds);
    }

    /// Counts one push in flight until the guard is dropped.
    pub fn in_flight_guard(&self, provider: Provider) -> InFlight {
        let gauge = self.in_flight[lane(provider)].clone();
        gauge.increment(1.0);
        InFlight(gauge)
    }

    pub fn pruned(&self, provider: Provider) {
        self.pruned[lane(provider)].increment(1);
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
pub fn retry(provider: Provider, reason: &str) {
    counter!(PUSH_RETRIES, "provider" => provider.as_str(), "reason" => reason_code(reason))
        .increment(1);
}

/// `fcm:UNAVAILABLE: The service…` → `UNAVAILABLE`; `apns:transport: reset` → `transport`.
pub fn reason_code(reason: &str) -> String {
    let code = reason.split(':').nth(1).unwrap_or(reason).trim();
    code.chars()
        .take(32)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_reasons_become_short_codes_without_messages() {
        assert_eq!(
            reason_code("fcm:UNAVAILABLE: The service is currently unavailable."),
            "UNAVAILABLE"
        );
        assert_eq!(
            reason_code("fcm:transport: error sending request for url (https://x/y)"),
            "transport"
        );
        assert_eq!(reason_code("apns:HTTP 503"), "HTTP_503");
        assert_eq!(reason_code("apns:TooManyRequests"), "TooManyRequests");
    }
}

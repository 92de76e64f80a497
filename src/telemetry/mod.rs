//! Logging and metrics. Logs: human-readable lines for a terminal (`LOG_FORMAT=pretty`) or one
//! JSON object per line for a log pipeline (`LOG_FORMAT=json`), filtered by `RUST_LOG` (default
//! `info`). Metrics: Prometheus, through the `metrics` crate; the names are below and in the README.
//!
//! Per-push metrics use handles registered once, so the hot path pays an atomic add, not a lookup.
//!
//! Every line logged while an event runs carries the event's span fields (`event_id`, `talk_id`,
//! `dry_run`): in pretty logs as the span's prefix, in JSON at the top level ([`json_log`]).
//! Errors are logged with their causes ([`ErrorChain`]). No value breaks a line: pretty lines
//! escape control characters ([`pretty_fields`]), JSON strings escape them anyway.

mod json_log;
mod pretty_fields;

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How log lines are written (`LOG_FORMAT`). Here, not in config, so telemetry imports no settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

pub(crate) const EVENTS: &str = "notifier_events_total";
pub(crate) const EVENT_FANOUT_SECONDS: &str = "notifier_event_fanout_seconds";
pub(crate) const EVENT_RECIPIENTS: &str = "notifier_event_recipients";
pub(crate) const EVENT_LAG_SECONDS: &str = "notifier_event_lag_seconds";
pub(crate) const PUSHES: &str = "notifier_pushes_total";
pub(crate) const PUSH_DURATION_SECONDS: &str = "notifier_push_duration_seconds";
pub(crate) const PUSHES_IN_FLIGHT: &str = "notifier_pushes_in_flight";
pub(crate) const PUSH_RETRIES: &str = "notifier_push_retries_total";
pub(crate) const TOKENS_PRUNED: &str = "notifier_tokens_pruned_total";
pub(crate) const DEVICES_UNKNOWN_APP: &str = "notifier_devices_unknown_app_total";
pub(crate) const API_DEAD_TOKENS: &str = "notifier_api_dead_tokens_total";
pub(crate) const API_REJECTED: &str = "notifier_api_rejected_total";
pub(crate) const REDIS_RECONNECTS: &str = "notifier_redis_reconnects_total";
pub(crate) const FENCE_HOLDS: &str = "notifier_fence_holds_total";
pub(crate) const BUILD_INFO: &str = "notifier_build_info";

/// Installs the global subscriber; a second call (as in tests) leaves the first in place.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Pretty => builder
            .with_target(false)
            .fmt_fields(pretty_fields::EscapedFields)
            // Colour codes only help a person at a terminal; in files they are noise.
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json_log::FlatJson)
            .try_init(),
    };
}

/// An error and its causes, `outer: cause: root cause`, for a log field: the outer message says
/// what failed, the causes say why, and an operator needs both.
pub(crate) struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Installs the Prometheus recorder (once per process) and returns the handle that renders it.
/// Call it before any metric is touched: handles taken earlier would record nowhere.
pub(crate) fn install_metrics() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError>
{
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
pub(crate) const EVENT_RESULTS: [&str; 9] = [
    "processed",
    "cancelled",
    "interrupted",
    "duplicate",
    "rejected",
    "stale",
    "unknown_talk",
    "lost",
    "failed",
];

/// Why a run held a new push, as `notifier_fence_holds_total{reason}` labels: its lease not
/// renewed in time to trust, or a checkpoint not yet stored (`work::fence::HoldCause`).
pub(crate) const FENCE_HOLD_REASONS: [&str; 2] = ["lease", "checkpoint"];

/// Why `POST /push` left a notification out, as `notifier_api_rejected_total{reason}` labels
/// (`Invalid::label` in `api::gaurun`; a test there keeps the two lists equal).
pub(crate) const API_REJECTED_REASONS: [&str; 14] = [
    "no_token",
    "empty_token",
    "token_too_long",
    "token_control_character",
    "platform",
    "empty_message",
    "identifier_too_long",
    "push_type",
    "badge",
    "expiry",
    "time_to_live",
    "priority",
    "extend_key",
    "reserved_key",
];

/// HELP lines for every metric, and the series whose labels are known in advance created at zero.
/// Prometheus's `increase()` cannot count a series' first increment when the series appears
/// with it, and an alert on "no event processed" needs the series before any event arrives.
fn describe_and_register() {
    crate::pacing::describe_metrics();
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
        DEVICES_UNKNOWN_APP,
        "Devices skipped because their app is not one this notifier serves."
    );
    describe_counter!(
        API_DEAD_TOKENS,
        "Dead tokens in POST /push, logged and kept (the caller owns them)."
    );
    for provider in crate::device::Provider::ALL {
        let app = crate::apps::DEFAULT_APP;
        counter!(API_DEAD_TOKENS, "app" => app, "provider" => provider.as_str()).increment(0);
    }
    describe_counter!(
        API_REJECTED,
        "POST /push notifications left out (or, in strict mode, refusing their request), by reason."
    );
    for reason in API_REJECTED_REASONS {
        counter!(API_REJECTED, "reason" => reason).increment(0);
    }
    describe_counter!(
        REDIS_RECONNECTS,
        "Subscription or stream connections re-made."
    );
    describe_counter!(
        FENCE_HOLDS,
        "Times a run held a new push: its lease not renewed in time, or too many finished pushes waiting for a stored checkpoint."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
    for reason in FENCE_HOLD_REASONS {
        counter!(FENCE_HOLDS, "reason" => reason).increment(0);
    }
    for result in EVENT_RESULTS {
        counter!(EVENTS, "result" => result).increment(0);
    }
    counter!(REDIS_RECONNECTS).increment(0);
    counter!(DEVICES_UNKNOWN_APP).increment(0);
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A log writer the tests read back: what the formats under test wrote.
    #[derive(Clone, Default)]
    pub(in crate::telemetry) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        pub(in crate::telemetry) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn an_error_chain_names_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading the talk failed")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "reading the talk failed: connection reset"
        );
    }
}

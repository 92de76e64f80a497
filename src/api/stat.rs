//! Gaurun's figures and its one setting changed at run time: `GET /stat/app` (the backlog, the
//! pushes in flight, each platform's successes and errors since start as counted by `deliver`),
//! `GET /stat/go` (the process's runtime) and `PUT /config/pushers?max=N`. Like Gaurun's, the
//! counts are the process's own, not the deployment's; the deployment's are in `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiState;
use super::guard::Family;
use crate::device::{PerProvider, Provider};

/// Successes and errors per provider (iOS is APNs, Android is FCM, as Gaurun's platform codes).
#[derive(Debug, Default)]
pub(crate) struct PushStats {
    success: PerProvider<AtomicU64>,
    error: PerProvider<AtomicU64>,
}

impl PushStats {
    pub(crate) fn count(&self, provider: Provider, success: bool) {
        let counter = if success {
            &self.success[provider]
        } else {
            &self.error[provider]
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(push_success, push_error)` for the provider.
    pub(crate) fn of(&self, provider: Provider) -> (u64, u64) {
        (
            self.success[provider].load(Ordering::Relaxed),
            self.error[provider].load(Ordering::Relaxed),
        )
    }
}

/// `GET /stat/app`: Gaurun's fields. `queue_*` are the deployment's backlog (entries waiting or
/// being sent), `pusher_*` this process's pushes in flight (the events' too: they share the limit).
pub(super) async fn app(State(state): State<ApiState>) -> Response {
    let gaurun = Family::Gaurun;
    let (Some(backlog), Some(limit)) = (&state.backlog, &state.limit) else {
        return gaurun.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no backlog in this process",
        );
    };
    let usage = match backlog.len().await {
        Ok(usage) => usage,
        Err(e) => return gaurun.error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let platform = |provider| {
        let (success, error) = state.stats.of(provider);
        json!({"push_success": success, "push_error": error})
    };
    Json(json!({
        "queue_max": backlog.max(),
        "queue_usage": usage,
        "pusher_max": limit.max(),
        "pusher_count": limit.in_flight(),
        "ios": platform(Provider::Apns),
        "android": platform(Provider::Fcm),
    }))
    .into_response()
}

/// `GET /stat/go`: the figures of golang-stats-api-handler that a Rust process can give
/// honestly. Tasks stand for goroutines, worker threads for GOMAXPROCS, the resident set for
/// `memory_sys`; the Go allocator's and collector's fields (`heap_*`, `gc_*`, `memory_mallocs`…)
/// have no counterpart and are left out rather than sent as zeros.
pub(super) async fn go() -> Response {
    let runtime = tokio::runtime::Handle::current().metrics();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Json(json!({
        "time": nanos,
        "go_version": format!("notifier {}", env!("CARGO_PKG_VERSION")),
        "go_os": std::env::consts::OS,
        "go_arch": std::env::consts::ARCH,
        "cpu_num": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "goroutine_num": runtime.num_alive_tasks(),
        "gomaxprocs": runtime.num_workers(),
        "memory_sys": resident_bytes(),
    }))
    .into_response()
}

/// The process's resident set (`VmRSS` of /proc/self/status); `null` where there is no /proc.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `PUT /config/pushers?max=N`: this process's pushes in flight, with Gaurun's answers. Unlike
/// Gaurun, 0 is refused too: it would stop every push.
pub(super) async fn pushers(State(state): State<ApiState>, RawQuery(query): RawQuery) -> Response {
    let gaurun = Family::Gaurun;
    let max = form_urlencoded_max(query.as_deref().unwrap_or(""));
    let Some(max) = max.filter(|m| *m > 0) else {
        return gaurun.error(StatusCode::BAD_REQUEST, "malformed value");
    };
    let Some(limit) = &state.limit else {
        return gaurun.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no push limit in this process",
        );
    };
    limit.set(max).await;
    tracing::info!(max, "Pushes in flight limit changed over the API.");
    gaurun.error(StatusCode::OK, "ok")
}

/// The first `max` parameter as a number (at most a million: more is no limit a process has).
fn form_urlencoded_max(query: &str) -> Option<usize> {
    let value = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "max")?
        .1;
    value.parse::<usize>().ok().filter(|m| *m <= 1_000_000)
}

/// Any other method on `/config/pushers`: Gaurun's 400.
pub(super) async fn not_put() -> Response {
    Family::Gaurun.error(StatusCode::BAD_REQUEST, "method must be PUT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_is_read_from_the_query_and_bounded() {
        assert_eq!(form_urlencoded_max("max=8"), Some(8));
        assert_eq!(form_urlencoded_max("x=1&max=30"), Some(30));
        assert_eq!(form_urlencoded_max("max=-1"), None);
        assert_eq!(form_urlencoded_max("max=abc"), None);
        assert_eq!(form_urlencoded_max("max=2000000"), None);
        assert_eq!(form_urlencoded_max(""), None);
    }
}

//! Gaurun's figures and its one setting changed at run time: `GET /stat/app` (the backlog, the
//! pushes in flight, each platform's successes and errors since start as counted by `deliver`),
//! `GET /stat/go` (the process's runtime) and `PUT /config/pushers?max=N` (`max` read as Gaurun
//! reads it). Like Gaurun's, the counts are the process's own, not the deployment's; the
//! deployment's are in `/metrics`.

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
        Err(e) => {
            tracing::warn!(error = %e, "GET /stat/app could not read the backlog.");
            return gaurun.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the backlog cannot be read",
            );
        }
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

/// `PUT /config/pushers?max=N`: this process's pushes in flight, with Gaurun's answers. Gaurun
/// read `max` as Go's `ParseInt(s, 0, 64)` (`0x10`, `0o17`, `010`, `1_000` too) and refused a
/// negative one; 0 made its workers push one at a time, each, so here 0 is one push per core
/// (Gaurun's default number of workers). Above [`MAX_PUSHERS`] is taken as that.
pub(super) async fn pushers(State(state): State<ApiState>, RawQuery(query): RawQuery) -> Response {
    let gaurun = Family::Gaurun;
    let max = match pushers_max(query.as_deref().unwrap_or("")) {
        Ok(max) => max,
        Err(text) => return gaurun.error(StatusCode::BAD_REQUEST, text),
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

/// The most pushes in flight a process is given: more is no limit it has.
const MAX_PUSHERS: usize = 1_000_000;

/// The limit `max=` in `query` sets, or Gaurun's 400 text.
fn pushers_max(query: &str) -> Result<usize, &'static str> {
    let params = query_pairs(query).ok_or("url parameters could not be parsed")?;
    let value = params
        .into_iter()
        .find(|(k, _)| k == "max")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .ok_or("malformed value")?;
    let max = go_parse_int(&value).ok_or("malformed value")?;
    if max < 0 {
        return Err("malformed value");
    }
    if max == 0 {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    Ok(usize::try_from(max).map_or(MAX_PUSHERS, |m| m.min(MAX_PUSHERS)))
}

/// The pairs of a query as Go's `url.ParseQuery` gives them: `+` is a space, `%XX` a byte; a bad
/// escape, a `;` or text that is not UTF-8 fails the whole query.
fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if pair.contains(';') {
            return None;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        pairs.push((unescape(key)?, unescape(value)?));
    }
    Some(pairs)
}

fn unescape(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.bytes();
    while let Some(b) = rest.next() {
        bytes.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [rest.next()?, rest.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b => b,
        });
    }
    String::from_utf8(bytes).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)`: a sign, then the magnitude as [`go_parse_uint`] reads it.
fn go_parse_int(s: &str) -> Option<i64> {
    let (negative, unsigned) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = i128::from(go_parse_uint(unsigned.as_bytes())?);
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Go's `strconv.ParseUint(s, 0, 64)`: decimal, `0b`/`0o`/`0x` (either case), or a leading `0`
/// for octal; `_` between digits (Go's `underscoreOK`).
fn go_parse_uint(s: &[u8]) -> Option<u64> {
    let prefixed = |p: u8| s.len() >= 3 && s[0] == b'0' && s[1].eq_ignore_ascii_case(&p);
    let (radix, digits) = match s.first()? {
        _ if prefixed(b'b') => (2, &s[2..]),
        _ if prefixed(b'o') => (8, &s[2..]),
        _ if prefixed(b'x') => (16, &s[2..]),
        b'0' => (8, &s[1..]),
        _ => (10, s),
    };
    let mut n: u64 = 0;
    let mut underscores = false;
    for &c in digits {
        if c == b'_' {
            underscores = true;
            continue;
        }
        let d = char::from(c).to_digit(36).filter(|d| *d < radix)?;
        n = n.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    (!underscores || underscores_ok(s)).then_some(n)
}

/// Go's `underscoreOK`: each `_` follows a digit or the base prefix and precedes a digit.
fn underscores_ok(s: &[u8]) -> bool {
    let (mut saw, mut start, mut hex) = (b'^', 0, false);
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        (saw, start, hex) = (b'0', 2, s[1].eq_ignore_ascii_case(&b'x'));
    }
    for &c in &s[start..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else if saw == b'_' {
            return false;
        } else {
            saw = b'!';
        }
    }
    saw != b'_'
}

/// Any other method on `/config/pushers`: Gaurun's 400.
pub(super) async fn not_put() -> Response {
    Family::Gaurun.error(StatusCode::BAD_REQUEST, "method must be PUT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_is_read_as_gaurun_reads_it() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cases: [(&str, Result<usize, &str>); 20] = [
            ("max=8", Ok(8)),
            ("x=1&max=30&max=2", Ok(30)),
            ("max=%33%32", Ok(32)),
            ("max=0x10", Ok(16)),
            ("max=0X10", Ok(16)),
            ("max=0o17", Ok(15)),
            ("max=010", Ok(8)),
            ("max=0b101", Ok(5)),
            ("max=1_000", Ok(1000)),
            ("max=0x_1_0", Ok(16)),
            ("max=%2B7", Ok(7)),
            ("max=0", Ok(cores)),
            ("max=-0", Ok(cores)),
            ("max=2000000", Ok(MAX_PUSHERS)),
            ("max=-1", Err("malformed value")),
            ("max=abc", Err("malformed value")),
            ("max=", Err("malformed value")),
            ("", Err("malformed value")),
            ("max=99999999999999999999", Err("malformed value")),
            ("max=%zz", Err("url parameters could not be parsed")),
        ];
        for (query, expected) in cases {
            assert_eq!(pushers_max(query), expected, "{query}");
        }
        assert_eq!(
            pushers_max("max=1;x=2"),
            Err("url parameters could not be parsed")
        );
        assert_eq!(pushers_max("max=0x"), Err("malformed value"));
        assert_eq!(pushers_max("max=1__0"), Err("malformed value"));
        assert_eq!(pushers_max("max=0_17"), Ok(15));
        assert_eq!(pushers_max("max=_1"), Err("malformed value"));
        assert_eq!(pushers_max("max=1_"), Err("malformed value"));
        assert_eq!(pushers_max("max=%2B-1"), Err("malformed value"));
    }
}

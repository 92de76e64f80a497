//! The operator console (contract §13): `GET /ui` serves one page shipped inside the binary
//! (`console/`: HTML, CSS and plain JavaScript, no framework, no build step), and the page reads
//! the deployment through the API with the operator's bearer token, as any client would:
//!
//! - `GET /v1/events`: the recent events, each from the same records `GET /v1/events/{id}` reads
//!   (its claim, and a split event's jobs' totals so far), with what the page shows besides the
//!   status: talk, mode, the audience's size, failures by reason, pauses, start and end;
//! - `GET /v1/deployment`: the replicas alive (their heartbeats: `worker::heartbeat`), the
//!   `POST /push` backlog's depth and the job stream's, and each provider's pace;
//! - `POST /v1/test-push`: one push to one token, in the deployment's send mode.
//!
//! Nothing is kept for the page alone. The page itself answers without a token (it holds no
//! data and asks for one); every data route is behind the API's tokens like the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::guard::Family;
use crate::apps::AppNames;
use crate::content::Notification;
use crate::device::{Device, Platform, Provider};
use crate::push::{Delivery, Open, Push, PushOutcome, SendMode};
use crate::redis_client::Explained;
use crate::work::{Claims, Unit};

/// What the console reads and sends through.
#[derive(Clone)]
pub(crate) struct Console {
    pub claims: Claims,
    pub mode: SendMode,
    /// The deployment's pushers in its mode, for the test push.
    pub delivery: Delivery,
    pub apps: AppNames,
    /// How long a replica's heartbeat stays fresh.
    pub stale_ms: u64,
}

/// The page and its parts, served as they are.
const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

pub(super) async fn page() -> Response {
    served("text/html; charset=utf-8", PAGE)
}

pub(super) async fn script() -> Response {
    served("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> Response {
    served("text/css; charset=utf-8", STYLE)
}

fn served(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        // The page runs its own script only, and the token never leaves for another origin.
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'",
            ),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct Recent {
    limit: Option<usize>,
}

/// `GET /v1/events?limit=N`: the most recent events (50, at most 200), newest first.
pub(super) async fn events(
    State(state): State<ApiState>,
    query: Result<Query<Recent>, QueryRejection>,
) -> Response {
    let Some(console) = &state.console else {
        return Family::Native.error(StatusCode::NOT_FOUND, "no console in this process");
    };
    let limit = match query.map(|Query(q)| q.limit.unwrap_or(50)) {
        Ok(limit @ 1..=200) => limit,
        _ => {
            return Family::Native.error(
                StatusCode::BAD_REQUEST,
                "limit must be a whole number from 1 to 200",
            );
        }
    };
    match recent(console, limit).await {
        Ok(events) => {
            Json(json!({ "mode": console.mode.as_str(), "events": events })).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

type Hash = HashMap<String, String>;

async fn recent(console: &Console, limit: usize) -> redis::RedisResult<Vec<Value>> {
    let Some(mut redis) = console.claims.connection() else {
        return Ok(Vec::new());
    };
    let keys = console.claims.keys();
    let members: Vec<String> = redis::cmd("ZREVRANGE")
        .arg(keys.recent())
        .arg(0)
        .arg(limit as i64 - 1)
        .query_async(&mut redis)
        .await?;
    let units: Vec<Unit> = members
        .iter()
        .filter_map(|m| Unit::from_member(m))
        .collect();
    if units.is_empty() {
        // Redis refuses an empty pipeline.
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for unit in &units {
        pipe.hgetall(keys.unit(unit))
            .hgetall(keys.totals(unit.event_id()));
    }
    let hashes: Vec<Hash> = pipe.query_async(&mut redis).await?;
    let rows = units
        .iter()
        .zip(hashes.chunks_exact(2))
        .filter(|(_, pair)| !pair[0].is_empty())
        .map(|(unit, pair)| row(unit, &pair[0], &pair[1], console.mode))
        .collect();
    Ok(rows)
}

/// One event's row: its status fields as `GET /v1/events/{id}` gives them, and the rest.
fn row(unit: &Unit, claim: &Hash, totals: &Hash, mode: SendMode) -> Value {
    let state = claim.get("state").map_or("running", String::as_str);
    // A split event's jobs' failures by reason are in their totals only.
    let reasons_of = if claim.contains_key("jobs") {
        totals
    } else {
        claim
    };
    let reason_prefix = if claim.contains_key("jobs") {
        "t:"
    } else {
        "c:"
    };
    let (counts, prefix) = (claim, "c:");
    let named =
        |name: &str| -> Option<u64> { counts.get(&format!("{prefix}{name}"))?.parse().ok() };
    let with = |start: &str| with_in(counts, prefix, start);
    let event: Value = claim
        .get("payload")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    let mode = match unit {
        Unit::DryRunEvent(_) => "dry-run",
        Unit::Event(_) => mode.as_str(),
    };
    let ms = |name: &str| claim.get(name).and_then(|v| v.parse::<u64>().ok());
    json!({
        "event_id": unit.event_id(),
        "talk_id": event.get("talk_id"),
        "mode": mode,
        "state": state,
        "recipients": named("recipients"),
        "sent": named("sent"),
        "failed": named("failed"),
        "pruned": named("pruned"),
        "skipped": named("skipped"),
        "total": claim.get("c:total").and_then(|v| v.parse::<u64>().ok()),
        "jobs": claim.get("jobs").and_then(|v| v.parse::<u64>().ok()),
        "reasons": with_in(reasons_of, reason_prefix, "reason:"),
        "paused": with("paused:").into_keys().collect::<Vec<_>>(),
        "apps": apps(&with("app:")),
        "started_ms": ms("started"),
        "finished_ms": ms("finished"),
    })
}

/// The counts of `hash` named `{prefix}{start}…`, by the rest of their name.
fn with_in(hash: &Hash, prefix: &str, start: &str) -> BTreeMap<String, u64> {
    let from = format!("{prefix}{start}");
    (hash.iter())
        .filter_map(|(k, v)| Some((k.strip_prefix(&from)?.to_string(), v.parse().ok()?)))
        .collect()
}

/// `app:NAME:sent`… regrouped by app.
fn apps(flat: &BTreeMap<String, u64>) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut apps: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (key, value) in flat {
        if let Some((app, field)) = key.rsplit_once(':') {
            apps.entry(app.to_string())
                .or_default()
                .insert(field.to_string(), *value);
        }
    }
    apps
}

/// `GET /v1/deployment`: the replicas alive, the depth of the backlog and the job stream.
pub(super) async fn deployment(State(state): State<ApiState>) -> Response {
    let Some(console) = &state.console else {
        return Family::Native.error(StatusCode::NOT_FOUND, "no console in this process");
    };
    match read_deployment(console, state.backlog_max()).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// The heartbeats, when each was seen, the two streams' lengths, and Redis's clock.
type Read = (Hash, Vec<(String, f64)>, u64, u64, (u64, u64));

async fn read_deployment(console: &Console, backlog_max: usize) -> redis::RedisResult<Value> {
    let Some(mut redis) = console.claims.connection() else {
        return Ok(json!({}));
    };
    let keys = console.claims.keys();
    let (hash, seen) = keys.replicas();
    let (beats, ages, backlog, jobs, now): Read = redis::pipe()
        .hgetall(&hash)
        .cmd("ZRANGE")
        .arg(&seen)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .xlen(keys.backlog())
        .xlen(keys.jobs())
        .cmd("TIME")
        .query_async(&mut redis)
        .await?;
    let now_ms = now.0 * 1000 + now.1 / 1000;
    let replicas: Vec<Value> = ages
        .iter()
        .filter(|(_, at)| now_ms.saturating_sub(*at as u64) < console.stale_ms)
        .filter_map(|(name, at)| {
            let mut beat: Value = serde_json::from_str(beats.get(name)?).ok()?;
            beat["seen_ms_ago"] = json!(now_ms.saturating_sub(*at as u64));
            Some(beat)
        })
        .collect();
    Ok(json!({
        "mode": console.mode.as_str(),
        "work_prefix": keys.prefix(),
        "replicas": replicas,
        "backlog": { "depth": backlog, "max": backlog_max },
        "jobs": { "depth": jobs },
    }))
}

/// A test push's request.
#[derive(Debug, Deserialize)]
struct TestPush {
    provider: String,
    token: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    app: Option<String>,
}

impl TestPush {
    /// The provider, token and platform it names, or what is wrong with them (a 400).
    fn checked(&self) -> Result<(Provider, &str, Platform), String> {
        let Some(provider) = Provider::parse(&self.provider) else {
            let known = Provider::ALL.map(Provider::as_str).join(", ");
            return Err(format!("provider is one of {known}"));
        };
        let token = self.token.trim();
        if token.is_empty() || token.chars().count() > 4096 || token.chars().any(char::is_control) {
            return Err("token must be 1 to 4096 characters, none a control character".into());
        }
        let platform = match self.platform.as_deref().map(Platform::parse) {
            None => Platform::Android,
            Some(Platform::Other) => return Err("platform is one of android, ios, web".into()),
            Some(platform) => platform,
        };
        Ok((provider, token, platform))
    }
}

/// `POST /v1/test-push`: one push to one token through the deployment's pushers, in its send
/// mode (validate-only where that is the mode, logged only in a dry run), with the same retries
/// as any push; answers with its outcome.
pub(super) async fn test_push(State(state): State<ApiState>, body: Bytes) -> Response {
    let native = Family::Native;
    let Some(console) = &state.console else {
        return native.error(StatusCode::NOT_FOUND, "no console in this process");
    };
    let request: TestPush = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return native.error(StatusCode::BAD_REQUEST, format!("not a test push: {e}")),
    };
    let (provider, token, platform) = match request.checked() {
        Ok(checked) => checked,
        Err(refused) => return native.error(StatusCode::BAD_REQUEST, refused),
    };
    let app_name = request.app.as_deref().unwrap_or(crate::apps::DEFAULT_APP);
    let Some(app) = console.apps.resolve(Some(app_name)) else {
        return native.error(
            StatusCode::NOT_FOUND,
            format!("app {app_name:?} is not configured"),
        );
    };
    let Some(pusher) = console.delivery.pushers[app][provider].clone() else {
        let text = format!("{provider} is not configured for app {app_name}");
        return native.error(StatusCode::CONFLICT, text);
    };
    let event_id: Arc<str> =
        Arc::from(format!("console:{}", chrono::Utc::now().timestamp_millis()));
    let push = Push {
        event_id: Arc::clone(&event_id),
        device: Device::addressed(0, Some(app), provider, platform, token),
        content: Arc::new(Notification {
            title: request.title.clone().unwrap_or_else(|| "Test push".into()),
            body: (request.body.clone())
                .unwrap_or_else(|| "Sent from the notifier's console.".into()),
            data: vec![("type".into(), "test".into())],
            collapse_id: event_id.to_string(),
            thread_id: "notifier-console".into(),
        })
        .into(),
    };
    let delivered = (console.delivery)
        .send((app, provider), &*pusher, &push, &|| false, &Open)
        .await;
    let Some(done) = delivered else {
        return native.error(StatusCode::SERVICE_UNAVAILABLE, "the push was withdrawn");
    };
    let detail = done.outcome.reason().map(ToString::to_string);
    tracing::info!(
        provider = provider.as_str(),
        app = app_name,
        outcome = done.outcome.label(),
        "A test push was sent from the console."
    );
    Json(json!({
        "mode": console.mode.as_str(),
        "outcome": done.outcome.label(),
        "delivered": done.outcome == PushOutcome::Delivered,
        "attempts": done.attempts,
        "detail": detail,
    }))
    .into_response()
}

fn unavailable(e: &redis::RedisError) -> Response {
    tracing::warn!(error = %Explained(e), "The console could not read Redis.");
    Family::Native.error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Redis cannot be reached; retry",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> Hash {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_row_reads_a_split_events_counts_from_its_claim_and_its_failures_from_its_jobs() {
        let unit = Unit::Event("e".into());
        let claim = hash(&[
            ("state", "running"),
            ("jobs", "4"),
            ("c:total", "40"),
            ("c:sent", "10"),
            ("payload", r#"{"talk_id":7,"event_id":"e"}"#),
            ("started", "1000"),
        ]);
        let totals = hash(&[
            ("t:sent", "8"),
            ("t:failed", "2"),
            ("t:reason:UNAVAILABLE", "2"),
        ]);
        let row = row(&unit, &claim, &totals, SendMode::Live);
        assert_eq!(
            (&row["sent"], &row["total"], &row["talk_id"], &row["mode"]),
            (&json!(10), &json!(40), &json!(7), &json!("live"))
        );
        assert_eq!(row["reasons"], json!({"UNAVAILABLE": 2}));
        let ended = hash(&[
            ("state", "cancelled"),
            ("jobs", "4"),
            ("c:sent", "12"),
            ("c:paused:fcm", "1"),
            ("c:app:lite:sent", "3"),
        ]);
        let row = row_of(&Unit::DryRunEvent("e".into()), &ended);
        assert_eq!(
            (&row["sent"], &row["mode"]),
            (&json!(12), &json!("dry-run"))
        );
        assert_eq!(row["paused"], json!(["fcm"]));
        assert_eq!(row["apps"], json!({"lite": {"sent": 3}}));
    }

    fn row_of(unit: &Unit, claim: &Hash) -> Value {
        row(unit, claim, &Hash::new(), SendMode::Live)
    }
}

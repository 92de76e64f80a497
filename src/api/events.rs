//! The native event routes. `POST /v1/events` takes the event of contract §1 and answers 202 once
//! it is durable in Redis: it is appended to the deployment's input stream (`NOTIFIER_STREAM`),
//! or with the pub/sub input to the API's own stream read beside the channel
//! (`InputSettings::api_events`), so it runs through the same pipeline and the same claims as an
//! event a publisher sent. `GET /v1/events/{event_id}` reads the event's claim in this replica's
//! send mode (its state, the counts its run stored so far or at its end) or, once it was split,
//! its jobs' totals so far; `DELETE` cancels it (`work::claims::Claims::cancel`).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use redis::Script;
use serde_json::json;

use super::ApiState;
use super::guard::Family;
use crate::event::TalkPosted;
use crate::redis_client::Explained;
use crate::work::claims::Cancelling;
use crate::work::{Claims, Unit};

/// `post(stream, queued [, seen]; event, window_s, answer)`: the event appended with its queued
/// mark, or a seen `Idempotency-Key`'s first answer and nothing appended.
static POST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {'seen', seen} end
end
redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('SET', KEYS[2], 1, 'EX', ARGV[2])
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2]) end
return {'appended'}
"#,
    )
});

/// The deployment's events in Redis: their claims in this send mode, and the stream events are
/// posted to.
#[derive(Clone)]
pub(crate) struct EventStore {
    claims: Claims,
    /// The input stream, or with pub/sub the API's own stream read beside the channel.
    stream: String,
    /// This mode's consumer group, whose queued jobs a cancel drops.
    group: String,
}

impl EventStore {
    pub(crate) fn new(claims: Claims, stream: &str, group: &str) -> Self {
        Self {
            claims,
            stream: stream.to_string(),
            group: group.to_string(),
        }
    }

    /// `XADD {stream} * event {json}` (the shape the stream input reads) with the queued mark,
    /// both or neither; with an `Idempotency-Key`, at most once within the dedup window.
    async fn append(
        &self,
        event: &TalkPosted,
        seen: Option<(String, &str)>,
    ) -> redis::RedisResult<Option<String>> {
        let Some(mut redis) = self.claims.connection() else {
            return Err((redis::ErrorKind::Io, "no Redis").into());
        };
        let keys = self.claims.keys();
        let mut call = POST.prepare_invoke();
        call.key(&self.stream).key(keys.queued(&event.event_id));
        let answer = match &seen {
            Some((key, answer)) => {
                call.key(key);
                *answer
            }
            None => "",
        };
        call.arg(event.to_json())
            .arg(self.claims.window().as_secs())
            .arg(answer);
        let reply: Vec<String> = call.invoke_async(&mut redis).await?;
        Ok(match &reply[..] {
            [verdict, first] if verdict == "seen" => Some(first.clone()),
            _ => None,
        })
    }

    /// The event's status: from its claim record (or its jobs' totals once it was split), else
    /// `queued` while the mark lasts; `None` for an unknown event.
    pub(crate) async fn status(&self, event_id: &str) -> redis::RedisResult<Option<Status>> {
        let Some(mut redis) = self.claims.connection() else {
            return Ok(None);
        };
        let keys = self.claims.keys();
        let dry = keys.unit(&Unit::DryRunEvent(event_id.to_string()));
        let (claim, dry_claim): (Hash, Hash) = redis::pipe()
            .hgetall(keys.event(event_id))
            .hgetall(dry)
            .query_async(&mut redis)
            .await?;
        // An event that asked for a dry run, on a replica that sends, is claimed apart.
        let claim = if claim.is_empty() { dry_claim } else { claim };
        let Some(state) = claim.get("state") else {
            let queued: bool =
                redis::AsyncCommands::exists(&mut redis, keys.queued(event_id)).await?;
            return Ok(queued.then(Status::queued));
        };
        // A split event's owner stores its jobs' counts so far with its claim, every second.
        Ok(Some(Status::new(state, &claim, "c:")))
    }
}

type Hash = HashMap<String, String>;

/// What `GET /v1/events/{event_id}` tells.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub state: String,
    /// `None` while not known.
    pub counts: [Option<u64>; COUNTS.len()],
}

/// The counts of the status, in the order of the contract.
pub(crate) const COUNTS: [&str; 5] = ["recipients", "sent", "failed", "pruned", "skipped"];

impl Status {
    /// The counts from the hash fields named `{prefix}{count}`.
    fn new(state: &str, hash: &Hash, prefix: &str) -> Self {
        let count = |name: &str| hash.get(&format!("{prefix}{name}"))?.parse().ok();
        Self {
            state: state.to_string(),
            counts: COUNTS.map(count),
        }
    }

    /// Posted, not yet claimed: nothing counted.
    fn queued() -> Self {
        Self {
            state: "queued".to_string(),
            counts: [None; COUNTS.len()],
        }
    }

    pub(crate) fn to_json(&self, event_id: &str) -> serde_json::Value {
        let mut body = json!({ "event_id": event_id, "state": self.state });
        for (name, count) in COUNTS.iter().zip(self.counts) {
            body[*name] = json!(count);
        }
        body
    }
}

fn unavailable(e: &redis::RedisError) -> Response {
    tracing::warn!(error = %Explained(e), "The API could not reach the events in Redis.");
    Family::Native.error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Redis cannot be reached; retry",
    )
}

pub(super) async fn post(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let native = Family::Native;
    let body = match body {
        Ok(body) => body,
        Err(e) => return native.error(e.status(), e.body_text()),
    };
    let event = match TalkPosted::parse(&body) {
        Ok(event) => event,
        Err(rejection) => return native.error(StatusCode::BAD_REQUEST, rejection.to_string()),
    };
    let Some(store) = state.events.as_ref() else {
        return native.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no event store in this process",
        );
    };
    let answer = json!({ "event_id": event.event_id }).to_string();
    let seen = match super::idempotency::key(&headers) {
        Ok(key) => key.map(|key| (state.keys.idempotency("events", &key), answer.as_str())),
        Err(refused) => return native.error(StatusCode::BAD_REQUEST, refused),
    };
    match store.append(&event, seen).await {
        Ok(first) => super::idempotency::answer(StatusCode::ACCEPTED, first.unwrap_or(answer)),
        Err(e) => unavailable(&e),
    }
}

/// The event id of a path; axum's own answer to one that is not UTF-8 would be plain text.
/// The id in the path and the deployment's event store, or the answer that says which is missing.
fn id_and_store(
    state: &ApiState,
    path: Result<Path<String>, PathRejection>,
) -> Result<(String, &EventStore), Box<Response>> {
    let native = Family::Native;
    let Ok(Path(id)) = path else {
        return Err(Box::new(
            native.error(StatusCode::BAD_REQUEST, "the event id is not UTF-8"),
        ));
    };
    let Some(store) = &state.events else {
        return Err(Box::new(
            native.error(StatusCode::NOT_FOUND, "no event store in this deployment"),
        ));
    };
    Ok((id, store))
}

pub(super) async fn get(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let native = Family::Native;
    let (event_id, store) = match id_and_store(&state, path) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    match store.status(&event_id).await {
        Ok(Some(status)) => Json(status.to_json(&event_id)).into_response(),
        Ok(None) => native.error(
            StatusCode::NOT_FOUND,
            "no such event within the dedup window",
        ),
        Err(e) => unavailable(&e),
    }
}

/// `DELETE /v1/events/{event_id}` (contract §12): 202 once every run of it has been told to stop.
pub(super) async fn delete(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let native = Family::Native;
    let (event_id, store) = match id_and_store(&state, path) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let cancelled = store.claims.cancel(&event_id, &store.group).await;
    let state = match cancelled {
        Ok(Cancelling::Started | Cancelling::Already) => "cancelling",
        Ok(Cancelling::Cancelled) => "cancelled",
        Ok(Cancelling::TooLate) => {
            return native.error(StatusCode::CONFLICT, "the event is done already");
        }
        Ok(Cancelling::Unknown) => {
            return native.error(
                StatusCode::NOT_FOUND,
                "no such event within the dedup window",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "The API could not cancel an event.");
            return native.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Redis cannot be reached; retry",
            );
        }
    };
    tracing::info!(event_id = %event_id, "An event was cancelled over HTTP.");
    let body = json!({ "event_id": event_id, "state": state });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Which app's `POST /push` a key belongs to.
#[derive(Debug, serde::Deserialize)]
pub(super) struct OfApp {
    app: Option<String>,
}

/// `DELETE /v1/pushes/{idempotency_key}` (`?app=NAME` for a named app's route): stops the
/// notifications of the `POST /push` request that carried this `Idempotency-Key`, as a cancel
/// stops an event. 202 with what it found; 404 for a key not seen within the dedup window.
pub(super) async fn cancel_pushes(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    axum::extract::Query(of): axum::extract::Query<OfApp>,
) -> Response {
    let native = Family::Native;
    let (key, store) = match id_and_store(&state, path) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let app = of.app.as_deref().unwrap_or(crate::apps::DEFAULT_APP);
    let record = state.keys.idempotency(&format!("push:{app}"), &key);
    let entries = super::backlog::entries_of(&record);
    match store.claims.cancel_pushes(&entries, &store.group).await {
        Ok(Some(found)) => {
            let state = if found.stopping > 0 {
                "cancelling"
            } else {
                "cancelled"
            };
            tracing::info!(
                app,
                settled = found.settled,
                stopping = found.stopping,
                done = found.done,
                "POST /push notifications were cancelled over HTTP."
            );
            let body = json!({"idempotency_key": key, "state": state, "found": found});
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Ok(None) => native.error(
            StatusCode::NOT_FOUND,
            "no POST /push request with this Idempotency-Key within the dedup window",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "The API could not cancel POST /push notifications.");
            native.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Redis cannot be reached; retry",
            )
        }
    }
}

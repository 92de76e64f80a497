//! The native event routes. `POST /v1/events` takes the event of contract §1 and answers 202 once
//! it is durable in Redis: it is appended to the deployment's own input stream
//! (`NOTIFIER_STREAM`), so it runs through the same pipeline and the same claims as an event a
//! publisher put there. `GET /v1/events/{event_id}` reads the event's claim record (its state,
//! and the counts its run stored when it finished) or, once it was split into jobs, their totals
//! so far.
//!
//! With the pub/sub input a PUBLISH would be lost while no replica listens, so the event goes to
//! a stream of the API's own (`{prefix}api:events`, `InputSettings::api_events`) that every
//! replica serving the API reads beside the channel, in the same group and under the same claims.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use redis::aio::ConnectionManager;
use serde_json::json;

use super::ApiState;
use super::guard::Family;
use crate::event::TalkPosted;
use crate::redis_client::Explained;

/// The deployment's events in Redis: its claims, and its input stream when it reads one.
#[derive(Clone)]
pub(crate) struct EventStore {
    redis: ConnectionManager,
    claims_prefix: String,
    /// How long a queued event is remembered: the claims' dedup window.
    window: Duration,
    /// The input stream, or with pub/sub the API's own stream read beside the channel.
    stream: String,
}

impl EventStore {
    pub(crate) fn new(
        redis: ConnectionManager,
        claims_prefix: &str,
        window: Duration,
        stream: &str,
    ) -> Self {
        Self {
            redis,
            claims_prefix: claims_prefix.to_string(),
            window,
            stream: stream.to_string(),
        }
    }

    /// Kept beside the claims, not in the claim record: a record's absence is what lets the
    /// first replica claim the event.
    fn queued_key(&self, event_id: &str) -> String {
        format!("{}api:queued:{event_id}", self.claims_prefix)
    }

    /// `XADD {stream} * event {json}` (the shape the stream input reads) with the queued mark,
    /// both or neither.
    async fn append(&self, stream: &str, event: &TalkPosted) -> redis::RedisResult<()> {
        redis::pipe()
            .atomic()
            .xadd(stream, "*", &[("event", event.to_json())])
            .ignore()
            .set_ex(self.queued_key(&event.event_id), 1, self.window.as_secs())
            .ignore()
            .query_async(&mut self.redis.clone())
            .await
    }

    /// The event's status: from its claim record, or its jobs' totals once it was split (its
    /// claim is done when its jobs are queued, so it runs until the last job is in), else
    /// `queued` while the mark lasts; `None` for an unknown event.
    async fn status(&self, event_id: &str) -> redis::RedisResult<Option<Status>> {
        let mut redis = self.redis.clone();
        let claim_key = crate::claims::event_key(&self.claims_prefix, event_id);
        let jobs_key = crate::jobs::totals_key(&self.claims_prefix, event_id);
        let (claim, jobs): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .hgetall(claim_key)
            .hgetall(jobs_key)
            .query_async(&mut redis)
            .await?;
        let Some(state) = claim.get("state") else {
            let queued: bool =
                redis::AsyncCommands::exists(&mut redis, self.queued_key(event_id)).await?;
            return Ok(queued.then(Status::queued));
        };
        if jobs.is_empty() {
            return Ok(Some(Status::new(state, &claim, "c:")));
        }
        let state = match (jobs.contains_key("finished"), state.as_str()) {
            (true, _) => "done",
            (false, "failed") => "failed",
            (false, _) => "running",
        };
        Ok(Some(Status::new(state, &jobs, "t:")))
    }
}

/// What `GET /v1/events/{event_id}` tells.
#[derive(Debug, PartialEq, Eq)]
struct Status {
    state: String,
    /// `None` while not known.
    counts: [Option<u64>; COUNTS.len()],
}

/// The counts of the status, in the order of the contract.
const COUNTS: [&str; 5] = ["recipients", "sent", "failed", "pruned", "skipped"];

impl Status {
    /// The counts from the hash fields named `{prefix}{count}`.
    fn new(state: &str, hash: &HashMap<String, String>, prefix: &str) -> Self {
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

    fn to_json(&self, event_id: &str) -> serde_json::Value {
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
    match store.append(&store.stream, &event).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "event_id": event.event_id })),
        )
            .into_response(),
        Err(e) => unavailable(&e),
    }
}

pub(super) async fn get(
    State(state): State<ApiState>,
    event_id: Result<Path<String>, PathRejection>,
) -> Response {
    let native = Family::Native;
    // An id that is not UTF-8 once decoded: axum's own answer would be plain text.
    let Ok(Path(event_id)) = event_id else {
        return native.error(StatusCode::BAD_REQUEST, "the event id is not UTF-8");
    };
    let Some(store) = &state.events else {
        return native.error(StatusCode::NOT_FOUND, "no event store in this deployment");
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

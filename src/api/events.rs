//! `POST /v1/events`: the event of contract §1 over HTTP, answered 202 once it is durable in
//! Redis. It is appended to the deployment's own input stream (`NOTIFIER_STREAM`), so it runs
//! through the same pipeline and the same claims as an event a publisher put there.
//!
//! With the pub/sub input there is no durable place to put it yet (a PUBLISH is lost while no
//! replica listens), so the route answers 501 naming the setting; a stream of the API's own,
//! read beside the channel, is what would lift that.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use redis::aio::ConnectionManager;
use serde_json::json;

use super::ApiState;
use super::guard::Family;
use crate::event::TalkPosted;
use crate::redis_client::Explained;

/// Where accepted events go: the deployment's input stream.
#[derive(Clone)]
pub(crate) struct EventIntake {
    redis: ConnectionManager,
    stream: String,
}

impl EventIntake {
    pub(crate) fn new(redis: ConnectionManager, stream: &str) -> Self {
        Self {
            redis,
            stream: stream.to_string(),
        }
    }

    /// `XADD {stream} * event {json}`, the shape the stream input reads.
    async fn append(&self, event: &TalkPosted) -> redis::RedisResult<String> {
        redis::AsyncCommands::xadd(
            &mut self.redis.clone(),
            &self.stream,
            "*",
            &[("event", event.to_json())],
        )
        .await
    }
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
    let Some(intake) = &state.events else {
        return native.error(
            StatusCode::NOT_IMPLEMENTED,
            "events over HTTP need the stream input (NOTIFIER_INPUT=stream) in this build",
        );
    };
    match intake.append(&event).await {
        Ok(_) => (
            StatusCode::ACCEPTED,
            Json(json!({ "event_id": event.event_id })),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %Explained(&e), "An event over HTTP could not be stored.");
            native.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be stored in Redis; retry",
            )
        }
    }
}

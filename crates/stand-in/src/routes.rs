//! The stand-in's URL map: the providers' routes, and the endpoints a test or a benchmark steers it
//! with while it runs (`/stats`, `/latency`, `/outage`). A new provider's route or a new control
//! goes here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use crate::{Shared, apns, fcm, oauth, webpush};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/token", post(oauth::token))
        .route("/v1/projects/{project}/messages:send", post(fcm::send))
        .route("/3/device/{token}", post(apns::apns_send))
        .route("/wp/{id}", post(webpush::push))
        .route("/webpush/subscriptions", post(webpush::subscribe))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset))
        .route("/stats/tokens", get(token_counts))
        .route("/outage", post(outage))
        .route("/latency", post(latency))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.counters.snapshot())
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.counters.reset();
    shared.webpush.reset();
    StatusCode::NO_CONTENT
}

/// `GET /stats/tokens`: deliveries per token since the last reset (empty unless counting tokens).
async fn token_counts(State(shared): State<Arc<Shared>>) -> Json<HashMap<String, u32>> {
    Json(shared.counters.token_counts())
}

/// `POST /latency?ms=N`: every answer from now on waits N ms (the provider slows down or
/// recovers while a test runs).
async fn latency(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> StatusCode {
    match q.get("ms").and_then(|ms| ms.parse::<u64>().ok()) {
        Some(ms) => {
            shared.latency_ms.store(ms, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::BAD_REQUEST,
    }
}

/// `POST /outage?on=true|false`: every FCM and APNs send fails with 503 while on.
async fn outage(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> StatusCode {
    let on = q.get("on").is_some_and(|v| v == "true");
    shared.outage.store(on, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

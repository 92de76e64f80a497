//! APNs `POST /3/device/{token}`: it verifies the ES256 provider token against the key the
//! stand-in made (`apns-key.p8`) and judges it by Apple's rules (older than an hour: 403
//! ExpiredProviderToken; a connection's token changing within 20 minutes of its last change: 429
//! TooManyProviderTokenUpdates), checks Apple's headers and the 4096-byte payload limit, and
//! answers with Apple's reasons; device tokens choose failures (`unregistered`, `bad`, `flaky`,
//! `down`). With `RequestWork::Light` none of that: every push is delivered, its payload unread.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

use crate::conn::{Conn, TokenChange};
use crate::counters::{count_delivery, counted, record_delivery, tagged};
use crate::oauth::base64url_decode;
use crate::{RequestWork, Shared};

/// Apple's limit on a notification's payload.
const APNS_LIMIT: usize = 4096;
/// Apple refuses a provider token issued longer ago than this.
const TOKEN_LIFETIME_SECS: u64 = 60 * 60;

fn apns_error(status: StatusCode, reason: &'static str, timestamp: Option<u64>) -> Response {
    let body = match timestamp {
        Some(ms) => json!({"reason": reason, "timestamp": ms}),
        None => json!({"reason": reason}),
    };
    tagged((status, Json(body)).into_response(), reason)
}

/// Whether `authorization: bearer <jwt>` is an ES256 token signed with the stand-in's APNs key.
fn apns_token_ok(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(jwt) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
    else {
        return false;
    };
    if shared
        .apns_verified
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(jwt)
    {
        return true;
    }
    let Some((signed, signature)) = jwt.rsplit_once('.') else {
        return false;
    };
    let Some(signature) = base64url_decode(signature) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        &shared.apns_public_key,
    )
    .verify(signed.as_bytes(), &signature)
    .is_ok_and(|()| {
        shared
            .apns_verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(jwt.to_string());
        true
    })
}

/// The provider token's `iat`, from its claims (the signature is checked separately).
fn issued_at(jwt: &str) -> Option<u64> {
    let claims = jwt.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&base64url_decode(claims)?).ok()?;
    claims["iat"].as_u64()
}

/// Apple's rules on the token's age and on how often a connection's token changes.
fn token_rules(shared: &Shared, conn: Option<&Conn>, headers: &HeaderMap) -> Option<Response> {
    let jwt = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))?;
    let now = shared.unix_now();
    if issued_at(jwt).is_none_or(|iat| now.saturating_sub(iat) > TOKEN_LIFETIME_SECS) {
        return Some(apns_error(
            StatusCode::FORBIDDEN,
            "ExpiredProviderToken",
            None,
        ));
    }
    let window = shared.config.token_update_window.as_secs();
    match conn.map(|c| c.token_change(jwt, now, window)) {
        Some(TokenChange::TooSoon) => Some(apns_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyProviderTokenUpdates",
            None,
        )),
        _ => None,
    }
}

/// APNs `POST /3/device/{token}`, as Apple answers it.
pub(crate) async fn apns_send(
    State(shared): State<Arc<Shared>>,
    conn: Option<Extension<Arc<Conn>>>,
    UrlPath(token): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let conn = conn.map(|Extension(conn)| conn);
    if let Some(conn) = &conn {
        conn.enter();
    }
    let light = shared.config.work == RequestWork::Light;
    let response = counted(&shared, || match light {
        true => {
            count_delivery(&shared.counters);
            delivered()
        }
        false => apns_answer(&shared, conn.as_deref(), &token, &headers, &body),
    })
    .await;
    if let Some(conn) = &conn {
        conn.leave();
    }
    response
}

fn apns_answer(
    shared: &Shared,
    conn: Option<&Conn>,
    token: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let c = &shared.counters;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Load generators (h2load, for the benchmark's ceiling) send no signed token.
    if !shared.config.accept_any_token {
        if !apns_token_ok(shared, headers) {
            return apns_error(StatusCode::FORBIDDEN, "InvalidProviderToken", None);
        }
        if let Some(refused) = token_rules(shared, conn, headers) {
            return refused;
        }
    }
    if header("apns-topic").is_none_or(str::is_empty) {
        return apns_error(StatusCode::BAD_REQUEST, "MissingTopic", None);
    }
    if !matches!(header("apns-push-type"), Some("alert" | "background")) {
        return apns_error(StatusCode::BAD_REQUEST, "InvalidPushType", None);
    }
    if header("apns-collapse-id").is_some_and(|id| id.len() > 64) {
        return apns_error(StatusCode::BAD_REQUEST, "BadCollapseId", None);
    }
    if body.len() > APNS_LIMIT {
        return apns_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", None);
    }
    if !serde_json::from_slice::<Value>(body).is_ok_and(|v| v["aps"].is_object()) {
        return apns_error(StatusCode::BAD_REQUEST, "PayloadEmpty", None);
    }
    let once = |kind: &str| {
        c.failed_once
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("apns-{kind}:{token}"))
    };
    if token.contains("unregistered") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        return apns_error(StatusCode::GONE, "Unregistered", Some(now));
    }
    if token.contains("bad") {
        return apns_error(StatusCode::BAD_REQUEST, "BadDeviceToken", None);
    }
    // An outage (`POST /outage?on=true`) reaches Apple's side too.
    let outage = shared.outage.load(std::sync::atomic::Ordering::Relaxed);
    if outage || token.contains("down") || (token.contains("flaky") && once("flaky")) {
        return apns_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", None);
    }
    record(shared, token, headers, body);
    delivered()
}

/// Counts a delivery by token and collapse id; when recording, keeps the push (the token, the
/// headers that shape it, the payload) and the topic it reached.
fn record(shared: &Shared, token: &str, headers: &HeaderMap, body: &[u8]) {
    let c = &shared.counters;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let collapse = header("apns-collapse-id").unwrap_or_default();
    // Kept when recording, as FCM's messages are: the token, the headers that shape the push,
    // and the payload.
    let message = shared.config.record.then(|| {
        let headers: serde_json::Map<String, Value> = [
            "apns-topic",
            "apns-push-type",
            "apns-priority",
            "apns-expiration",
            "apns-collapse-id",
        ]
        .into_iter()
        .filter_map(|name| Some((name.to_string(), Value::from(header(name)?))))
        .collect();
        let payload = serde_json::from_slice::<Value>(body).unwrap_or_default();
        serde_json::json!({"apns": {"token": token, "headers": headers, "payload": payload}})
    });
    record_delivery(shared, token, collapse, message.as_ref());
    if shared.config.record {
        let topic = header("apns-topic").unwrap_or_default().to_string();
        c.apns_topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((token.to_string(), topic));
    }
}

/// Apple's answer to a delivered push: 200, no body, an `apns-id`.
fn delivered() -> Response {
    let mut response = StatusCode::OK.into_response();
    if let Ok(id) = format!("{:032x}", fastrand::u128(..)).parse() {
        response.headers_mut().insert("apns-id", id);
    }
    response
}

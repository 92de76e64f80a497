//! FCM HTTP v1 `messages:send`: the bearer token must be one the token endpoint issued, the
//! project the configured one, and the request what FCM accepts (fields, types, TTL, priority, the
//! 4096-byte limit); then an outage, or a failure the token asks for (`faults`), or the
//! project's quota (`quota`), or a delivery. Errors carry FCM's real bodies. With
//! `RequestWork::Light` none of that: every send is a delivery, its body unread.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::counters::{count_delivery, counted, record_delivery, tagged};
use crate::faults::injected;
use crate::{RequestWork, Shared};

const FCM_LIMIT: usize = 4096;

pub(crate) fn fcm_error(
    status: StatusCode,
    grpc: &str,
    code: Option<&str>,
    message: &str,
) -> Response {
    let details = code.map_or_else(
        || json!([]),
        |c| json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}]),
    );
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": grpc, "details": details}});
    (status, Json(body)).into_response()
}

pub(crate) fn with_retry_after(mut response: Response, secs: u64) -> Response {
    if let Ok(v) = secs.to_string().parse() {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    response
}

pub(crate) async fn send(
    State(shared): State<Arc<Shared>>,
    UrlPath(project): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if shared.config.work == RequestWork::Light {
        return counted(&shared, || light_answer(&shared, &project)).await;
    }
    counted(&shared, || answer(&shared, &project, &headers, &body)).await
}

/// `RequestWork::Light`: FCM's answer to a delivered message, the request unread.
fn light_answer(shared: &Shared, project: &str) -> Response {
    count_delivery(&shared.counters);
    message_name(shared, project)
}

/// FCM's answer to a delivered message: its name.
fn message_name(shared: &Shared, project: &str) -> Response {
    let n = shared.counters.requests.load(Ordering::Relaxed);
    Json(json!({"name": format!("projects/{project}/messages/0:{n}")})).into_response()
}

fn answer(shared: &Shared, project: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let c = &shared.counters;
    if let Some(refused) = refuse_caller(shared, project, headers) {
        return refused;
    }
    let (message, validate_only) = match check_request(body) {
        Ok(parsed) => parsed,
        Err(why) => {
            return tagged(
                fcm_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    Some("INVALID_ARGUMENT"),
                    &why,
                ),
                "INVALID_ARGUMENT",
            );
        }
    };
    if shared.outage.load(Ordering::Relaxed) {
        return tagged(
            with_retry_after(
                fcm_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    Some("UNAVAILABLE"),
                    "The service is currently unavailable.",
                ),
                1,
            ),
            "UNAVAILABLE",
        );
    }
    let token = message["token"].as_str().unwrap_or_default();
    if let Some(failure) = injected(c, token) {
        return failure;
    }
    if !validate_only && !shared.fcm_quota.admit() {
        return quota_exceeded();
    }
    if validate_only {
        c.validated.fetch_add(1, Ordering::Relaxed);
    } else {
        let collapse = message["android"]["collapse_key"]
            .as_str()
            .unwrap_or_default();
        record_delivery(shared, token, collapse, Some(&message));
    }
    message_name(shared, project)
}

/// FCM's answer to a caller it does not know (a bearer token the token endpoint never issued) or
/// who asks for another project; `None` lets the request through.
fn refuse_caller(shared: &Shared, project: &str, headers: &HeaderMap) -> Option<Response> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorised = bearer.is_some_and(|t| {
        shared.config.accept_any_token
            || shared
                .counters
                .issued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(t)
    });
    if !authorised {
        return Some(tagged(
            fcm_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                None,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            ),
            "UNAUTHENTICATED",
        ));
    }
    if project != shared.config.project {
        return Some(tagged(
            fcm_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                None,
                &format!(
                    "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}'"
                ),
            ),
            "PERMISSION_DENIED",
        ));
    }
    None
}

/// FCM's answer to a send over the project's quota. Google names no wait; FCM's documentation
/// asks for at least a minute's backoff, which clients read from their own rules.
fn quota_exceeded() -> Response {
    tagged(
        fcm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            Some("QUOTA_EXCEEDED"),
            "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute' of service 'fcm.googleapis.com'.",
        ),
        "QUOTA_EXCEEDED",
    )
}

/// Checks a send request as FCM does; returns the message and `validate_only`.
fn check_request(body: &[u8]) -> Result<(Value, bool), String> {
    const MESSAGE_FIELDS: &[&str] = &[
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "token",
        "topic",
        "condition",
    ];
    let request: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON payload received. {e}"))?;
    let Some(object) = request.as_object() else {
        return Err("Invalid JSON payload received. Expected an object.".into());
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| *k != "message" && *k != "validate_only")
    {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
        ));
    }
    let validate_only = match object.get("validate_only") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("Invalid value at 'validate_only' (TYPE_BOOL)".into()),
    };
    let message = object
        .get("message")
        .ok_or("Request contains an invalid argument: message is required.")?;
    let fields = message.as_object().ok_or("Invalid value at 'message'")?;
    if let Some(unknown) = fields
        .keys()
        .find(|k| !MESSAGE_FIELDS.contains(&k.as_str()))
    {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" at 'message': Cannot find field."
        ));
    }
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|t| fields.contains_key(**t))
        .count();
    if targets != 1 {
        return Err("Exactly one of token, topic or condition must be set.".into());
    }
    let token = fields
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err("The registration token is not a valid FCM registration token".into());
    }
    check_fields(fields)?;
    let counted = json!({"notification": fields.get("notification"), "data": fields.get("data")});
    let size = serde_json::to_vec(&counted).map(|v| v.len()).unwrap_or(0);
    if size > FCM_LIMIT {
        return Err(format!(
            "Message is too big: {size} bytes of notification and data, over {FCM_LIMIT}."
        ));
    }
    Ok((message.clone(), validate_only))
}

/// The message's fields FCM types: `data` and `notification` values are strings, the Android
/// TTL a duration of at most 28 days, the priority `normal` or `high`.
fn check_fields(fields: &serde_json::Map<String, Value>) -> Result<(), String> {
    if let Some(data) = fields.get("data") {
        let data = data.as_object().ok_or("Invalid value at 'message.data'")?;
        if let Some((k, _)) = data.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!(
                "Invalid value at 'message.data[0].value' (TYPE_STRING), key \"{k}\""
            ));
        }
    }
    if let Some(n) = fields.get("notification") {
        let n = n
            .as_object()
            .ok_or("Invalid value at 'message.notification'")?;
        if n.values().any(|v| !v.is_string()) {
            return Err("Invalid value at 'message.notification' (TYPE_STRING)".into());
        }
    }
    if let Some(android) = fields.get("android") {
        if let Some(ttl) = android.get("ttl") {
            let ok = ttl.as_str().is_some_and(|t| {
                t.strip_suffix('s').is_some_and(|n| {
                    !n.is_empty()
                        && n.parse::<f64>()
                            .is_ok_and(|v| (0.0..=2_419_200.0).contains(&v))
                })
            });
            if !ok {
                return Err("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)".into());
            }
        }
        if let Some(p) = android.get("priority")
            && !matches!(p.as_str(), Some("normal" | "high"))
        {
            return Err("Invalid value at 'message.android.priority'".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_as_fcm_checks_them() {
        let ok = br#"{"message":{"token":"t","notification":{"title":"a","body":"b"},"data":{"k":"v"},"android":{"priority":"high","ttl":"86400s"}}}"#;
        assert!(check_request(ok).is_ok());
        let bad: &[&[u8]] = &[
            b"not json",
            br#"{"message":{"token":"t","data":{"k":1}}}"#,
            br#"{"message":{"token":"t","oops":1}}"#,
            br#"{"message":{"data":{}}}"#,
            br#"{"message":{"token":"t","topic":"x"}}"#,
            br#"{"message":{"token":"t","android":{"ttl":"1d"}}}"#,
            br#"{"message":{"token":"t","android":{"priority":"urgent"}}}"#,
            br#"{"msg":{}}"#,
        ];
        for body in bad {
            assert!(
                check_request(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let big = format!(
            r#"{{"message":{{"token":"t","data":{{"k":"{}"}}}}}}"#,
            "x".repeat(5000)
        );
        assert!(
            check_request(big.as_bytes())
                .unwrap_err()
                .contains("too big")
        );
    }
}

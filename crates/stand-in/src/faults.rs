//! The FCM failures a device token can ask for by what it contains, so that tests and load runs
//! choose errors without configuring the stand-in: some every time (`unregistered`, `mismatch`,
//! `invalid`, `thirdpartyauth`, `down`), some once per token and then success (`flaky`, `quota`).

use axum::http::StatusCode;
use axum::response::Response;

use crate::counters::{Counters, tagged};
use crate::fcm::{fcm_error, with_retry_after};

/// An FCM failure a token can ask for: (token pattern, once only, status, google.rpc status,
/// FCM error code, message, Retry-After).
type Injected = (
    &'static str,
    bool,
    StatusCode,
    &'static str,
    &'static str,
    &'static str,
    Option<u64>,
);

const INJECTED: &[Injected] = &[
    (
        "unregistered",
        false,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "UNREGISTERED",
        "Requested entity was not found.",
        None,
    ),
    (
        "mismatch",
        false,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "SENDER_ID_MISMATCH",
        "SenderId mismatch",
        None,
    ),
    (
        "invalid",
        false,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
        None,
    ),
    (
        "thirdpartyauth",
        false,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "THIRD_PARTY_AUTH_ERROR",
        "Auth error from APNS or Web Push Service",
        None,
    ),
    (
        "down",
        false,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "UNAVAILABLE",
        "The service is currently unavailable.",
        Some(1),
    ),
    (
        "flaky",
        true,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "UNAVAILABLE",
        "The service is currently unavailable.",
        Some(1),
    ),
    (
        "quota",
        true,
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
        "QUOTA_EXCEEDED",
        "Quota exceeded for quota metric 'Send requests'.",
        Some(1),
    ),
];

/// The failure a token asks for, if any.
pub(crate) fn injected(c: &Counters, token: &str) -> Option<Response> {
    let (_, _, status, grpc, code, message, retry_after) =
        INJECTED.iter().copied().find(|(pattern, once, ..)| {
            token.contains(pattern)
                && (!once
                    || c.failed_once
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(format!("{pattern}:{token}")))
        })?;
    let response = fcm_error(status, grpc, Some(code), message);
    let response = match retry_after {
        Some(secs) => with_retry_after(response, secs),
        None => response,
    };
    Some(tagged(response, code))
}

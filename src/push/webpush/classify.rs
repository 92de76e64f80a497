//! What a push service's answer means for the fan-out. Push services agree on statuses (RFC 8030
//! §5, RFC 8292 §4) and not on bodies (FCM writes text, Mozilla JSON with `message`, Apple JSON
//! with `reason`), so the status decides and the body is only words for the reason.
//!
//! 201 (and 200/202) delivered; 404 and 410 the subscription is gone (prune); 413 our payload is
//! too big (a bug: rejected, never retried); 429 and 5xx retried by FCM's rules; 400, 401 and
//! 403 the VAPID token or key is refused (the key browsers subscribed with is not ours, the
//! subject is malformed), which every push shares: the provider pauses. What may change here: a
//! row of the table, with its test row.

use std::time::Duration;

use crate::audience::Provider;
use crate::push::http2::Http2Error;
use crate::push::{PauseScope, PushOutcome, Reason};
use crate::telemetry::ErrorChain;

/// What to fix after a push service refuses our VAPID token.
pub(crate) const VAPID_SETTINGS: &str = "WEBPUSH_VAPID_PRIVATE_KEY_PATH (the key browsers \
                                         subscribed with) / WEBPUSH_VAPID_SUBJECT";

/// Words from an error body kept in a reason, at most.
const DETAIL_CHARS: usize = 200;

/// Maps a push service's answer to what the fan-out does next.
pub(crate) fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> PushOutcome {
    let reason = Reason::new(Provider::WebPush, format!("HTTP {status}"));
    // Only failures that stop at a person carry the service's words; retries count by status.
    let detailed = |reason: Reason| match detail(body) {
        Some(words) => reason.with_detail(words),
        None => reason,
    };
    match status {
        200..=202 => PushOutcome::Delivered,
        404 | 410 => PushOutcome::Unregistered {
            reason,
            since: None,
        },
        400 | 401 | 403 => PushOutcome::CredentialsRejected {
            reason: detailed(reason),
            setting: VAPID_SETTINGS,
            scope: PauseScope::Provider,
        },
        429 | 500..=599 => PushOutcome::Retryable {
            reason,
            retry_after,
            quota: status == 429,
        },
        // 413 included: the plaintext was checked against the limit, so the body is our bug.
        _ => PushOutcome::Rejected {
            reason: detailed(reason),
        },
    }
}

/// No answer: the request may not have reached the push service; worth another try.
pub(crate) fn transport_failure(e: &Http2Error) -> PushOutcome {
    let detail = std::error::Error::source(e)
        .map_or_else(|| e.to_string(), |source| ErrorChain(source).to_string());
    PushOutcome::Retryable {
        reason: Reason::new(Provider::WebPush, e.code()).with_detail(detail),
        retry_after: None,
        quota: false,
    }
}

/// The service's words: Apple's `reason`, Mozilla's `message` (or `error`), or FCM's text.
fn detail(body: &[u8]) -> Option<String> {
    let words = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => ["reason", "message", "error"]
            .iter()
            .find_map(|key| json[key].as_str().map(str::to_string))?,
        Err(_) => String::from_utf8_lossy(body).lines().next()?.to_string(),
    };
    let words = words.trim();
    (!words.is_empty()).then(|| words.chars().take(DETAIL_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every answer a push service gives, with what the fan-out does next.
    #[test]
    fn each_push_service_answer_maps_to_what_the_fan_out_does_next() {
        let mozilla_gone =
            br#"{"code":410,"errno":106,"error":"Gone","message":"Request did not validate"}"#;
        let apple_jwt = br#"{"reason":"BadJwtToken"}"#;
        let fcm_mismatch = b"the key in the authorization header does not correspond to the \
                             sender ID used to subscribe this user\n";
        let rows: &[(u16, &[u8], &str, &str)] = &[
            (201, b"", "delivered", ""),
            (200, b"", "delivered", ""),
            (202, b"", "delivered", ""),
            (410, mozilla_gone, "unregistered", "webpush:HTTP 410"),
            (404, b"Not Found", "unregistered", "webpush:HTTP 404"),
            (
                413,
                b"Payload Too Large",
                "rejected",
                "webpush:HTTP 413: Payload Too Large",
            ),
            (429, b"", "retryable", "webpush:HTTP 429"),
            (500, b"", "retryable", "webpush:HTTP 500"),
            (502, b"<html>", "retryable", "webpush:HTTP 502"),
            (503, b"", "retryable", "webpush:HTTP 503"),
            (400, b"", "credentials_rejected", "webpush:HTTP 400"),
            (
                401,
                br#"{"errno":109,"message":"Unauthorized"}"#,
                "credentials_rejected",
                "webpush:HTTP 401: Unauthorized",
            ),
            (
                403,
                apple_jwt,
                "credentials_rejected",
                "webpush:HTTP 403: BadJwtToken",
            ),
            (
                403,
                fcm_mismatch,
                "credentials_rejected",
                "webpush:HTTP 403: the key in the authorization header does not correspond to the sender ID used to subscribe this user",
            ),
            (415, b"", "rejected", "webpush:HTTP 415"),
            (301, b"", "rejected", "webpush:HTTP 301"),
        ];
        for (status, body, label, reason) in rows {
            let outcome = classify(*status, body, None);
            assert_eq!(outcome.label(), *label, "{status}");
            let got = match &outcome {
                PushOutcome::Delivered => String::new(),
                PushOutcome::Unregistered { reason, .. }
                | PushOutcome::Retryable { reason, .. }
                | PushOutcome::Rejected { reason }
                | PushOutcome::CredentialsRejected { reason, .. } => reason.to_string(),
                other => format!("{other:?}"),
            };
            assert_eq!(got, *reason, "{status}");
        }
    }

    #[test]
    fn retries_honour_retry_after_and_429_waits_like_a_quota() {
        let after = Some(Duration::from_secs(30));
        assert!(matches!(
            classify(429, b"", after),
            PushOutcome::Retryable { quota: true, retry_after: Some(d), .. } if d == Duration::from_secs(30)
        ));
        assert!(matches!(
            classify(503, b"", after),
            PushOutcome::Retryable {
                quota: false,
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            classify(403, b"", None),
            PushOutcome::CredentialsRejected {
                setting: VAPID_SETTINGS,
                scope: PauseScope::Provider,
                ..
            }
        ));
    }

    #[test]
    fn long_error_bodies_are_cut_to_200_characters() {
        let long = "e".repeat(1000);
        let PushOutcome::Rejected { reason } = classify(413, long.as_bytes(), None) else {
            panic!("413 is rejected");
        };
        assert_eq!(reason.detail().map(str::len), Some(DETAIL_CHARS));
    }
}

//! What an FCM failure means for the fan-out, by Firebase's rules: HTTP status first, FCM's
//! `errorCode` second. `UNREGISTERED` and `SENDER_ID_MISMATCH` prune the token,
//! `INVALID_ARGUMENT` never does (payload errors share it), 429 waits at least a minute, 5xx
//! retry, and 401/403 mean our credentials are wrong for every device alike (for Apple and web
//! devices only, after THIRD_PARTY_AUTH_ERROR).

use std::time::Duration;

use super::tokens::TokenError;
use crate::audience::Provider;
use crate::push::http2::Http2Error;
use crate::push::{PauseScope, PushOutcome, Reason};
use crate::telemetry::ErrorChain;

/// What to fix after FCM refuses our credentials.
const CREDENTIALS_SETTING: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// What to fix after THIRD_PARTY_AUTH_ERROR.
const FIREBASE_APNS_KEY_SETTING: &str =
    "the APNs key (or web push credentials) in the Firebase project settings";

/// No access token for this push.
pub(super) fn token_failure(e: TokenError) -> PushOutcome {
    match e {
        TokenError::Unavailable(why) => PushOutcome::Retryable {
            reason: Reason::new(Provider::Fcm, "token unavailable").with_detail(why),
            retry_after: None,
            quota: false,
        },
        TokenError::Refused(reason) => PushOutcome::CredentialsRejected {
            reason: Reason::uncoded(Provider::Fcm, reason),
            setting: CREDENTIALS_SETTING,
            scope: PauseScope::Provider,
        },
    }
}

pub(super) fn transport_failure(e: &Http2Error) -> PushOutcome {
    // Resets and GOAWAY land here too: the request may not have reached FCM.
    let detail = std::error::Error::source(e)
        .map_or_else(|| e.to_string(), |source| ErrorChain(source).to_string());
    PushOutcome::Retryable {
        reason: Reason::new(Provider::Fcm, e.code()).with_detail(detail),
        retry_after: None,
        quota: false,
    }
}

/// What FCM said about a failed request, from its JSON error body.
#[derive(Debug, Default, PartialEq)]
struct FcmErrorBody {
    /// The google.rpc status, e.g. `NOT_FOUND`.
    status: Option<String>,
    /// The FCM error code from `details`, e.g. `UNREGISTERED`.
    error_code: Option<String>,
    message: Option<String>,
}

fn parse_error(body: &[u8]) -> FcmErrorBody {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return FcmErrorBody::default();
    };
    let error = &value["error"];
    let error_code = error["details"].as_array().and_then(|details| {
        details
            .iter()
            .find_map(|d| d["errorCode"].as_str().map(str::to_string))
    });
    FcmErrorBody {
        status: error["status"].as_str().map(str::to_string),
        error_code,
        message: error["message"].as_str().map(str::to_string),
    }
}

/// Maps a failed FCM response to what the fan-out does next.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> PushOutcome {
    let error = parse_error(body);
    let code = error
        .error_code
        .or(error.status)
        .unwrap_or_else(|| format!("HTTP {status}"));
    let reason = Reason::new(Provider::Fcm, code);
    // Only failures that stop at a person carry FCM's message; retries are counted by code.
    let detailed = |reason: Reason, message: Option<String>| match message {
        Some(m) => reason.with_detail(m),
        None => reason,
    };
    match (status, reason.code()) {
        // Only FCM's own code prunes: a bare 404 is as likely a wrong FCM_ENDPOINT.
        (_, "UNREGISTERED") | (403, "SENDER_ID_MISMATCH") => PushOutcome::Unregistered {
            reason,
            since: None,
        },
        // The APNs key or web push credentials in the Firebase project are wrong: Apple and web
        // devices reached through FCM fail, Android ones do not (the fan-out pauses only those).
        (_, "THIRD_PARTY_AUTH_ERROR") => PushOutcome::CredentialsRejected {
            reason: detailed(reason, error.message),
            setting: FIREBASE_APNS_KEY_SETTING,
            scope: PauseScope::NonAndroid,
        },
        (401, _) | (403, _) => PushOutcome::CredentialsRejected {
            reason: detailed(reason, error.message),
            setting: CREDENTIALS_SETTING,
            scope: PauseScope::Provider,
        },
        (429 | 500..=599, _) => PushOutcome::Retryable {
            reason,
            retry_after,
            quota: status == 429,
        },
        // INVALID_ARGUMENT included: the payload is as likely at fault as the token.
        _ => PushOutcome::Rejected {
            reason: detailed(reason, error.message),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_body(status: &str, code: Option<&str>) -> Vec<u8> {
        if status.is_empty() {
            return b"<html>Bad Gateway</html>".to_vec();
        }
        let details = match code {
            Some(c) => serde_json::json!([{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": c
            }]),
            None => serde_json::json!([]),
        };
        serde_json::json!({"error": {"code": 0, "message": "m", "status": status, "details": details}})
            .to_string()
            .into_bytes()
    }

    /// Every row of the FCM v1 error table, as FCM sends it.
    #[test]
    fn each_fcm_error_maps_to_what_the_fan_out_does_next() {
        let s = Some(Duration::from_secs(30));
        let rows: &[(u16, &str, Option<&str>, &str, &str)] = &[
            (
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                "unregistered",
                "fcm:UNREGISTERED",
            ),
            (
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                "unregistered",
                "fcm:SENDER_ID_MISMATCH",
            ),
            (
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "rejected",
                "fcm:INVALID_ARGUMENT: m",
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "retryable",
                "fcm:QUOTA_EXCEEDED",
            ),
            (
                503,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
                "retryable",
                "fcm:UNAVAILABLE",
            ),
            (
                500,
                "INTERNAL",
                Some("INTERNAL"),
                "retryable",
                "fcm:INTERNAL",
            ),
            (
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "credentials_rejected",
                "fcm:THIRD_PARTY_AUTH_ERROR: m",
            ),
            (
                401,
                "UNAUTHENTICATED",
                None,
                "credentials_rejected",
                "fcm:UNAUTHENTICATED: m",
            ),
            (
                403,
                "PERMISSION_DENIED",
                None,
                "credentials_rejected",
                "fcm:PERMISSION_DENIED: m",
            ),
            (502, "", None, "retryable", "fcm:HTTP 502"),
            (404, "NOT_FOUND", None, "rejected", "fcm:NOT_FOUND: m"),
        ];
        for (status, grpc, code, label, reason) in rows {
            let outcome = classify(*status, &error_body(grpc, *code), s);
            assert_eq!(outcome.label(), *label, "{status} {code:?}");
            let got = match &outcome {
                PushOutcome::Unregistered { reason, .. }
                | PushOutcome::Retryable { reason, .. }
                | PushOutcome::Rejected { reason }
                | PushOutcome::CredentialsRejected { reason, .. } => reason.to_string(),
                other => format!("{other:?}"),
            };
            assert_eq!(&got, reason, "{status} {code:?}");
        }
        assert!(matches!(
            classify(429, &error_body("RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")), s),
            PushOutcome::Retryable { quota: true, retry_after: Some(d), .. } if d == Duration::from_secs(30)
        ));
        assert!(matches!(
            classify(503, &error_body("UNAVAILABLE", Some("UNAVAILABLE")), None),
            PushOutcome::Retryable { quota: false, .. }
        ));
        let third_party = classify(
            401,
            &error_body("UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR")),
            None,
        );
        assert!(
            matches!(third_party, PushOutcome::CredentialsRejected { setting, .. } if setting.contains("APNs key"))
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_classified_by_status_alone() {
        // A 404 page from a wrong FCM_ENDPOINT must not prune every token.
        assert_eq!(classify(404, b"<html>", None).label(), "rejected");
        assert_eq!(classify(503, b"", None).label(), "retryable");
        assert_eq!(classify(400, b"oops", None).label(), "rejected");
    }
}

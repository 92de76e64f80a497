//! `POST /push` and `POST /apps/{name}/push` (contract §9, §10): a request Gaurun answered 200 is
//! answered 200. A notification Gaurun would drop, or one that breaks a rule of ours (`gaurun`),
//! is left out, named under `rejected` with its reason, logged (one WARN with its identifier) and
//! counted (`notifier_api_rejected_total{reason}`); the others are appended to the backlog and the
//! answer waits until they are durable. A notification without tokens sends nothing and is no
//! error. 400 only where Gaurun answered 400 (not JSON, no notification, too many) or, with
//! `[api] strict`, for the first notification that would be left out.
//!
//! The answer's texts are Gaurun's where it has one; its clients may match them.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::ApiState;
use super::backlog::{Appended, BacklogError, Idempotent};
use super::gaurun::{GaurunNotification, Invalid, MAX_IDENTIFIER_CHARS, quoted};
use super::gaurun_json;
use super::guard::Family;
use crate::device::Provider;
use crate::telemetry::API_REJECTED;

/// A notification left out: where it was in the request, why, and its `identifier` (cut to
/// [`MAX_IDENTIFIER_CHARS`]) for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejected {
    pub(super) index: usize,
    pub(super) reason: Invalid,
    pub(super) identifier: String,
}

/// Why a whole request is refused; the texts of Gaurun's 400s where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refused {
    #[error("request body is empty")]
    EmptyBody,
    #[error("Request-body is malformed: {0}")]
    Malformed(String),
    #[error("empty notification")]
    NoNotification,
    #[error("number of notifications({count}) over limit({max})")]
    OverLimit { count: usize, max: usize },
    /// Strict mode only.
    #[error("notification {}: {}", .0.index, .0.reason)]
    Invalid(Rejected),
}

/// What a request is checked against (`[api]`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    pub(super) max: usize,
    pub(super) allow_empty_message: bool,
    pub(super) strict: bool,
}

/// A request's notifications, sorted.
#[derive(Debug, Default)]
pub(super) struct Sorted {
    /// To be sent: each with its provider and at least one token.
    pub(super) accepted: Vec<(Provider, GaurunNotification)>,
    /// Left out, in the request's order.
    pub(super) rejected: Vec<Rejected>,
}

/// The request's notifications sorted into those to send and those left out, or the reason to
/// refuse it whole.
pub(super) fn parse(body: &[u8], rules: Rules) -> Result<Sorted, Refused> {
    if body.is_empty() {
        return Err(Refused::EmptyBody);
    }
    let request = gaurun_json::decode(body).map_err(|e| Refused::Malformed(e.to_string()))?;
    let count = request.notifications.len();
    if count == 0 {
        return Err(Refused::NoNotification);
    }
    if count > rules.max {
        return Err(Refused::OverLimit {
            count,
            max: rules.max,
        });
    }
    let mut sorted = Sorted::default();
    for (index, n) in request.notifications.into_iter().enumerate() {
        let checked = match n.token.is_empty() && rules.strict {
            true => Err(Invalid::NoToken),
            false => n.check(rules.allow_empty_message),
        };
        match checked {
            Ok(_) if n.token.is_empty() => {}
            Ok(provider) => sorted.accepted.push((provider, n)),
            Err(reason) => {
                let identifier = n.identifier.chars().take(MAX_IDENTIFIER_CHARS).collect();
                let rejected = Rejected {
                    index,
                    reason,
                    identifier,
                };
                if rules.strict {
                    return Err(Refused::Invalid(rejected));
                }
                sorted.rejected.push(rejected);
            }
        }
    }
    Ok(sorted)
}

/// Any other method on `/push`: Gaurun's 400, which its clients may match.
pub(super) async fn not_post() -> Response {
    Family::Gaurun.error(StatusCode::BAD_REQUEST, "method must be POST")
}

/// `POST /push`: for the default app.
pub(super) async fn push(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    accept(&state, crate::apps::DEFAULT_APP, &headers, body).await
}

/// `POST /apps/{name}/push`: for a configured app (contract §10); 404 for any other name, with
/// the body left unparsed, so that a typo in a client's URL is not mistaken for a bad request.
pub(super) async fn app_push(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if state.apps.resolve(Some(&app)).is_none() {
        let text = format!("app {:?} is not configured", quoted(&app));
        return Family::Gaurun.error(StatusCode::NOT_FOUND, text);
    }
    accept(&state, &app, &headers, body).await
}

/// Sorts the request's notifications, appends those to send to the backlog for `app`, and
/// answers 200 once they are durable, naming those left out. A request repeating an
/// `Idempotency-Key` gets the first one's answer and appends nothing.
async fn accept(
    state: &ApiState,
    app: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let gaurun = Family::Gaurun;
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = state.settings.body_limit_bytes;
            let text = format!("request body is larger than {limit} bytes");
            return gaurun.error(StatusCode::PAYLOAD_TOO_LARGE, text);
        }
        Err(_) => return gaurun.error(StatusCode::BAD_REQUEST, "failed to read request-body"),
    };
    let key = match super::idempotency::key(headers) {
        Ok(key) => key,
        Err(refused) => return gaurun.error(StatusCode::BAD_REQUEST, refused),
    };
    let s = &state.settings;
    let rules = Rules {
        max: s.notification_max,
        allow_empty_message: s.allow_empty_message,
        strict: s.strict,
    };
    let sorted = match parse(&body, rules) {
        Ok(sorted) => sorted,
        Err(refused) => {
            if let Refused::Invalid(rejected) = &refused {
                left_out(app, rejected);
            }
            return gaurun.error(StatusCode::BAD_REQUEST, refused.to_string());
        }
    };
    let answer = answer(&sorted.rejected);
    let Some(backlog) = &state.backlog else {
        if sorted.accepted.is_empty() {
            sorted.rejected.iter().for_each(|r| left_out(app, r));
            return super::idempotency::answer(StatusCode::OK, answer);
        }
        return gaurun.error(StatusCode::SERVICE_UNAVAILABLE, "no backlog to accept into");
    };
    let idempotent = key.map(|key| Idempotent {
        key: state.keys.idempotency(&format!("push:{app}"), &key),
        answer: &answer,
        window_secs: state.window_secs,
    });
    let at = (chrono::Utc::now().timestamp(), app);
    match backlog.append(&sorted.accepted, at, idempotent).await {
        Ok(Appended::New(_)) => {
            sorted.rejected.iter().for_each(|r| left_out(app, r));
            super::idempotency::answer(StatusCode::OK, answer)
        }
        // Logged and counted when it was first answered.
        Ok(Appended::Repeated(first)) => super::idempotency::answer(StatusCode::OK, first),
        Err(e) => unavailable(&e, s.retry_after_secs),
    }
}

/// One WARN and one count per notification left out.
fn left_out(app: &str, r: &Rejected) {
    metrics::counter!(API_REJECTED, "reason" => r.reason.label()).increment(1);
    tracing::warn!(
        app,
        index = r.index,
        reason = r.reason.label(),
        identifier = %r.identifier,
        detail = %r.reason,
        "A POST /push notification was left out."
    );
}

/// The 200's body: `{"message": "ok"}`, with `rejected` when some were left out.
fn answer(rejected: &[Rejected]) -> String {
    if rejected.is_empty() {
        return json!({"message": "ok"}).to_string();
    }
    let rejected: Vec<_> = rejected
        .iter()
        .map(|r| json!({"index": r.index, "reason": r.reason.to_string()}))
        .collect();
    json!({"message": "ok", "rejected": rejected}).to_string()
}

/// 503 with `Retry-After` and a fixed text; Redis's own words go to the log only.
fn unavailable(e: &BacklogError, retry_after_secs: u64) -> Response {
    let text = match e {
        BacklogError::Full { .. } => "the backlog is full; retry later",
        _ => {
            tracing::warn!(error = %e, "POST /push could not be accepted.");
            "the notifications could not be stored; retry later"
        }
    };
    let mut refused = Family::Gaurun.error(StatusCode::SERVICE_UNAVAILABLE, text);
    let after = header::HeaderValue::from(retry_after_secs);
    refused.headers_mut().insert(header::RETRY_AFTER, after);
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const LENIENT: Rules = Rules {
        max: 100,
        allow_empty_message: false,
        strict: false,
    };
    const STRICT: Rules = Rules {
        strict: true,
        ..LENIENT
    };

    fn android(token: &str) -> Value {
        json!({"token": [token], "platform": 2, "message": "hello"})
    }

    fn body(notifications: Vec<Value>) -> Vec<u8> {
        json!({ "notifications": notifications })
            .to_string()
            .into_bytes()
    }

    fn tokens(sorted: &Sorted) -> Vec<&str> {
        let all = sorted.accepted.iter().flat_map(|(_, n)| &n.token);
        all.map(String::as_str).collect()
    }

    #[test]
    fn the_whole_request_is_refused_only_where_gaurun_refused_it() {
        let text = |body: &[u8]| parse(body, LENIENT).unwrap_err().to_string();
        assert_eq!(text(b""), "request body is empty");
        assert!(text(b"[]").starts_with("Request-body is malformed: "));
        assert!(text(br#"{"notifications": 3}"#).starts_with("Request-body is malformed: "));
        assert!(
            text(br#"{"notifications":[{"platform":"1"}]}"#)
                .starts_with("Request-body is malformed")
        );
        for empty in [
            &b"{}"[..],
            b"null",
            br#"{"notifications":null}"#,
            br#"{"notifications":[]}"#,
        ] {
            assert_eq!(text(empty), "empty notification");
        }
        let three = body(vec![android("a"), android("b"), android("c")]);
        let over = parse(&three, Rules { max: 2, ..LENIENT }).unwrap_err();
        assert_eq!(over.to_string(), "number of notifications(3) over limit(2)");
    }

    #[test]
    fn a_bad_notification_is_left_out_and_the_others_are_accepted() {
        let mut bad = android("x");
        bad["platform"] = json!(3);
        bad["identifier"] = json!("i".repeat(500));
        let mut none = android("y");
        none["token"] = json!([]);
        let request = body(vec![android("a"), bad, none, Value::Null, android("b")]);
        let sorted = parse(&request, LENIENT).unwrap();
        assert_eq!(tokens(&sorted), ["a", "b"]);
        let reasons: Vec<_> = sorted
            .rejected
            .iter()
            .map(|r| (r.index, r.reason.clone(), r.identifier.chars().count()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, Invalid::Platform(3), MAX_IDENTIFIER_CHARS),
                (3, Invalid::Platform(0), 0)
            ],
            "no token sends nothing and is no error; a null notification has platform 0"
        );
    }

    #[test]
    fn strict_mode_refuses_the_whole_request_for_the_first_one_left_out() {
        let mut bad = android("x");
        bad["platform"] = json!(9);
        let err = parse(&body(vec![android("a"), android("b"), bad]), STRICT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "notification 2: platform 9 is not 1 (iOS) or 2 (Android)"
        );
        let mut none = android("y");
        none["token"] = json!([]);
        let err = parse(&body(vec![none]), STRICT).unwrap_err();
        assert_eq!(err.to_string(), "notification 0: token is empty");
        assert_eq!(
            tokens(&parse(&body(vec![android("a")]), STRICT).unwrap()),
            ["a"]
        );
    }

    async fn read(response: Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn the_answer_names_what_was_left_out_and_is_gaurun_s_otherwise() {
        let ok = |body: String| super::super::idempotency::answer(StatusCode::OK, body);
        assert_eq!(read(ok(answer(&[]))).await, (200, json!({"message": "ok"})));
        let rejected = Rejected {
            index: 4,
            reason: Invalid::EmptyMessage,
            identifier: String::new(),
        };
        assert_eq!(
            read(ok(answer(&[rejected]))).await,
            (
                200,
                json!({"message": "ok", "rejected": [{"index": 4, "reason": "message is empty"}]})
            )
        );
        let full = unavailable(&BacklogError::Full { max: 3 }, 5);
        assert_eq!(full.headers()[header::RETRY_AFTER], "5");
        assert_eq!(
            read(full).await,
            (503, json!({"message": "the backlog is full; retry later"}))
        );
    }
}

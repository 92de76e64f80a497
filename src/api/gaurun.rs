//! Gaurun's `POST /push` (mercari/gaurun SPEC.md): the request as Gaurun clients send it, its
//! validation, and the handler. Unlike Gaurun, every notification is checked before the answer,
//! and an invalid one refuses the whole request with a 400 naming its index and the reason.
//!
//! The field names, platform codes and messages are Gaurun's and must not change; a new rule of
//! validation is a variant of [`Invalid`] with a test row.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::backlog::{Appended, BacklogError, Idempotent};
use super::guard::Family;
use crate::device::Provider;

/// Gaurun's `platform` codes.
const IOS: i64 = 1;
const ANDROID: i64 = 2;
/// FCM's longest time to live (and Gaurun's `gcm` check): four weeks.
const MAX_TIME_TO_LIVE: i64 = 4 * 7 * 24 * 3600;

/// `{"notifications": [...]}`; unknown fields are ignored, as Go's decoder does.
#[derive(Debug, Deserialize)]
pub(super) struct PushRequest {
    pub(super) notifications: Vec<GaurunNotification>,
}

/// One notification, each field as Gaurun's `RequestGaurunNotification`; absent means Go's zero.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub(super) struct GaurunNotification {
    pub(super) token: Vec<String>,
    #[serde(deserialize_with = "whole_number")]
    pub(super) platform: i64,
    pub(super) message: String,
    pub(super) title: String,
    pub(super) subtitle: String,
    #[serde(deserialize_with = "whole_number")]
    pub(super) badge: i64,
    pub(super) category: String,
    pub(super) sound: String,
    pub(super) content_available: bool,
    pub(super) mutable_content: bool,
    #[serde(deserialize_with = "whole_number")]
    pub(super) expiry: i64,
    pub(super) push_type: String,
    pub(super) collapse_key: String,
    /// Accepted and dropped: FCM v1 has no equivalent.
    pub(super) delay_while_idle: bool,
    #[serde(deserialize_with = "whole_number")]
    pub(super) time_to_live: i64,
    pub(super) priority: String,
    pub(super) extend: Vec<Extend>,
    /// Not sent: a field of the span of every log line about the notification's tokens.
    pub(super) identifier: String,
}

/// An integer field: `364` or `364.0` (the same number in JSON, and what PHP writes for a float);
/// `364.5` is refused as malformed.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| crate::event::whole(n.as_f64()?))
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not an integer")))
}

/// A custom key: `{"key": .., "val": ..}` (Gaurun's spelling; `value` is read too).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub(super) struct Extend {
    pub(super) key: String,
    #[serde(alias = "value")]
    pub(super) val: String,
}

impl GaurunNotification {
    /// Where its tokens go; `None` for a platform Gaurun does not know.
    pub(super) fn provider(&self) -> Option<Provider> {
        match self.platform {
            IOS => Some(Provider::Apns),
            ANDROID => Some(Provider::Fcm),
            _ => None,
        }
    }

    /// The first rule it breaks, in Gaurun's order (tokens, platform, message), then ours.
    pub(super) fn check(&self, allow_empty_message: bool) -> Result<Provider, Invalid> {
        if self.token.is_empty() {
            return Err(Invalid::NoToken);
        }
        if let Some(at) = self.token.iter().position(|t| t.trim().is_empty()) {
            return Err(Invalid::EmptyToken(at));
        }
        let provider = self.provider().ok_or(Invalid::Platform(self.platform))?;
        if self.message.is_empty() && !allow_empty_message {
            return Err(Invalid::EmptyMessage);
        }
        if let Some(at) = self.extend.iter().position(|e| e.key.is_empty()) {
            return Err(Invalid::ExtendKey(at));
        }
        self.check_values()?;
        match provider {
            Provider::Apns => self.check_ios()?,
            Provider::Fcm => self.check_android()?,
            // Gaurun has no web platform: `provider` never names Web Push.
            Provider::WebPush => return Err(Invalid::Platform(self.platform)),
        }
        Ok(provider)
    }

    /// Each field's own range, whichever platform reads it: a value that is wrong is wrong even
    /// where the other platform would ignore it (Gaurun ignored it), so the document's one schema
    /// tells a client what is accepted.
    fn check_values(&self) -> Result<(), Invalid> {
        if !matches!(self.push_type.as_str(), "" | "alert" | "background") {
            return Err(Invalid::PushType(self.push_type.clone()));
        }
        if self.badge < 0 {
            return Err(Invalid::Badge(self.badge));
        }
        if self.expiry < 0 {
            return Err(Invalid::Expiry(self.expiry));
        }
        if !(0..=MAX_TIME_TO_LIVE).contains(&self.time_to_live) {
            return Err(Invalid::TimeToLive(self.time_to_live));
        }
        if !matches!(self.priority.as_str(), "" | "high" | "normal") {
            return Err(Invalid::Priority(self.priority.clone()));
        }
        Ok(())
    }

    fn check_ios(&self) -> Result<(), Invalid> {
        // Apple's dictionary would be replaced by a custom key of the same name.
        match self.extend.iter().find(|e| e.key == "aps") {
            Some(e) => Err(Invalid::ReservedKey(e.key.clone())),
            None => Ok(()),
        }
    }

    fn check_android(&self) -> Result<(), Invalid> {
        // FCM refuses the whole message for these data keys.
        match self.extend.iter().find(|e| fcm_reserved(&e.key)) {
            Some(e) => Err(Invalid::ReservedKey(e.key.clone())),
            None => Ok(()),
        }
    }
}

fn fcm_reserved(key: &str) -> bool {
    matches!(key, "from" | "notification" | "message_type")
        || key.starts_with("google")
        || key.starts_with("gcm")
}

/// Why one notification is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Invalid {
    #[error("token is empty")]
    NoToken,
    #[error("token[{0}] is an empty string")]
    EmptyToken(usize),
    #[error("platform {0} is not 1 (iOS) or 2 (Android)")]
    Platform(i64),
    #[error("message is empty")]
    EmptyMessage,
    #[error("push_type {0:?} is not alert or background")]
    PushType(String),
    #[error("badge {0} is negative")]
    Badge(i64),
    #[error("expiry {0} is negative")]
    Expiry(i64),
    #[error("time_to_live {0} is not from 0 to 2419200 (four weeks)")]
    TimeToLive(i64),
    #[error("priority {0:?} is not high or normal")]
    Priority(String),
    #[error("extend[{0}] has an empty key")]
    ExtendKey(usize),
    #[error("extend key {0:?} is reserved by the provider")]
    ReservedKey(String),
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
    #[error("notification {index}: {reason}")]
    Invalid {
        index: usize,
        #[source]
        reason: Invalid,
    },
}

/// The request's notifications, each with its provider, or the first reason to refuse it.
pub(super) fn parse(
    body: &[u8],
    max: usize,
    allow_empty_message: bool,
) -> Result<Vec<(Provider, GaurunNotification)>, Refused> {
    if body.is_empty() {
        return Err(Refused::EmptyBody);
    }
    let request: PushRequest =
        serde_json::from_slice(body).map_err(|e| Refused::Malformed(e.to_string()))?;
    let count = request.notifications.len();
    if count == 0 {
        return Err(Refused::NoNotification);
    }
    if count > max {
        return Err(Refused::OverLimit { count, max });
    }
    request
        .notifications
        .into_iter()
        .enumerate()
        .map(|(index, n)| match n.check(allow_empty_message) {
            Ok(provider) => Ok((provider, n)),
            Err(reason) => Err(Refused::Invalid { index, reason }),
        })
        .collect()
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

/// `POST /apps/{name}/push`: for a configured app (contract §10); 404 for any other name, before
/// the body is looked at, so that a typo in a client's URL is not mistaken for a bad request.
pub(super) async fn app_push(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if state.apps.resolve(Some(&app)).is_none() {
        let text = format!("app {app:?} is not configured");
        return Family::Gaurun.error(StatusCode::NOT_FOUND, text);
    }
    accept(&state, &app, &headers, body).await
}

/// Validates the whole request, then appends it to the backlog for `app`: 200 once durable.
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
    let s = &state.settings;
    let accepted = match parse(&body, s.notification_max, s.allow_empty_message) {
        Ok(accepted) => accepted,
        Err(refused) => return gaurun.error(StatusCode::BAD_REQUEST, refused.to_string()),
    };
    let Some(backlog) = &state.backlog else {
        return gaurun.error(StatusCode::SERVICE_UNAVAILABLE, "no backlog to accept into");
    };
    let answer = serde_json::json!({ "message": "ok" }).to_string();
    let idempotent = match super::idempotency::key(headers) {
        Ok(key) => key.map(|key| Idempotent {
            key: state.keys.idempotency(&format!("push:{app}"), &key),
            answer: &answer,
            window_secs: state.window_secs,
        }),
        Err(refused) => return gaurun.error(StatusCode::BAD_REQUEST, refused),
    };
    let at = (chrono::Utc::now().timestamp(), app);
    match backlog.append(&accepted, at, idempotent).await {
        Ok(Appended::New(_)) => super::idempotency::answer(StatusCode::OK, answer),
        Ok(Appended::Repeated(first)) => super::idempotency::answer(StatusCode::OK, first),
        Err(e) => {
            if !matches!(e, BacklogError::Full { .. }) {
                tracing::warn!(error = %e, "POST /push could not be accepted.");
            }
            let text = format!("{e}; retry later");
            let mut refused = gaurun.error(StatusCode::SERVICE_UNAVAILABLE, text);
            let after = header::HeaderValue::from(s.retry_after_secs);
            refused.headers_mut().insert(header::RETRY_AFTER, after);
            refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn android() -> Value {
        json!({"token": ["t1"], "platform": 2, "message": "hello"})
    }

    fn ios() -> Value {
        json!({"token": ["t1"], "platform": 1, "message": "hello"})
    }

    fn with(mut base: Value, field: &str, value: Value) -> Value {
        base[field] = value;
        base
    }

    fn check(notifications: Vec<Value>) -> Result<Vec<Provider>, Refused> {
        let body = json!({ "notifications": notifications }).to_string();
        parse(body.as_bytes(), 100, false).map(|v| v.into_iter().map(|(p, _)| p).collect())
    }

    fn reason(n: Value) -> Invalid {
        match check(vec![n]) {
            Err(Refused::Invalid { index: 0, reason }) => reason,
            other => panic!("expected an invalid notification 0, got {other:?}"),
        }
    }

    #[test]
    fn a_whole_float_is_an_integer_and_a_fraction_is_malformed() {
        let whole = with(with(ios(), "platform", json!(1.0)), "badge", json!(3.0));
        assert_eq!(check(vec![whole]).unwrap(), [Provider::Apns]);
        let half = with(ios(), "expiry", json!(10.5));
        assert!(
            matches!(check(vec![half]), Err(Refused::Malformed(ref m)) if m.contains("10.5")),
            "a fraction names the number"
        );
    }

    #[test]
    fn the_platform_code_chooses_the_provider() {
        assert_eq!(
            check(vec![ios(), android()]).unwrap(),
            [Provider::Apns, Provider::Fcm]
        );
    }

    #[test]
    fn each_rule_names_its_reason() {
        let cases = [
            (with(android(), "token", json!([])), Invalid::NoToken),
            (
                with(android(), "token", json!(["a", ""])),
                Invalid::EmptyToken(1),
            ),
            (with(android(), "platform", json!(3)), Invalid::Platform(3)),
            (with(android(), "platform", json!(0)), Invalid::Platform(0)),
            (with(android(), "message", json!("")), Invalid::EmptyMessage),
            (
                with(ios(), "push_type", json!("voip")),
                Invalid::PushType("voip".into()),
            ),
            (with(ios(), "badge", json!(-1)), Invalid::Badge(-1)),
            (with(ios(), "expiry", json!(-5)), Invalid::Expiry(-5)),
            (
                with(android(), "time_to_live", json!(2_419_201)),
                Invalid::TimeToLive(2_419_201),
            ),
            (
                with(android(), "time_to_live", json!(-1)),
                Invalid::TimeToLive(-1),
            ),
            (
                with(android(), "priority", json!("urgent")),
                Invalid::Priority("urgent".into()),
            ),
            (
                with(android(), "extend", json!([{"key": "", "val": "x"}])),
                Invalid::ExtendKey(0),
            ),
            (
                with(ios(), "extend", json!([{"key": "aps", "val": "x"}])),
                Invalid::ReservedKey("aps".into()),
            ),
            (
                with(
                    android(),
                    "extend",
                    json!([{"key": "google.x", "val": "x"}]),
                ),
                Invalid::ReservedKey("google.x".into()),
            ),
        ];
        for (n, expected) in cases {
            assert_eq!(reason(n.clone()), expected, "{n}");
        }
    }

    #[test]
    fn a_value_out_of_range_is_refused_even_where_the_platform_ignores_the_field() {
        let ios_only = with(android(), "push_type", json!("voip"));
        assert_eq!(reason(ios_only), Invalid::PushType("voip".into()));
        let android_only = with(ios(), "priority", json!("urgent"));
        assert_eq!(reason(android_only), Invalid::Priority("urgent".into()));
        // Valid values of the other platform's fields are accepted and ignored, as Gaurun does.
        let quiet = with(android(), "push_type", json!("background"));
        let high = with(ios(), "priority", json!("high"));
        assert!(check(vec![quiet, high]).is_ok());
    }

    #[test]
    fn the_whole_request_is_refused_with_gaurun_s_texts() {
        assert_eq!(
            parse(b"", 100, false).unwrap_err().to_string(),
            "request body is empty"
        );
        let malformed = parse(b"{\"notifications\": 3}", 100, false).unwrap_err();
        assert!(matches!(malformed, Refused::Malformed(_)), "{malformed}");
        assert!(matches!(
            parse(b"{}", 100, false),
            Err(Refused::Malformed(_))
        ));
        assert_eq!(check(vec![]).unwrap_err().to_string(), "empty notification");
        let body = json!({"notifications": [android(), android(), android()]}).to_string();
        let over = parse(body.as_bytes(), 2, false).unwrap_err();
        assert_eq!(over.to_string(), "number of notifications(3) over limit(2)");
    }

    #[test]
    fn an_invalid_notification_is_named_by_its_index() {
        let err = check(vec![android(), ios(), with(ios(), "platform", json!(9))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "notification 2: platform 9 is not 1 (iOS) or 2 (Android)"
        );
    }

    #[test]
    fn an_empty_message_passes_when_allowed_and_unknown_fields_are_ignored() {
        let n = json!({"token": ["t"], "platform": 2, "retry": 1, "seq_id": 4, "other": {}});
        let body = json!({ "notifications": [n] }).to_string();
        assert!(parse(body.as_bytes(), 100, true).is_ok());
        assert!(parse(body.as_bytes(), 100, false).is_err());
    }

    #[test]
    fn extend_values_are_read_as_val_or_value() {
        let n = with(
            android(),
            "extend",
            json!([{"key": "a", "val": "1"}, {"key": "b", "value": "2"}]),
        );
        let body = json!({ "notifications": [n] }).to_string();
        let parsed = parse(body.as_bytes(), 100, false).unwrap();
        let vals: Vec<&str> = parsed[0].1.extend.iter().map(|e| e.val.as_str()).collect();
        assert_eq!(vals, ["1", "2"]);
    }
}

//! FCM HTTP v1: `POST {FCM_ENDPOINT}/v1/projects/{project}/messages:send`, one message per
//! request, multiplexed over HTTP/2 by one shared client, authorised by an OAuth2 access token
//! minted from the service account.
//!
//! Responses are classified by HTTP status first and FCM's `errorCode` second, by Firebase's
//! rules: `UNREGISTERED` and `SENDER_ID_MISMATCH` prune the token, `INVALID_ARGUMENT` never does
//! (payload errors share it), 429 waits at least a minute, 5xx retry, and 401/403 mean our
//! credentials are wrong for every device alike.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gcp_auth::TokenProvider;
use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::time::Instant;

use super::http2::{Http2Client, Http2Error};
use super::{PauseScope, PerNotification, Push, PushOutcome, Pusher, Reason, retry_after};
use crate::audience::{Platform, Provider};
use crate::config::FcmSettings;
use crate::content::Notification;

/// The OAuth2 scope for sending with FCM.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const CREDENTIALS_SETTING: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// What to fix after THIRD_PARTY_AUTH_ERROR.
const THIRD_PARTY_SETTING: &str =
    "the APNs key (or web push credentials) in the Firebase project settings";
/// A token is renewed this long before it expires. gcp_auth hands back its cached token until 20 s
/// before expiry, so asking earlier would only get the same token again.
const RENEW_BEFORE: Duration = Duration::from_secs(15);
/// A token endpoint that keeps refusing for this long means the credentials are wrong; shorter
/// refusals (Google's 5xx look the same through gcp_auth) are retried.
const REFUSED_FOR: Duration = Duration::from_secs(30);
/// How long a failed token fetch answers for every caller before the next try.
const FAILURE_SHARED_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("cannot read the service account {path}: {source}")]
    ServiceAccount {
        path: String,
        #[source]
        source: gcp_auth::Error,
    },
    #[error("no FCM project: set FCM_PROJECT_ID or use a service account with a project_id")]
    NoProject,
    #[error("FCM_PROJECT_ID {0:?} cannot be part of a URL path")]
    Project(String),
    #[error(transparent)]
    Client(#[from] super::http2::SetupError),
}

/// Why no access token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The key is unusable, or the token endpoint has refused the service account for a while
    /// (revoked key, wrong token_uri): every push would fail alike.
    #[error("the token endpoint refused the service account: {0}")]
    Refused(String),
    /// No token this time (timeout, network, a refusal not yet persistent); worth another try.
    #[error("no access token: {0}")]
    Unavailable(String),
}

/// Where bearer tokens come from.
#[async_trait::async_trait]
pub trait AccessTokens: Send + Sync {
    /// An `Authorization` header value, `Bearer …`.
    async fn bearer(&self) -> Result<http::HeaderValue, TokenError>;

    /// The cached value while it is fresh, without awaiting: the path nearly every push takes,
    /// kept out of `bearer`'s future, which is large (it holds the token fetch) and is boxed
    /// and moved on every call.
    fn fresh(&self) -> Option<http::HeaderValue> {
        None
    }
}

/// Access tokens minted by gcp_auth from a service-account JSON (whose `token_uri` it honours),
/// cached until shortly before they expire. One task renews; the others keep the old token
/// meanwhile or wait for the new one.
pub struct ServiceAccountTokens {
    account: gcp_auth::CustomServiceAccount,
    timeout: Duration,
    cached: RwLock<Option<(http::HeaderValue, Instant)>>,
    renewing: tokio::sync::Mutex<Failures>,
}

/// Recent failed fetches, shared: while the endpoint fails, tasks waiting for a token get the
/// same answer at once instead of each asking again.
#[derive(Default)]
struct Failures {
    last: Option<(TokenError, Instant)>,
    /// When the current run of refusals began.
    refused_since: Option<Instant>,
}

impl ServiceAccountTokens {
    pub fn from_file(path: &Path, timeout: Duration) -> Result<Self, FcmError> {
        let account = gcp_auth::CustomServiceAccount::from_file(path).map_err(|source| {
            FcmError::ServiceAccount {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(Self {
            account,
            timeout,
            cached: RwLock::new(None),
            renewing: tokio::sync::Mutex::new(Failures::default()),
        })
    }

    pub fn project_id(&self) -> Option<&str> {
        self.account.project_id()
    }

    fn cached(&self) -> Option<http::HeaderValue> {
        let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((value, renew_at)) if Instant::now() < *renew_at => Some(value.clone()),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl AccessTokens for ServiceAccountTokens {
    async fn bearer(&self) -> Result<http::HeaderValue, TokenError> {
        if let Some(value) = self.cached() {
            return Ok(value);
        }
        let mut failures = self.renewing.lock().await;
        if let Some(value) = self.cached() {
            return Ok(value); // another task renewed it while this one waited
        }
        if let Some((error, at)) = &failures.last
            && at.elapsed() < FAILURE_SHARED_FOR
        {
            return Err(error.clone());
        }
        // gcp_auth has no timeout of its own.
        let fetched = tokio::time::timeout(self.timeout, self.account.token(&[SCOPE])).await;
        let error = match fetched {
            Ok(Ok(token)) => {
                *failures = Failures::default();
                token
            }
            Err(_) => {
                let e = TokenError::Unavailable(format!("no answer within {:?}", self.timeout));
                failures.last = Some((e.clone(), Instant::now()));
                return Err(e);
            }
            Ok(Err(e)) => {
                let e = classify_token_error(&e, &mut failures.refused_since);
                failures.last = Some((e.clone(), Instant::now()));
                return Err(e);
            }
        };
        let token = error;
        // Not marked sensitive, on purpose: HPACK then indexes it, and each push sends a byte or
        // two instead of the whole token Huffman-coded again (Google's tokens run to hundreds of
        // bytes). Never-indexing guards against compression oracles, which need an attacker's
        // text in the same connection's headers; ours carries only our own. Logs never show it.
        let value = http::HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
            .map_err(|_| TokenError::Refused("the access token is not a valid header".into()))?;
        let lifetime = (token.expires_at() - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE);
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) = Some((value.clone(), renew_at));
        Ok(value)
    }

    fn fresh(&self) -> Option<http::HeaderValue> {
        self.cached()
    }
}

/// Sorts a gcp_auth failure: network trouble is retryable, an unusable key is not, and a refusal
/// by the token endpoint (gcp_auth cannot tell a 4xx from a 5xx) becomes final once it persists.
fn classify_token_error(e: &gcp_auth::Error, refused_since: &mut Option<Instant>) -> TokenError {
    match e {
        gcp_auth::Error::Str("token request failed") => {
            let since = *refused_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= REFUSED_FOR {
                TokenError::Refused(format!("{e}, for {:?}", since.elapsed()))
            } else {
                TokenError::Unavailable(e.to_string())
            }
        }
        gcp_auth::Error::Str(_) => TokenError::Refused(e.to_string()),
        _ => TokenError::Unavailable(error_chain(e)),
    }
}

/// A fixed token, for tests and for stand-ins that accept anything.
pub struct StaticToken(pub http::HeaderValue);

#[async_trait::async_trait]
impl AccessTokens for StaticToken {
    async fn bearer(&self) -> Result<http::HeaderValue, TokenError> {
        Ok(self.0.clone())
    }

    fn fresh(&self) -> Option<http::HeaderValue> {
        Some(self.0.clone())
    }
}

/// Sends pushes to FCM.
pub struct FcmPusher {
    /// A device always goes through the same connection; devices spread evenly.
    client: Http2Client,
    /// `…/v1/projects/{project}/messages:send`, parsed once.
    uri: http::Uri,
    tokens: Arc<dyn AccessTokens>,
    validate_only: bool,
    ttl: String,
    channel_id: Option<String>,
    templates: PerNotification<BodyTemplate>,
}

impl FcmPusher {
    pub fn new(
        client: Http2Client,
        project: &str,
        tokens: Arc<dyn AccessTokens>,
        settings: &FcmSettings,
        validate_only: bool,
    ) -> Result<Self, FcmError> {
        let uri = client
            .uri(&format!("/v1/projects/{project}/messages:send"))
            .map_err(|_| FcmError::Project(project.to_string()))?;
        Ok(Self {
            client,
            uri,
            tokens,
            validate_only,
            ttl: format!("{}s", settings.ttl_secs),
            channel_id: Some(settings.android_channel_id.clone()).filter(|c| !c.is_empty()),
            templates: PerNotification::default(),
        })
    }

    /// The request body for one push: the notification's shared body with the device's token
    /// spliced in, so the JSON shared by every device of the event is written once.
    pub fn body(&self, push: &Push) -> Vec<u8> {
        let ios = push.device.platform == Some(Platform::Ios);
        let template = self
            .templates
            .get_or_build(&push.notification, ios.into(), || {
                self.template(&push.notification, ios)
            });
        let token = &push.device.token;
        let mut body =
            Vec::with_capacity(template.prefix.len() + token.len() + 2 + template.suffix.len());
        body.extend_from_slice(&template.prefix);
        if token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            // Real tokens ([A-Za-z0-9_:-]) need no escaping.
            body.push(b'"');
            body.extend_from_slice(token.as_bytes());
            body.push(b'"');
        } else {
            // Writing a string into a Vec cannot fail; it escapes what JSON needs escaped.
            let _ = serde_json::to_writer(&mut body, token.as_str());
        }
        body.extend_from_slice(&template.suffix);
        body
    }

    /// The whole body for a device with an empty token, cut around the token's place: `token`
    /// is the message's first field, so `"token":""` occurs once and first.
    fn template(&self, n: &Notification, ios: bool) -> BodyTemplate {
        let full = serde_json::to_vec(&self.request("", n, ios)).unwrap_or_default();
        const EMPTY_TOKEN: &[u8] = br#""token":"""#;
        match full
            .windows(EMPTY_TOKEN.len())
            .position(|w| w == EMPTY_TOKEN)
        {
            Some(at) => BodyTemplate {
                prefix: full[..at + EMPTY_TOKEN.len() - 2].to_vec(),
                suffix: full[at + EMPTY_TOKEN.len()..].to_vec(),
            },
            // Unreachable with the types below; a test pins it.
            None => BodyTemplate {
                prefix: full,
                suffix: Vec::new(),
            },
        }
    }

    fn request<'a>(&'a self, token: &'a str, n: &'a Notification, ios: bool) -> SendRequest<'a> {
        SendRequest {
            validate_only: self.validate_only,
            message: Message {
                token,
                notification: Text {
                    title: &n.title,
                    body: &n.body,
                },
                data: Data(&n.data),
                android: Android {
                    priority: "high",
                    ttl: &self.ttl,
                    collapse_key: &n.collapse_id,
                    notification: AndroidNotification {
                        tag: &n.collapse_id,
                        channel_id: self.channel_id.as_deref(),
                    },
                },
                // An iPhone reached through FCM gets the same grouping as one reached directly.
                apns: ios.then(|| ApnsOverride {
                    headers: ApnsHeaders {
                        priority: "10",
                        push_type: "alert",
                        collapse_id: super::apns::collapse_id(&n.collapse_id),
                    },
                    payload: ApnsOverridePayload {
                        aps: ApnsOverrideAps {
                            thread_id: &n.thread_id,
                            sound: "default",
                        },
                    },
                }),
            },
        }
    }
}

/// A request body with a hole where the token goes.
struct BodyTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

#[async_trait::async_trait]
impl Pusher for FcmPusher {
    async fn push(&self, push: &Push) -> PushOutcome {
        let fetched = match self.tokens.fresh() {
            Some(bearer) => Ok(bearer),
            None => self.tokens.bearer().await,
        };
        let bearer = match fetched {
            Ok(bearer) => bearer,
            Err(TokenError::Unavailable(why)) => {
                return PushOutcome::Retryable {
                    reason: Reason::new(Provider::Fcm, "token unavailable").with_detail(why),
                    retry_after: None,
                    quota: false,
                };
            }
            Err(TokenError::Refused(reason)) => {
                return PushOutcome::CredentialsRejected {
                    reason: Reason::uncoded(Provider::Fcm, reason),
                    setting: CREDENTIALS_SETTING,
                    scope: PauseScope::Provider,
                };
            }
        };
        let body = self.body(push);
        let length = body.len();
        let request = || {
            let mut request = http::Request::new(());
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = self.uri.clone();
            let headers = request.headers_mut();
            headers.insert(http::header::AUTHORIZATION, bearer.clone());
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(http::header::CONTENT_LENGTH, length.into());
            request
        };
        let key = push.device.id.unsigned_abs();
        let response = match self.client.send(key, &request, body.into()).await {
            Ok(response) => response,
            Err(e) => return transport_failure(&e),
        };
        if response.status.is_success() {
            return PushOutcome::Delivered;
        }
        let after = retry_after(&response.headers);
        classify(response.status.as_u16(), &response.body, after)
    }

    async fn warm(&self) {
        // Every connection up before the burst, and the token too: the burst would otherwise
        // queue behind both.
        self.client.warm().await;
        let _ = self.tokens.bearer().await;
    }
}

fn transport_failure(e: &Http2Error) -> PushOutcome {
    // Resets and GOAWAY land here too: the request may not have reached FCM.
    let detail = std::error::Error::source(e).map_or_else(|| e.to_string(), error_chain);
    PushOutcome::Retryable {
        reason: Reason::new(Provider::Fcm, e.code()).with_detail(detail),
        retry_after: None,
        quota: false,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
            setting: THIRD_PARTY_SETTING,
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

#[derive(Serialize)]
struct SendRequest<'a> {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    validate_only: bool,
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    notification: Text<'a>,
    data: Data<'a>,
    android: Android<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    apns: Option<ApnsOverride<'a>>,
}

#[derive(Serialize)]
struct Text<'a> {
    title: &'a str,
    body: &'a str,
}

/// The data pairs as a JSON object of strings.
struct Data<'a>(&'a [(String, String)]);

impl Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Android<'a> {
    priority: &'a str,
    ttl: &'a str,
    collapse_key: &'a str,
    notification: AndroidNotification<'a>,
}

#[derive(Serialize)]
struct AndroidNotification<'a> {
    tag: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ApnsOverride<'a> {
    headers: ApnsHeaders<'a>,
    payload: ApnsOverridePayload<'a>,
}

#[derive(Serialize)]
struct ApnsHeaders<'a> {
    #[serde(rename = "apns-priority")]
    priority: &'a str,
    #[serde(rename = "apns-push-type")]
    push_type: &'a str,
    #[serde(rename = "apns-collapse-id")]
    collapse_id: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct ApnsOverridePayload<'a> {
    aps: ApnsOverrideAps<'a>,
}

#[derive(Serialize)]
struct ApnsOverrideAps<'a> {
    #[serde(rename = "thread-id")]
    thread_id: &'a str,
    sound: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pusher(validate_only: bool) -> FcmPusher {
        let settings = FcmSettings {
            endpoint: "http://127.0.0.1:9".into(),
            credentials: String::new(),
            project_id: "p".into(),
            concurrency: 0,
            connections: 0,
            ttl_secs: 3600,
            android_channel_id: "talks".into(),
            request_timeout_secs: 5,
        };
        let client = Http2Client::new(&settings.endpoint, 1, None, Duration::from_secs(5)).unwrap();
        let tokens = Arc::new(StaticToken(http::HeaderValue::from_static("Bearer t")));
        FcmPusher::new(client, "p", tokens, &settings, validate_only).unwrap()
    }

    fn push(notification: &Arc<Notification>, token: &str, platform: &str) -> Push {
        Push {
            event_id: "e".into(),
            device: crate::audience::Device {
                id: 1,
                user_id: Some(2),
                provider: Some(crate::audience::Provider::Fcm),
                platform: Some(Platform::parse(platform)),
                token: token.into(),
                locale: None,
                updated_at: None,
            },
            notification: notification.clone(),
        }
    }

    /// The spliced body is byte for byte what serialising the whole request gives, for tokens
    /// JSON must escape too, and each notification's template is its own.
    #[test]
    fn a_spliced_body_equals_the_whole_request_serialised() {
        let notification = |title: &str| {
            Arc::new(Notification {
                title: title.into(),
                body: "本文 \"quoted\"".into(),
                data: vec![
                    ("talk_id".into(), "42".into()),
                    ("url".into(), "x://t/42".into()),
                ],
                collapse_id: "talk-42".into(),
                thread_id: "program-7".into(),
            })
        };
        let (ja, en) = (notification("新しいトーク"), notification("New talk"));
        for validate_only in [false, true] {
            let fcm = pusher(validate_only);
            for n in [&ja, &en, &ja] {
                for platform in ["android", "ios", "web"] {
                    for token in [
                        "plain-token:APA91b",
                        "",
                        "q\"uote\\back\u{1}ctl",
                        "トークン",
                        "with space/slash",
                    ] {
                        let p = push(n, token, platform);
                        let whole =
                            serde_json::to_vec(&fcm.request(token, n, platform == "ios")).unwrap();
                        assert_eq!(
                            String::from_utf8(fcm.body(&p)).unwrap(),
                            String::from_utf8(whole).unwrap()
                        );
                    }
                }
            }
        }
    }

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
    fn a_refusing_token_endpoint_is_retried_until_the_refusals_persist() {
        let refused = gcp_auth::Error::Str("token request failed");
        let mut since = None;
        assert!(matches!(
            classify_token_error(&refused, &mut since),
            TokenError::Unavailable(_)
        ));
        since = Some(Instant::now() - REFUSED_FOR);
        assert!(matches!(
            classify_token_error(&refused, &mut since),
            TokenError::Refused(_)
        ));
        let bad_key = gcp_auth::Error::Str("invalid private key in credentials");
        assert!(matches!(
            classify_token_error(&bad_key, &mut None),
            TokenError::Refused(_)
        ));
        let io = gcp_auth::Error::Io("read", std::io::Error::other("reset"));
        assert!(matches!(
            classify_token_error(&io, &mut None),
            TokenError::Unavailable(_)
        ));
    }

    #[test]
    fn a_body_that_is_not_json_is_classified_by_status_alone() {
        // A 404 page from a wrong FCM_ENDPOINT must not prune every token.
        assert_eq!(classify(404, b"<html>", None).label(), "rejected");
        assert_eq!(classify(503, b"", None).label(), "retryable");
        assert_eq!(classify(400, b"oops", None).label(), "rejected");
    }
}

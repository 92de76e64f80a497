//! APNs over HTTP/2 with token (.p8) authentication, through the a2 crate.
//!
//! a2 talks only to Apple's two hosts, so it sits behind [`ApnsTransport`], a seam one request
//! wide (the autopush-rs pattern): everything above the wire — payload, headers, classification —
//! is ours and tested against a fake transport. a2 drops error reasons it does not know, so
//! responses are classified by HTTP status first and by reason second.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{PauseScope, PerNotification, Push, PushOutcome, Pusher, Reason};
use crate::audience::Provider;
use crate::config::ApnsSettings;

const KEY_SETTINGS: &str = "APNS_KEY_PATH / APNS_KEY_ID / APNS_TEAM_ID";
/// APNs refuses a collapse id longer than this many bytes.
const MAX_COLLAPSE_ID: usize = 64;

/// One request to APNs, as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsRequest {
    pub device_token: String,
    pub topic: String,
    /// `apns-push-type`
    pub push_type: &'static str,
    /// `apns-priority`
    pub priority: u8,
    /// `apns-expiration`, unix seconds.
    pub expiration: u64,
    /// `apns-collapse-id`, at most 64 bytes.
    pub collapse_id: String,
    /// The JSON body, shared by every device that gets the same notification.
    pub payload: bytes::Bytes,
}

/// What APNs answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsResponse {
    pub status: u16,
    /// The `reason` of the error body, when APNs sent one (and the transport understood it).
    pub reason: Option<String>,
    /// For 410: when APNs last confirmed the token invalid, in milliseconds since the epoch.
    pub timestamp_ms: Option<u64>,
}

/// Why a request got no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Connection lost, reset, GOAWAY, timeout: the same request may succeed on another try.
    #[error("{0}")]
    Retryable(String),
    /// The signing key cannot be used.
    #[error("{0}")]
    Credentials(String),
    /// The request could not be built or sent as it is.
    #[error("{0}")]
    Request(String),
}

/// The wire below the APNs pusher.
#[async_trait::async_trait]
pub trait ApnsTransport: Send + Sync {
    async fn send(&self, request: &ApnsRequest) -> Result<ApnsResponse, TransportError>;

    /// Opens the connection before a burst (see [`Pusher::warm`]).
    async fn warm(&self) {}
}

/// Sends pushes to APNs.
pub struct ApnsPusher {
    transport: Arc<dyn ApnsTransport>,
    topic: String,
    ttl: Duration,
    sound: String,
    /// Each notification's payload, built once.
    payloads: PerNotification<bytes::Bytes>,
}

impl ApnsPusher {
    pub fn new(transport: Arc<dyn ApnsTransport>, settings: &ApnsSettings) -> Self {
        Self {
            transport,
            topic: settings.topic.clone(),
            ttl: Duration::from_secs(settings.ttl_secs),
            sound: settings.sound.clone(),
            payloads: PerNotification::default(),
        }
    }

    /// The request for one push, expiring `ttl` after `now`.
    pub fn request(&self, push: &Push, now: chrono::DateTime<Utc>) -> ApnsRequest {
        let n = &push.notification;
        let payload = self.payloads.get_or_build(n, 0, || {
            let payload = Payload {
                aps: Aps {
                    alert: Alert {
                        title: &n.title,
                        body: &n.body,
                    },
                    sound: Some(self.sound.as_str()).filter(|s| !s.is_empty()),
                    thread_id: &n.thread_id,
                },
                data: &n.data,
            };
            // Serialising plain strings cannot fail.
            serde_json::to_vec(&payload).unwrap_or_default().into()
        });
        ApnsRequest {
            device_token: push.device.token.clone(),
            topic: self.topic.clone(),
            push_type: "alert",
            priority: 10,
            expiration: (now.timestamp().max(0) as u64).saturating_add(self.ttl.as_secs()),
            collapse_id: collapse_id(&n.collapse_id).into_owned(),
            payload: bytes::Bytes::clone(&payload),
        }
    }
}

#[async_trait::async_trait]
impl Pusher for ApnsPusher {
    async fn push(&self, push: &Push) -> PushOutcome {
        let request = self.request(push, Utc::now());
        match self.transport.send(&request).await {
            Ok(response) => classify(&response),
            Err(TransportError::Retryable(e)) => PushOutcome::Retryable {
                reason: Reason::new(Provider::Apns, "transport").with_detail(e),
                retry_after: None,
                quota: false,
            },
            Err(TransportError::Credentials(e)) => PushOutcome::CredentialsRejected {
                reason: Reason::uncoded(Provider::Apns, e),
                setting: KEY_SETTINGS,
                scope: PauseScope::Provider,
            },
            Err(TransportError::Request(e)) => PushOutcome::Rejected {
                reason: Reason::new(Provider::Apns, "request").with_detail(e),
            },
        }
    }

    async fn warm(&self) {
        self.transport.warm().await;
    }
}

/// The event's collapse id as APNs accepts it: as is up to 64 bytes, else its SHA-256 in hex
/// (64 characters), the same for every push of the event.
pub fn collapse_id(event_id: &str) -> Cow<'_, str> {
    if event_id.len() <= MAX_COLLAPSE_ID {
        return Cow::Borrowed(event_id);
    }
    let digest = Sha256::digest(event_id.as_bytes());
    Cow::Owned(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Maps an APNs response to what the fan-out does next: status first, reason second.
pub fn classify(response: &ApnsResponse) -> PushOutcome {
    let reason = |fallback: &str| {
        let code = response.reason.as_deref().unwrap_or(fallback);
        Reason::new(Provider::Apns, code.to_string())
    };
    match (response.status, response.reason.as_deref()) {
        (200, _) => PushOutcome::Delivered,
        (410, _) => PushOutcome::Unregistered {
            reason: reason("Unregistered"),
            since: response
                .timestamp_ms
                .and_then(|ms| Utc.timestamp_millis_opt(ms as i64).single()),
        },
        (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic")) => PushOutcome::Unregistered {
            reason: reason(""),
            since: None,
        },
        (403, _) => PushOutcome::CredentialsRejected {
            reason: reason("Forbidden"),
            setting: KEY_SETTINGS,
            scope: PauseScope::Provider,
        },
        (429 | 500 | 503, _) => PushOutcome::Retryable {
            reason: reason(&format!("HTTP {}", response.status)),
            retry_after: None,
            quota: false,
        },
        (status, _) => PushOutcome::Rejected {
            reason: reason(&format!("HTTP {status}")),
        },
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    aps: Aps<'a>,
    #[serde(flatten, serialize_with = "data_map")]
    data: &'a [(String, String)],
}

fn data_map<S: serde::Serializer>(data: &&[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(data.len()))?;
    for (k, v) in data.iter() {
        // `aps` is Apple's; a data key of that name would replace it.
        if k != "aps" {
            map.serialize_entry(k, v)?;
        }
    }
    map.end()
}

#[derive(Serialize)]
struct Aps<'a> {
    alert: Alert<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sound: Option<&'a str>,
    #[serde(rename = "thread-id")]
    thread_id: &'a str,
}

#[derive(Serialize)]
struct Alert<'a> {
    title: &'a str,
    body: &'a str,
}

/// The real transport: a2's client, one HTTP/2 connection to Apple, token-authenticated.
pub struct A2Transport {
    client: a2::Client,
}

impl A2Transport {
    /// Loads the .p8 key and prepares the client; nothing is sent yet.
    pub fn new(settings: &ApnsSettings) -> Result<Self, TransportError> {
        let key = std::fs::read(&settings.key_path).map_err(|e| {
            TransportError::Credentials(format!(
                "cannot read APNS_KEY_PATH {}: {e}",
                settings.key_path
            ))
        })?;
        let config = a2::ClientConfig {
            endpoint: if settings.sandbox {
                a2::Endpoint::Sandbox
            } else {
                a2::Endpoint::Production
            },
            request_timeout_secs: Some(settings.request_timeout_secs),
            pool_idle_timeout_secs: Some(settings.pool_idle_timeout_secs),
        };
        let client = a2::Client::token(key.as_slice(), &settings.key_id, &settings.team_id, config)
            .map_err(|e| {
                TransportError::Credentials(format!("APNS_KEY_PATH is not a usable .p8 key: {e}"))
            })?;
        Ok(Self { client })
    }
}

/// Our request in the shape a2 sends: the payload is already JSON.
#[derive(Debug)]
struct Prepared<'a> {
    request: &'a ApnsRequest,
    options: a2::NotificationOptions<'a>,
}

impl Serialize for Prepared<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_slice(&self.request.payload).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl a2::request::payload::PayloadLike for Prepared<'_> {
    fn to_json_string(&self) -> Result<String, a2::Error> {
        Ok(String::from_utf8_lossy(&self.request.payload).into_owned())
    }
    fn get_device_token(&self) -> &str {
        &self.request.device_token
    }
    fn get_options(&self) -> &a2::NotificationOptions<'_> {
        &self.options
    }
}

#[async_trait::async_trait]
impl ApnsTransport for A2Transport {
    async fn send(&self, request: &ApnsRequest) -> Result<ApnsResponse, TransportError> {
        let options = a2::NotificationOptions {
            apns_push_type: Some(a2::PushType::Alert),
            apns_topic: Some(&request.topic),
            apns_priority: Some(a2::Priority::High),
            apns_expiration: Some(request.expiration),
            apns_collapse_id: a2::CollapseId::new(&request.collapse_id).ok(),
            ..Default::default()
        };
        match self.client.send(Prepared { request, options }).await {
            Ok(response) => Ok(ApnsResponse {
                status: response.code,
                reason: None,
                timestamp_ms: None,
            }),
            Err(a2::Error::ResponseError(response)) => Ok(ApnsResponse {
                status: response.code,
                reason: response.error.as_ref().map(|e| format!("{:?}", e.reason)),
                timestamp_ms: response.error.as_ref().and_then(|e| e.timestamp),
            }),
            Err(
                e @ (a2::Error::ConnectionError(_)
                | a2::Error::ClientError(_)
                | a2::Error::RequestTimeout(_)),
            ) => Err(TransportError::Retryable(e.to_string())),
            Err(e @ a2::Error::SignerError(_)) => Err(TransportError::Credentials(e.to_string())),
            Err(e) => Err(TransportError::Request(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::audience::Device;
    use crate::content::Notification;

    fn settings() -> ApnsSettings {
        crate::config::Settings::load(|_| None).unwrap().apns
    }

    fn push(title: &str, body: &str, event_id: &str) -> Push {
        Push {
            event_id: event_id.into(),
            device: Device {
                id: 1,
                user_id: Some(2),
                provider: Some(Provider::Apns),
                platform: Some(crate::audience::Platform::Ios),
                token: "a1b2c3d4e5f6".into(),
                locale: Some("ja".into()),
                updated_at: None,
            },
            notification: Arc::new(Notification {
                title: title.into(),
                body: body.into(),
                data: vec![
                    ("program_id".into(), "10".into()),
                    ("talk_id".into(), "100".into()),
                    ("type".into(), "talk_posted".into()),
                ],
                collapse_id: event_id.into(),
                thread_id: "program-10".into(),
            }),
        }
    }

    fn pusher(transport: Arc<dyn ApnsTransport>) -> ApnsPusher {
        let mut s = settings();
        s.topic = "com.example.talks".into();
        ApnsPusher::new(transport, &s)
    }

    #[test]
    fn the_request_matches_the_golden_payload_and_headers() {
        struct Never;
        #[async_trait::async_trait]
        impl ApnsTransport for Never {
            async fn send(&self, _: &ApnsRequest) -> Result<ApnsResponse, TransportError> {
                unreachable!()
            }
        }
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap();
        let request =
            pusher(Arc::new(Never)).request(&push("新着", "第1回", "talk_posted:100"), now);
        assert_eq!(request.device_token, "a1b2c3d4e5f6");
        assert_eq!(request.topic, "com.example.talks");
        assert_eq!((request.push_type, request.priority), ("alert", 10));
        assert_eq!(request.expiration, now.timestamp() as u64 + 86_400);
        assert_eq!(request.collapse_id, "talk_posted:100");
        let golden = r#"{"aps":{"alert":{"title":"新着","body":"第1回"},"sound":"default","thread-id":"program-10"},"program_id":"10","talk_id":"100","type":"talk_posted"}"#;
        assert_eq!(request.payload, golden);
    }

    #[test]
    fn a_long_event_id_becomes_a_64_byte_collapse_id_stable_per_event() {
        let long = "x".repeat(100);
        let id = collapse_id(&long);
        assert_eq!(id.len(), 64);
        assert_eq!(id, collapse_id(&long));
        assert_ne!(id, collapse_id(&"y".repeat(100)));
        assert_eq!(collapse_id("short"), "short");
    }

    #[test]
    fn a_japanese_payload_cut_by_the_content_stays_within_4096_bytes() {
        let talk = crate::content::Talk {
            talk_id: 1,
            program_id: 10,
            author_id: None,
            talk_title: "長いタイトル".repeat(400),
            program_title: "番組".repeat(400),
        };
        let templates = crate::content::Templates::new(
            &crate::config::Settings::load(|_| None).unwrap().content,
        )
        .unwrap();
        let rendered = templates.render(&talk, "talk_posted:1").unwrap();
        let mut p = push("", "", "talk_posted:1");
        p.notification = Arc::clone(rendered.for_locale(Some("ja")));
        let request = pusher(Arc::new(Recorder::default())).request(&p, Utc::now());
        assert!(
            request.payload.len() <= 4096,
            "{} bytes",
            request.payload.len()
        );
        assert!(
            request.payload.len() > 3000,
            "cut too much: {} bytes",
            request.payload.len()
        );
    }

    /// Each APNs response row, as Apple documents it.
    #[test]
    fn each_apns_response_maps_to_what_the_fan_out_does_next() {
        let rows: &[(u16, Option<&str>, &str)] = &[
            (200, None, "delivered"),
            (410, Some("Unregistered"), "unregistered"),
            (410, Some("ExpiredToken"), "unregistered"),
            (410, None, "unregistered"), // a reason a2 does not know arrives as None
            (400, Some("BadDeviceToken"), "unregistered"),
            (400, Some("DeviceTokenNotForTopic"), "unregistered"),
            (400, Some("BadTopic"), "rejected"),
            (400, Some("BadCollapseId"), "rejected"),
            (400, None, "rejected"),
            (413, Some("PayloadTooLarge"), "rejected"),
            (403, Some("InvalidProviderToken"), "credentials_rejected"),
            (403, Some("ExpiredProviderToken"), "credentials_rejected"),
            (403, None, "credentials_rejected"),
            (429, Some("TooManyRequests"), "retryable"),
            (500, Some("InternalServerError"), "retryable"),
            (503, Some("ServiceUnavailable"), "retryable"),
            (404, Some("BadPath"), "rejected"),
        ];
        for (status, reason, label) in rows {
            let response = ApnsResponse {
                status: *status,
                reason: reason.map(str::to_string),
                timestamp_ms: None,
            };
            assert_eq!(classify(&response).label(), *label, "{status} {reason:?}");
        }
        let gone = classify(&ApnsResponse {
            status: 410,
            reason: Some("Unregistered".into()),
            timestamp_ms: Some(1_700_000_000_000),
        });
        assert_eq!(
            gone,
            PushOutcome::Unregistered {
                reason: Reason::new(Provider::Apns, "Unregistered"),
                since: Utc.timestamp_millis_opt(1_700_000_000_000).single(),
            }
        );
    }

    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<ApnsRequest>>,
    }

    #[async_trait::async_trait]
    impl ApnsTransport for Recorder {
        async fn send(&self, request: &ApnsRequest) -> Result<ApnsResponse, TransportError> {
            self.seen.lock().unwrap().push(request.clone());
            Ok(ApnsResponse {
                status: 200,
                reason: None,
                timestamp_ms: None,
            })
        }
    }

    #[tokio::test]
    async fn transport_failures_are_retryable_and_key_failures_pause_the_provider() {
        struct Failing(TransportError);
        #[async_trait::async_trait]
        impl ApnsTransport for Failing {
            async fn send(&self, _: &ApnsRequest) -> Result<ApnsResponse, TransportError> {
                Err(self.0.clone())
            }
        }
        let p = push("t", "b", "e");
        let reset = pusher(Arc::new(Failing(TransportError::Retryable("reset".into()))));
        assert_eq!(reset.push(&p).await.label(), "retryable");
        let key = pusher(Arc::new(Failing(TransportError::Credentials(
            "bad key".into(),
        ))));
        assert!(
            matches!(key.push(&p).await, PushOutcome::CredentialsRejected { setting, .. } if setting.contains("APNS_KEY_PATH"))
        );

        let recorder = Arc::new(Recorder::default());
        assert_eq!(
            pusher(recorder.clone()).push(&p).await,
            PushOutcome::Delivered
        );
        assert_eq!(
            recorder.seen.lock().unwrap()[0].device_token,
            "a1b2c3d4e5f6"
        );
    }

    #[test]
    fn a_missing_or_malformed_key_file_names_the_setting() {
        let mut s = settings();
        s.key_path = "/nonexistent/AuthKey.p8".into();
        let err = A2Transport::new(&s).err().unwrap();
        assert!(err.to_string().contains("APNS_KEY_PATH"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("AuthKey.p8");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        s.key_path = path.display().to_string();
        s.key_id = "ABC123DEFG".into();
        s.team_id = "DEF123GHIJ".into();
        let err = A2Transport::new(&s).err().unwrap();
        assert!(matches!(err, TransportError::Credentials(_)), "{err}");
    }
}

/// APNs over our own HTTP/2 client, for a stand-in at `APNS_ENDPOINT` (a2 reaches only Apple's
/// hosts): the same requests, headers and token authentication, so staging and the benchmark can
/// run the APNs path on loopback.
pub struct HttpTransport {
    /// A device always goes through the same connection.
    client: super::http2::Http2Client,
    signer: ProviderToken,
}

impl HttpTransport {
    pub fn new(
        client: super::http2::Http2Client,
        settings: &ApnsSettings,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            client,
            signer: ProviderToken::load(settings)?,
        })
    }
}

#[async_trait::async_trait]
impl ApnsTransport for HttpTransport {
    async fn send(&self, request: &ApnsRequest) -> Result<ApnsResponse, TransportError> {
        let uri = self
            .client
            .uri(&format!("/3/device/{}", request.device_token))
            .map_err(|_| {
                TransportError::Request("the device token cannot be part of a URL".into())
            })?;
        let value = |v: &str| {
            http::HeaderValue::from_str(v)
                .map_err(|_| TransportError::Request(format!("{v:?} is not a valid header value")))
        };
        let (bearer, topic, collapse_id) = (
            self.signer.bearer()?,
            value(&request.topic)?,
            value(&request.collapse_id)?,
        );
        let http_request = || {
            let mut http_request = http::Request::new(());
            *http_request.method_mut() = http::Method::POST;
            *http_request.uri_mut() = uri.clone();
            let headers = http_request.headers_mut();
            headers.insert(http::header::AUTHORIZATION, bearer.clone());
            headers.insert("apns-topic", topic.clone());
            headers.insert(
                "apns-push-type",
                http::HeaderValue::from_static(request.push_type),
            );
            headers.insert("apns-priority", u16::from(request.priority).into());
            headers.insert("apns-expiration", request.expiration.into());
            headers.insert("apns-collapse-id", collapse_id.clone());
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(http::header::CONTENT_LENGTH, request.payload.len().into());
            http_request
        };
        let shard = request
            .device_token
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        let response = self
            .client
            .send(shard, &http_request, request.payload.clone())
            .await
            .map_err(|e| TransportError::Retryable(e.to_string()))?;
        let status = response.status.as_u16();
        if status == 200 {
            return Ok(ApnsResponse {
                status,
                reason: None,
                timestamp_ms: None,
            });
        }
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        Ok(ApnsResponse {
            status,
            reason: body["reason"].as_str().map(str::to_string),
            timestamp_ms: body["timestamp"].as_u64(),
        })
    }

    async fn warm(&self) {
        // As for FCM: every connection up before the burst.
        self.client.warm().await;
    }
}

/// The ES256 provider token APNs wants (`{alg, kid}` / `{iss, iat}`), signed with the .p8 key and
/// renewed after 50 minutes (Apple: no more than every 20, at least every 60).
struct ProviderToken {
    key: ring::signature::EcdsaKeyPair,
    key_id: String,
    team_id: String,
    cached: std::sync::RwLock<Option<(http::HeaderValue, std::time::Instant)>>,
}

const PROVIDER_TOKEN_FOR: Duration = Duration::from_secs(50 * 60);

impl ProviderToken {
    fn load(settings: &ApnsSettings) -> Result<Self, TransportError> {
        use rustls::pki_types::PrivatePkcs8KeyDer;
        use rustls::pki_types::pem::PemObject;
        let bad = |e: &dyn std::fmt::Display| {
            TransportError::Credentials(format!("APNS_KEY_PATH is not a usable .p8 key: {e}"))
        };
        let pem = std::fs::read(&settings.key_path).map_err(|e| {
            TransportError::Credentials(format!(
                "cannot read APNS_KEY_PATH {}: {e}",
                settings.key_path
            ))
        })?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| bad(&e))?;
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| bad(&e))?;
        Ok(Self {
            key,
            key_id: settings.key_id.clone(),
            team_id: settings.team_id.clone(),
            cached: std::sync::RwLock::new(None),
        })
    }

    fn bearer(&self) -> Result<http::HeaderValue, TransportError> {
        if let Some((value, at)) = &*self.cached.read().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < PROVIDER_TOKEN_FOR
        {
            return Ok(value.clone());
        }
        // One signer at a time: Apple answers a burst of fresh tokens with 429
        // TooManyProviderTokenUpdates. Whoever waited finds the new token here.
        let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
        if let Some((value, at)) = &*cached
            && at.elapsed() < PROVIDER_TOKEN_FOR
        {
            return Ok(value.clone());
        }
        let header = base64url(format!(r#"{{"alg":"ES256","kid":"{}"}}"#, self.key_id).as_bytes());
        let claims = base64url(
            format!(
                r#"{{"iss":"{}","iat":{}}}"#,
                self.team_id,
                Utc::now().timestamp()
            )
            .as_bytes(),
        );
        let signing_input = format!("{header}.{claims}");
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| TransportError::Credentials("signing the provider token failed".into()))?;
        // Indexed by HPACK like FCM's bearer (see there): sent once per connection, not per push.
        let value = http::HeaderValue::from_str(&format!(
            "bearer {signing_input}.{}",
            base64url(signature.as_ref())
        ))
        .map_err(|e| TransportError::Credentials(e.to_string()))?;
        *cached = Some((value.clone(), std::time::Instant::now()));
        Ok(value)
    }
}

/// Base64url without padding, as JWTs use it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod http_transport_tests {
    use super::*;

    #[test]
    fn base64url_matches_the_rfc_examples() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn a_provider_token_is_an_es256_jwt_with_the_key_id_and_team() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("AuthKey.p8");
        std::fs::write(&path, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let mut settings = crate::config::Settings::load(|_| None).unwrap().apns;
        settings.key_path = path.display().to_string();
        settings.key_id = "ABC123DEFG".into();
        settings.team_id = "DEF123GHIJ".into();
        let token = ProviderToken::load(&settings).unwrap();
        let bearer = token.bearer().unwrap();
        let text = bearer
            .to_str()
            .unwrap()
            .strip_prefix("bearer ")
            .unwrap()
            .to_string();
        let parts: Vec<&str> = text.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[0],
            base64url(br#"{"alg":"ES256","kid":"ABC123DEFG"}"#)
        );
        assert_eq!(parts[2].len(), 86, "a 64-byte P-256 signature");
        assert_eq!(
            token.bearer().unwrap(),
            bearer,
            "cached, not re-signed per push"
        );
    }
}

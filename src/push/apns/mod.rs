//! APNs: the pusher that turns a push into an APNs request and its answer into an outcome.
//!
//! The request goes through [`ApnsTransport`], a seam one request wide: in production and
//! against a stand-in it is [`HttpTransport`] (h2-shards to Apple's host or `APNS_ENDPOINT`, with
//! the [`ProviderToken`]); in tests, a fake. Everything above the wire — payload, headers,
//! classification — is the same whichever transport carries it.
//!
//! Files: `payload.rs` (the body and the collapse id), `transport.rs` (the seam, the real
//! transport and Apple's hosts), `provider_token.rs` (the JWT and Apple's refresh rules),
//! `classify.rs` (answer → outcome). What may change here: the request's fixed fields (push type,
//! priority) and how transport failures become outcomes.
//!
//! a2 was the production transport until it was replaced by this one: it reached only Apple's two
//! hosts with its compiled-in roots over one unPINGed connection, so the path that shipped was
//! never the one tested or measured. Its payload and error-reason types were not kept either: the
//! payload is built here (golden-tested), and its closed `ErrorReason` enum turns reasons it does
//! not know into nothing, where the reason string is read here as Apple sends it.

mod classify;
mod payload;
mod provider_token;
mod settings;
mod transport;

pub(crate) use classify::classify;
pub(crate) use payload::collapse_id;
pub(crate) use provider_token::KeyError;
pub use provider_token::{Clock, ProviderToken, SystemClock};
pub use settings::ApnsSettings;
pub(crate) use transport::endpoint;
pub use transport::{ApnsRequest, ApnsResponse, ApnsTransport, HttpTransport, TransportError};

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{
    PauseScope, PerNotification, Prebuilt, Push, PushContent, PushOutcome, Pusher, Reason,
};
use crate::audience::Provider;
use crate::telemetry::ErrorChain;
use classify::KEY_SETTINGS;

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
        let expiration = (now.timestamp().max(0) as u64).saturating_add(self.ttl.as_secs());
        let n = match &push.content {
            PushContent::Talk(n) => n,
            PushContent::Prebuilt(prebuilt) => {
                return self.prebuilt_request(prebuilt, &push.device.token, expiration);
            }
        };
        let payload = self
            .payloads
            .get_or_build(n, 0, || payload::payload(n, &self.sound));
        ApnsRequest {
            device_token: push.device.token.clone(),
            topic: self.topic.clone(),
            push_type: "alert",
            priority: 10,
            expiration,
            collapse_id: collapse_id(&n.collapse_id).into_owned(),
            payload: bytes::Bytes::clone(&payload),
        }
    }

    /// A prebuilt payload as it is: no collapse id (none was asked for), APNs' default priority
    /// (10) and, without an expiration of its own, the configured time to live. A body built for
    /// another provider is a caller's bug: sent empty, for APNs to refuse (PayloadEmpty).
    fn prebuilt_request(&self, prebuilt: &Prebuilt, token: &str, expiration: u64) -> ApnsRequest {
        let (payload, push_type, expiration) = match prebuilt {
            Prebuilt::Apns(apns) => (
                apns.payload.clone(),
                apns.push_type.as_str(),
                apns.expiration.unwrap_or(expiration),
            ),
            Prebuilt::Fcm(_) => (bytes::Bytes::new(), "alert", expiration),
        };
        ApnsRequest {
            device_token: token.to_string(),
            topic: self.topic.clone(),
            push_type,
            priority: 10,
            expiration,
            collapse_id: String::new(),
            payload,
        }
    }
}

#[async_trait::async_trait]
impl Pusher for ApnsPusher {
    async fn push(&self, push: &Push) -> PushOutcome {
        let request = self.request(push, Utc::now());
        match self.transport.send(&request).await {
            Ok(response) => classify(&response),
            Err(TransportError::Unanswered(e)) => PushOutcome::Retryable {
                // `apns:transport: connect: TCP connect to …: Connection refused`
                reason: Reason::new(Provider::Apns, "transport").with_detail(format!(
                    "{}: {}",
                    e.code(),
                    std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), |source| ErrorChain(source).to_string())
                )),
                retry_after: None,
                quota: false,
            },
            Err(e @ TransportError::Credentials(_)) => PushOutcome::CredentialsRejected {
                reason: Reason::uncoded(Provider::Apns, ErrorChain(&e).to_string()),
                setting: KEY_SETTINGS,
                scope: PauseScope::Provider,
            },
            Err(e @ TransportError::Request { .. }) => PushOutcome::Rejected {
                reason: Reason::new(Provider::Apns, "request").with_detail(e.to_string()),
            },
        }
    }

    async fn warm(&self) {
        self.transport.warm().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::TimeZone;

    use super::provider_token::SigningError;
    use super::*;
    use crate::audience::Device;
    use crate::content::Notification;

    fn settings() -> ApnsSettings {
        crate::push::shipped::<super::ApnsSettings>("apns")
    }

    fn push(title: &str, body: &str, event_id: &str) -> Push {
        Push {
            event_id: event_id.into(),
            device: Device {
                id: 1,
                user_id: Some(2),
                provider: Some(Provider::Apns),
                platform: Some(crate::audience::Platform::Ios),
                app: Some(crate::apps::AppId::DEFAULT),
                token: "a1b2c3d4e5f6".into(),
                locale: Some("ja".into()),
                updated_at: None,
            },
            content: PushContent::Talk(Arc::new(Notification {
                title: title.into(),
                body: body.into(),
                data: vec![
                    ("program_id".into(), "10".into()),
                    ("talk_id".into(), "100".into()),
                    ("type".into(), "talk_posted".into()),
                ],
                collapse_id: event_id.into(),
                thread_id: "program-10".into(),
            })),
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
    fn a_japanese_payload_cut_by_the_content_stays_within_4096_bytes() {
        let talk = crate::content::Talk {
            talk_id: 1,
            program_id: 10,
            author_id: None,
            talk_title: "長いタイトル".repeat(400),
            program_title: "番組".repeat(400),
        };
        let templates = crate::content::Templates::new(&crate::push::shipped::<
            crate::content::ContentSettings,
        >("content"))
        .unwrap();
        let rendered = templates.render(&talk, "talk_posted:1").unwrap();
        let mut p = push("", "", "talk_posted:1");
        p.content = Arc::clone(rendered.for_locale(Some("ja"))).into();
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
        let reset = pusher(Arc::new(Failing(TransportError::Unanswered(
            h2_shards::Http2Error::Timeout(Duration::from_secs(1)),
        ))));
        assert_eq!(reset.push(&p).await.label(), "retryable");
        let key = pusher(Arc::new(Failing(TransportError::Credentials(
            SigningError(ring::error::Unspecified),
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
}

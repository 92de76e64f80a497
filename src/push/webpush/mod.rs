//! Web Push (RFC 8030), for listeners in a browser: the device's token is the subscription the
//! browser gave (`subscription`), each push's plaintext (`payload`) is encrypted for that
//! subscription alone (`encrypt`, RFC 8291), signed for the push service with our VAPID key
//! (`vapid`, RFC 8292), and POSTed to the subscription's endpoint over the same HTTP/2 client as
//! FCM and APNs, one set of connections per push-service origin. `classify` reads the answer,
//! `settings` holds `[webpush]`.
//!
//! An endpoint is data from a client: only `https` endpoints on `[webpush] allowed_hosts` are
//! ever contacted; any other push is `Skipped` before a connection exists.
//!
//! Encryption uses ring's primitives (ECDH P-256, HKDF-SHA256, AES-128-GCM) rather than a Web Push
//! crate. `ece`, Mozilla's crate, has one backend, OpenSSL (its `backend-openssl` default); without
//! it a caller supplies a process-wide `Cryptographer` of the same primitives plus an import of a
//! static private key, which ring does not offer, so it would bring OpenSSL (which the notifier
//! avoids: TLS is rustls on ring) or RustCrypto anyway. `web-push-native`/`ece-native` do the RFCs
//! on RustCrypto's `p256`, `hkdf` and `aes-gcm`, but from one maintainer before 1.0, on a
//! previous generation of those crates (a second copy of each beside ours), and about four times
//! slower per push (a release build on the shared 2-core machine: 449 µs for its whole
//! encryption against 112 µs for ring's key pair and agreement, the bulk of ours), which a
//! fan-out pays once per browser. ring is already our TLS
//! and signing code; what remains ours is RFC 8291's key schedule and RFC 8188's header (about
//! 40 lines in `encrypt`), checked byte for byte against RFC 8291's Appendix A and decrypted in
//! the tests by two implementations not ours: `web-push-native` in the stand-in, as a browser
//! would, and pywebpush's `http_ece`.
//!
//! The pusher reads `push.device.token` whatever the device's provider says: routing web devices
//! (`Provider::WebPush`) here is the fan-out's job. What may change here: the request's headers and the outcomes of
//! failures found before sending.

mod classify;
mod encrypt;
mod origins;
mod payload;
mod settings;
mod subscription;
mod vapid;

pub(crate) use classify::classify;
pub(crate) use origins::Dial;
pub(crate) use settings::{AllowedHosts, WebPushSettings, WebPushSettingsError};
pub(crate) use vapid::Vapid;
pub(crate) use vapid::VapidKeyError;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use ring::rand::SystemRandom;
use tracing::warn;

use super::{PerNotification, Push, PushContent, PushOutcome, Pusher, Reason, retry_after};
use crate::audience::Provider;
use crate::push::jwt::SystemClock;
use encrypt::EncryptError;
use origins::Origins;
use subscription::Subscription;

/// Why the pusher cannot be built from the settings; found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum WebPushError {
    #[error(transparent)]
    Settings(#[from] WebPushSettingsError),
    #[error(transparent)]
    Key(#[from] VapidKeyError),
}

/// Sends pushes to browsers' push services.
pub(crate) struct WebPushPusher {
    vapid: Vapid,
    allowed: AllowedHosts,
    ttl: http::HeaderValue,
    urgency: http::HeaderValue,
    /// Encrypt and sign every push, send none (`validate` send mode).
    validate_only: bool,
    random: SystemRandom,
    /// Each notification's plaintext, written once.
    plaintexts: PerNotification<Vec<u8>>,
    origins: Origins,
    /// Origins off the allowed hosts already logged.
    refused: Mutex<HashSet<String>>,
}

/// Refused origins logged at most; past it they are only counted.
const MAX_REFUSED_ORIGINS: usize = 64;

/// A push ready to go: where, and what.
struct Prepared {
    endpoint: subscription::Endpoint,
    authorization: http::HeaderValue,
    body: Bytes,
}

impl WebPushPusher {
    /// The pusher the settings describe, its VAPID key read from the settings' path; `dial`
    /// makes the connections to one origin (`https://host[:port]`) the first time a push goes
    /// there.
    pub(crate) fn load(
        settings: &WebPushSettings,
        dial: Dial,
        validate_only: bool,
    ) -> Result<Self, WebPushError> {
        settings.validate()?;
        let vapid = Vapid::load(settings, Arc::new(SystemClock))?;
        Ok(Self::new(settings, vapid, dial, validate_only))
    }

    pub(crate) fn new(
        settings: &WebPushSettings,
        vapid: Vapid,
        dial: Dial,
        validate_only: bool,
    ) -> Self {
        Self {
            vapid,
            allowed: settings.allowed_hosts.clone(),
            ttl: settings.ttl_secs.into(),
            urgency: http::HeaderValue::from_static(settings.urgency.as_str()),
            validate_only,
            random: SystemRandom::new(),
            plaintexts: PerNotification::default(),
            origins: Origins::new(dial),
            refused: Mutex::new(HashSet::new()),
        }
    }

    /// The VAPID public key, base64url: browsers subscribe with it (`applicationServerKey`).
    pub(crate) fn public_key(&self) -> &str {
        self.vapid.public_key()
    }

    /// Whether the key signs a token, as every push will need it to.
    pub(crate) fn check_signing(&self) -> Result<(), vapid::SigningError> {
        self.vapid.check()
    }

    /// Everything before the wire: the subscription read and its endpoint checked, the
    /// plaintext encrypted for it, the token signed. A push that cannot go has its outcome.
    fn prepare(&self, push: &Push) -> Result<Prepared, PushOutcome> {
        let provider = Provider::WebPush;
        let rejected = |code: &'static str, detail: String| PushOutcome::Rejected {
            reason: Reason::new(provider, code).with_detail(detail),
        };
        let notification = match &push.content {
            PushContent::Talk(n) => n,
            PushContent::Prebuilt(_) => {
                return Err(rejected(
                    "prebuilt",
                    "Web Push sends notifications rendered from a talk; POST /push has no web \
                     platform"
                        .into(),
                ));
            }
        };
        let subscription = Subscription::parse(&push.device.token)
            .map_err(|e| rejected(e.code(), e.to_string()))?;
        let endpoint = subscription.endpoint;
        if !endpoint.is_https() || !self.allowed.permits(endpoint.host()) {
            self.warn_once(&endpoint.origin);
            return Err(PushOutcome::Skipped {
                reason: format!(
                    "{provider}: endpoint {} is not an https endpoint on [webpush] allowed_hosts",
                    endpoint.origin
                ),
            });
        }
        let plaintext = self.plaintexts.get_or_build(notification, 0, || {
            payload::plaintext(notification, &push.event_id)
        });
        let sealed = encrypt::encrypt(
            &plaintext,
            &subscription.p256dh,
            &subscription.auth,
            &self.random,
        );
        let body = match sealed {
            Ok(body) => Bytes::from(body),
            Err(e @ EncryptError::TooLarge(_)) => {
                return Err(rejected("payload too large", e.to_string()));
            }
            Err(e @ EncryptError::NotOnCurve) => return Err(rejected("p256dh", e.to_string())),
            Err(e @ EncryptError::Crypto) => return Err(self.retryable("crypto", e.to_string())),
        };
        let authorization = self
            .vapid
            .authorization(&endpoint.origin)
            .map_err(|e| self.retryable("signing", e.to_string()))?;
        Ok(Prepared {
            endpoint,
            authorization,
            body,
        })
    }

    /// One WARN per origin off the list, so that an operator learns of a push service the list
    /// lacks (or of endpoints a client made up) without a line per device.
    fn warn_once(&self, origin: &str) {
        let mut seen = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() < MAX_REFUSED_ORIGINS && seen.insert(origin.to_string()) {
            warn!(
                origin,
                "A Web Push endpoint is not https on [webpush] allowed_hosts: its pushes are \
                 skipped and counted, never sent (logged once per origin)."
            );
        }
    }

    /// A failure of our own randomness or signing, which ring gives no reason for: another try.
    fn retryable(&self, code: &'static str, detail: String) -> PushOutcome {
        PushOutcome::Retryable {
            reason: Reason::new(Provider::WebPush, code).with_detail(detail),
            retry_after: None,
            quota: false,
        }
    }

    /// The request for a prepared push, on `uri` (the endpoint, on its origin's connections).
    fn request(&self, prepared: &Prepared, uri: &http::Uri) -> http::Request<()> {
        use http::header;
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(header::AUTHORIZATION, prepared.authorization.clone());
        headers.insert("ttl", self.ttl.clone());
        headers.insert("urgency", self.urgency.clone());
        headers.insert(
            header::CONTENT_ENCODING,
            http::HeaderValue::from_static("aes128gcm"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(
            header::CONTENT_LENGTH,
            h2_shards::number(prepared.body.len() as u64),
        );
        request
    }
}

#[async_trait::async_trait]
impl Pusher for WebPushPusher {
    async fn push(&self, push: &Push) -> PushOutcome {
        let prepared = match self.prepare(push) {
            Ok(prepared) => prepared,
            Err(outcome) => return outcome,
        };
        if self.validate_only {
            return PushOutcome::Delivered;
        }
        let provider = Provider::WebPush;
        let client = match self.origins.client(&prepared.endpoint.origin) {
            Ok(client) => client,
            Err(e) => {
                return PushOutcome::Rejected {
                    reason: Reason::new(provider, "endpoint").with_detail(e.to_string()),
                };
            }
        };
        let path = prepared
            .endpoint
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str());
        let uri = match client.uri(path) {
            Ok(uri) => uri,
            Err(e) => {
                return PushOutcome::Rejected {
                    reason: Reason::new(provider, "endpoint").with_detail(e.to_string()),
                };
            }
        };
        let request = || self.request(&prepared, &uri);
        let key = push.device.id.unsigned_abs();
        match client.send(key, &request, prepared.body.clone()).await {
            Ok(response) => classify(
                response.status.as_u16(),
                &response.body,
                retry_after(&response.headers),
            ),
            Err(e) => classify::transport_failure(&e),
        }
    }

    async fn warm(&self) {
        // Origins are known only from the subscriptions; the ones already seen are warmed.
        self.origins.warm().await;
    }
}

#[cfg(test)]
mod tests;

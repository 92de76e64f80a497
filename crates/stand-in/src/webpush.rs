//! A Web Push service (RFC 8030) with the browser behind it: it mints subscriptions as
//! `PushManager.subscribe()` would (a P-256 key pair and a 16-byte auth secret each, endpoint
//! `https://<host>:<tls port>/wp/<id>`), and on each push to one it checks the request as push
//! services do (`vapid`: the VAPID token; TTL, Urgency, `Content-Encoding: aes128gcm`, the
//! 4096-byte limit), then decrypts the body with the subscription's private key as the browser
//! would, using `web-push-native` (an implementation that is not the notifier's), records the
//! plaintext and answers 201.
//!
//! Ids choose failures: `gone` 410, `toolarge` 413, `flaky` one 503 (Retry-After: 1) then 201.
//! A body that does not decrypt is answered 400 and counted as a decryption failure, which tests
//! assert to be zero: it is a bug of the sender's, never a condition to provoke.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use web_push_native::p256;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;

use crate::Shared;
use crate::counters::{counted, record_delivery, tagged};
use crate::webpush_vapid::check_vapid;

/// Push services take at least this much body (RFC 8030 §7.2); this one takes no more.
const MAX_BODY: usize = 4096;
/// salt, rs, idlen and a P-256 keyid.
const HEADER_LEN: usize = 16 + 4 + 1 + 65;

/// A subscription as a browser holds it, with the private half a browser never shows.
#[derive(Debug, Clone)]
pub struct WebPushSubscription {
    pub id: String,
    pub endpoint: String,
    /// The public key, uncompressed (65 bytes).
    pub p256dh: Vec<u8>,
    pub auth: [u8; 16],
    /// The private key's scalar (32 bytes), for decrypting with another implementation.
    pub private_key: Vec<u8>,
}

impl WebPushSubscription {
    /// The JSON the browser's `subscription.toJSON()` gives: what a device's token holds.
    pub fn json(&self) -> String {
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {"p256dh": URL_SAFE_NO_PAD.encode(&self.p256dh), "auth": URL_SAFE_NO_PAD.encode(self.auth)},
        })
        .to_string()
    }
}

/// One push as it arrived and as the browser read it.
#[derive(Debug, Clone)]
pub struct WebPushMessage {
    /// The encrypted body, as sent.
    pub body: Vec<u8>,
    pub plaintext: Vec<u8>,
    pub ttl: u64,
    pub urgency: Option<String>,
}

/// What the service knows of a subscription.
pub(crate) struct Subscribed {
    secret: p256::SecretKey,
    auth: web_push_native::Auth,
    /// `https://host:port`: the audience its VAPID tokens must claim.
    pub(crate) origin: String,
    /// The `applicationServerKey` it was made with, if any: then only tokens with that `k=`.
    pub(crate) server_key: Option<Vec<u8>>,
}

/// The subscriptions and what arrived for each.
#[derive(Default)]
pub(crate) struct WebPushState {
    subscriptions: Mutex<HashMap<String, Arc<Subscribed>>>,
    received: Mutex<HashMap<String, Vec<WebPushMessage>>>,
    /// VAPID tokens whose signature was checked, with their `k=`: checked once, like Apple's.
    pub(crate) verified: Mutex<std::collections::HashSet<String>>,
}

impl WebPushState {
    /// A new subscription `id` (path-safe; empty: a random one) reached at `origin`.
    pub(crate) fn subscribe(
        &self,
        origin: &str,
        id: &str,
        server_key: Option<Vec<u8>>,
    ) -> WebPushSubscription {
        let id: String = match id {
            "" => format!("{:032x}", fastrand::u128(..)),
            id => id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        };
        let secret = new_secret_key();
        let auth: [u8; 16] = fastrand::u128(..).to_be_bytes();
        let p256dh = secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let subscription = WebPushSubscription {
            endpoint: format!("{origin}/wp/{id}"),
            p256dh,
            auth,
            private_key: secret.to_bytes().to_vec(),
            id: id.clone(),
        };
        let subscribed = Subscribed {
            secret,
            auth: web_push_native::Auth::from(auth),
            origin: origin.to_string(),
            server_key,
        };
        lock(&self.subscriptions).insert(id, Arc::new(subscribed));
        subscription
    }

    pub(crate) fn messages(&self, id: &str) -> Vec<WebPushMessage> {
        lock(&self.received).get(id).cloned().unwrap_or_default()
    }

    pub(crate) fn reset(&self) {
        lock(&self.received).clear();
        lock(&self.verified).clear();
    }
}

/// A P-256 private key from the system's randomness (a scalar out of range is drawn again).
fn new_secret_key() -> p256::SecretKey {
    use ring::rand::SecureRandom;
    let random = ring::rand::SystemRandom::new();
    loop {
        let mut bytes = [0u8; 32];
        if random.fill(&mut bytes).is_ok()
            && let Ok(key) = p256::SecretKey::from_slice(&bytes)
        {
            return key;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A push service's error, in Mozilla's shape (`code`, `errno`, `error`, `message`).
fn push_error(status: StatusCode, code: &'static str, message: &str) -> Response {
    let body = json!({
        "code": status.as_u16(),
        "errno": 0,
        "error": status.canonical_reason().unwrap_or_default(),
        "message": message,
    });
    tagged((status, Json(body)).into_response(), code)
}

/// `POST /wp/{id}`: a push to a subscription.
pub(crate) async fn push(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    counted(&shared, || answer(&shared, &id, &headers, &body)).await
}

fn answer(shared: &Shared, id: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let c = &shared.counters;
    let Some(subscribed) = lock(&shared.webpush.subscriptions).get(id).cloned() else {
        return push_error(
            StatusCode::NOT_FOUND,
            "webpush:not_found",
            "No such subscription",
        );
    };
    if !shared.config.accept_any_token
        && let Err(why) = check_vapid(shared, &subscribed, headers)
    {
        c.webpush_vapid_rejected.fetch_add(1, Ordering::Relaxed);
        return push_error(StatusCode::FORBIDDEN, "webpush:vapid", why);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(ttl) = header("ttl").and_then(|t| t.trim().parse::<u64>().ok()) else {
        return push_error(StatusCode::BAD_REQUEST, "webpush:ttl", "Missing TTL header");
    };
    let urgency = header("urgency").map(str::to_string);
    if urgency
        .as_deref()
        .is_some_and(|u| !matches!(u, "very-low" | "low" | "normal" | "high"))
    {
        return push_error(
            StatusCode::BAD_REQUEST,
            "webpush:urgency",
            "Invalid Urgency",
        );
    }
    if header(header::CONTENT_ENCODING.as_str()) != Some("aes128gcm") {
        return push_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "webpush:encoding",
            "Content-Encoding must be aes128gcm",
        );
    }
    if body.len() > MAX_BODY || id.contains("toolarge") {
        return push_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "webpush:too_large",
            "Payload Too Large",
        );
    }
    if id.contains("gone") {
        return push_error(StatusCode::GONE, "webpush:gone", "Subscription expired");
    }
    let once = || lock(&c.failed_once).insert(format!("webpush-flaky:{id}"));
    if shared.outage.load(Ordering::Relaxed) || (id.contains("flaky") && once()) {
        let mut response = push_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "webpush:unavailable",
            "Service Unavailable",
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return response;
    }
    let plaintext = match decrypt(&subscribed, body) {
        Ok(plaintext) => plaintext,
        Err(why) => {
            c.webpush_decrypt_failures.fetch_add(1, Ordering::Relaxed);
            return push_error(StatusCode::BAD_REQUEST, "webpush:decrypt", &why);
        }
    };
    c.webpush_decrypted.fetch_add(1, Ordering::Relaxed);
    deliver(shared, id, body, plaintext, ttl, urgency);
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(location) = format!("/m/{:032x}", fastrand::u128(..)).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Counts the delivery (the duplicate check keys it by subscription and `data.event_id`) and,
/// when recording, keeps it.
fn deliver(
    shared: &Shared,
    id: &str,
    body: &[u8],
    plaintext: Vec<u8>,
    ttl: u64,
    urgency: Option<String>,
) {
    let read: Value = serde_json::from_slice(&plaintext).unwrap_or(Value::Null);
    let event = read["data"]["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let message =
        json!({"webpush": {"subscription": id, "plaintext": read, "ttl": ttl, "urgency": urgency}});
    record_delivery(shared, id, &event, Some(&message));
    if shared.config.record {
        lock(&shared.webpush.received)
            .entry(id.to_string())
            .or_default()
            .push(WebPushMessage {
                body: body.to_vec(),
                plaintext,
                ttl,
                urgency,
            });
    }
}

/// The body as a browser reads it: one `aes128gcm` record (RFC 8291 §4) whose keyid is the
/// sender's P-256 key, decrypted with the subscription's private key and auth secret.
fn decrypt(subscribed: &Subscribed, body: &[u8]) -> Result<Vec<u8>, String> {
    if body.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes: shorter than an aes128gcm header",
            body.len()
        ));
    }
    let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
    if body[20] != 65 || body[21] != 0x04 {
        return Err("the keyid is not an uncompressed P-256 key".into());
    }
    if rs < 18 || body.len() - HEADER_LEN > rs {
        return Err(format!(
            "rs {rs}: a push is one record of at least 18 bytes"
        ));
    }
    web_push_native::decrypt(body.to_vec(), &subscribed.secret, &subscribed.auth)
        .map_err(|e| format!("does not decrypt: {e}"))
}

/// `POST /webpush/subscriptions` (`{"id": "…", "application_server_key": "…", "count": N}`, all
/// optional): a new subscription's JSON, as a browser would hand it to the site; with `count`, a
/// list of that many, ids `{id}{1…N}`, so that a benchmark mints its audience in one request.
pub(crate) async fn subscribe(
    State(shared): State<Arc<Shared>>,
    body: Option<Json<Value>>,
) -> Response {
    let request = body.map(|Json(v)| v).unwrap_or(Value::Null);
    let id = request["id"].as_str().unwrap_or_default();
    let key = match request["application_server_key"].as_str() {
        Some(k) => match URL_SAFE_NO_PAD.decode(k.trim_end_matches('=')) {
            Ok(key) => Some(key),
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    "application_server_key is not base64url",
                )
                    .into_response();
            }
        },
        None => None,
    };
    let origin = shared.webpush_origin();
    let mint = |id: &str| {
        let subscription = shared.webpush.subscribe(&origin, id, key.clone());
        serde_json::from_str::<Value>(&subscription.json()).unwrap_or(Value::Null)
    };
    let minted = match request["count"].as_u64() {
        Some(n) => Value::Array((1..=n).map(|i| mint(&format!("{id}{i}"))).collect()),
        None => mint(id),
    };
    (StatusCode::CREATED, Json(minted)).into_response()
}

//! What the stand-in has seen, for `GET /stats` and for tests: requests, deliveries (and
//! duplicates, by token and collapse key), errors by code, connections and sends in flight. Every
//! send passes through [`counted`], which also adds the configured latency.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::response::Response;
use serde_json::{Value, json};

use crate::Shared;

/// What the stand-in has seen.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub delivered: AtomicU64,
    pub validated: AtomicU64,
    /// Deliveries of a message (token + collapse key) already delivered once.
    pub duplicates: AtomicU64,
    pub token_requests: AtomicU64,
    /// When the first and the last message were delivered, in ms since the epoch (0: none yet).
    pub first_delivered_ms: AtomicU64,
    pub last_delivered_ms: AtomicU64,
    pub tls_connections: AtomicU64,
    pub plain_connections: AtomicU64,
    /// Sends being answered now (FCM and APNs), and the most there ever were at once.
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub errors: Mutex<HashMap<String, u64>>,
    /// APNs side: requests that arrived while the connection already had as many streams open
    /// as it had advertised (a client ignoring SETTINGS_MAX_CONCURRENT_STREAMS).
    pub stream_limit_exceeded: AtomicU64,
    /// GOAWAYs sent mid-burst, and the streams that arrived after one and were dropped unseen.
    pub goaways: AtomicU64,
    pub refused_after_goaway: AtomicU64,
    /// Times a connection's provider token was replaced by a new one.
    pub token_updates: AtomicU64,
    /// Web Push: bodies decrypted, bodies that did not decrypt (a sender's bug: tests assert
    /// none), and requests whose VAPID token was refused.
    pub webpush_decrypted: AtomicU64,
    pub webpush_decrypt_failures: AtomicU64,
    pub webpush_vapid_rejected: AtomicU64,
    /// Delivery count per message, by hash of token and collapse key.
    pub(crate) seen: Mutex<HashMap<u64, u32>>,
    /// Tokens that already had their one injected failure.
    pub(crate) failed_once: Mutex<HashSet<String>>,
    pub(crate) issued: Mutex<HashSet<String>>,
    /// Deliveries per token, when counting tokens (`count_tokens`).
    pub(crate) tokens: Mutex<HashMap<String, u32>>,
    /// Delivered messages, when recording.
    pub messages: Mutex<Vec<Value>>,
    /// APNs deliveries as (device token, `apns-topic`), when recording: which app each reached.
    pub apns_topics: Mutex<Vec<(String, String)>>,
}

impl Counters {
    pub fn snapshot(&self) -> Value {
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let unique = self.seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "delivered": self.delivered.load(Ordering::Relaxed),
            "validated": self.validated.load(Ordering::Relaxed),
            "unique_delivered": unique,
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "errors": errors,
            "token_requests": self.token_requests.load(Ordering::Relaxed),
            "first_delivered_ms": self.first_delivered_ms.load(Ordering::Relaxed),
            "last_delivered_ms": self.last_delivered_ms.load(Ordering::Relaxed),
            "connections": {
                "tls": self.tls_connections.load(Ordering::Relaxed),
                "plain": self.plain_connections.load(Ordering::Relaxed),
            },
            "max_in_flight": self.max_in_flight.load(Ordering::Relaxed),
            "apns": {
                "stream_limit_exceeded": self.stream_limit_exceeded.load(Ordering::Relaxed),
                "goaways": self.goaways.load(Ordering::Relaxed),
                "refused_after_goaway": self.refused_after_goaway.load(Ordering::Relaxed),
                "token_updates": self.token_updates.load(Ordering::Relaxed),
            },
            "webpush": {
                "decrypted": self.webpush_decrypted.load(Ordering::Relaxed),
                "decrypt_failures": self.webpush_decrypt_failures.load(Ordering::Relaxed),
                "vapid_rejected": self.webpush_vapid_rejected.load(Ordering::Relaxed),
            },
        })
    }

    /// How many times a message with this token and collapse key was delivered.
    pub fn deliveries(&self, token: &str, collapse_key: &str) -> u32 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&message_key(token, collapse_key))
            .copied()
            .unwrap_or(0)
    }

    /// How often each token was reached since the last reset (when counting tokens).
    pub fn token_counts(&self) -> HashMap<String, u32> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn count_token(&self, token: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        *tokens.entry(token.to_string()).or_default() += 1;
    }

    pub(crate) fn error(&self, code: &str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code.to_string())
            .or_default() += 1;
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.requests,
            &self.delivered,
            &self.validated,
            &self.duplicates,
            &self.token_requests,
            &self.first_delivered_ms,
            &self.last_delivered_ms,
            &self.tls_connections,
            &self.plain_connections,
            &self.max_in_flight,
            &self.stream_limit_exceeded,
            &self.goaways,
            &self.refused_after_goaway,
            &self.token_updates,
            &self.webpush_decrypted,
            &self.webpush_decrypt_failures,
            &self.webpush_vapid_rejected,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.failed_once
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.apns_topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

fn message_key(token: &str, collapse_key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    collapse_key.hash(&mut h);
    h.finish()
}

/// Counts a request, waits the latency (as configured or last set), answers, and tallies an error by its code.
pub(crate) async fn counted(shared: &Shared, answer: impl FnOnce() -> Response) -> Response {
    let c = &shared.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    c.max_in_flight.fetch_max(now, Ordering::Relaxed);
    let latency = shared.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    c.in_flight.fetch_sub(1, Ordering::Relaxed);
    let response = answer();
    if !response.status().is_success() {
        let code = response.extensions().get::<ErrorCode>().map_or_else(
            || response.status().as_str().to_string(),
            |e| e.0.to_string(),
        );
        c.error(&code);
    }
    response
}

#[derive(Clone)]
pub(crate) struct ErrorCode(&'static str);

pub(crate) fn tagged(mut response: Response, code: &'static str) -> Response {
    response.extensions_mut().insert(ErrorCode(code));
    response
}

/// Counts a delivered message (and keeps it, when recording).
pub(crate) fn record_delivery(
    shared: &Shared,
    token: &str,
    collapse: &str,
    message: Option<&Value>,
) {
    let c = &shared.counters;
    count_delivery(c);
    let mut seen = c.seen.lock().unwrap_or_else(|e| e.into_inner());
    let count = seen.entry(message_key(token, collapse)).or_default();
    *count += 1;
    if *count > 1 {
        c.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    drop(seen);
    if shared.config.count_tokens {
        c.count_token(token);
    }
    if let (true, Some(message)) = (shared.config.record, message) {
        c.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.clone());
    }
}

/// Counts a delivery and its time, without recording whose it was (all `RequestWork::Light`
/// does).
pub(crate) fn count_delivery(c: &Counters) {
    c.delivered.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let _ = c
        .first_delivered_ms
        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    c.last_delivered_ms.fetch_max(now, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_say_how_often_each_token_was_reached_until_a_reset() {
        let counters = Counters::default();
        for token in ["a", "b", "a", "a"] {
            counters.count_token(token);
        }
        let counts = counters.token_counts();
        assert_eq!((counts["a"], counts["b"], counts.len()), (3, 1, 2));
        counters.reset();
        assert!(counters.token_counts().is_empty());
    }
}

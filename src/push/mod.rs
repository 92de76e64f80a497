//! Sending one push: the [`Pusher`] trait that every provider implements, what a push carries,
//! and (in [`outcome`]) the outcome of one attempt, shaped by what the fan-out does next: count
//! it, prune the token, retry, report, or pause the provider. [`Pushers`] holds one pusher per
//! provider and picks those a send mode uses.
//!
//! Providers never touch the database and never sleep: an unregistered token is an outcome the
//! fan-out batches into a prune, and a retryable failure is an outcome that [`retry`] schedules.

pub(crate) mod apns;
pub(crate) mod dry_run;
pub(crate) mod engine;
pub(crate) mod fcm;
/// The HTTP/2 client under every pusher (crates/h2-shards).
pub(crate) use h2_shards as http2;
pub(crate) mod jwt;
pub(crate) mod metrics;
pub(crate) mod webpush;

mod limit;
mod outcome;
mod prebuilt;
mod pushers;
pub(crate) mod retry;
mod share;

pub(crate) use engine::{Admission, Delivery, Gate, Open, Permits, PushLimits, skipped};
pub(crate) use limit::PushLimit;
pub use outcome::PushOutcome;
pub(crate) use outcome::{OutcomeKind, PauseScope, Reason};
pub use prebuilt::{ApnsPrebuilt, ApnsPushType, FcmPrebuilt, Prebuilt};
pub(crate) use pushers::ProviderPushers;
pub use pushers::Pushers;
pub(crate) use pushers::SendMode;
pub(crate) use share::{Asking, Share, Shares};

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::audience::Device;
use crate::content::Notification;

/// One push: a device and what it gets.
#[derive(Debug, Clone)]
pub struct Push {
    pub event_id: Arc<str>,
    pub device: Device,
    pub content: PushContent,
}

/// What a push carries: a notification each pusher writes its request from, or a request body
/// built already (the HTTP API's), which the pusher of its provider sends as it is.
#[derive(Debug, Clone)]
pub enum PushContent {
    /// Rendered from a talk, for the device's locale.
    Talk(Arc<Notification>),
    Prebuilt(Arc<Prebuilt>),
}

impl From<Arc<Notification>> for PushContent {
    fn from(notification: Arc<Notification>) -> Self {
        PushContent::Talk(notification)
    }
}

impl PushContent {
    /// The rendered notification, when there is one.
    pub fn talk(&self) -> Option<&Arc<Notification>> {
        match self {
            PushContent::Talk(n) => Some(n),
            PushContent::Prebuilt(_) => None,
        }
    }
}

/// A way to deliver pushes: one attempt per call. Implementations are shared across tasks.
#[async_trait::async_trait]
pub trait Pusher: Send + Sync + 'static {
    async fn push(&self, push: &Push) -> PushOutcome;

    /// Gets the connection up before a burst of pushes, so the burst shares it instead of each
    /// push opening its own. Called once per event and provider; failures are ignored.
    async fn warm(&self) {}

    /// Whether a push logs a line of its own (the dry run's `Dry run: would push.`). Only then
    /// does its task enter the unit's span: entering it on every poll of every push costs a
    /// few per cent of a fan-out's CPU, for lines the other pushers never write.
    fn logs_each_push(&self) -> bool {
        false
    }
}

/// What a provider builds once per notification and reuses for every device that gets it (the
/// body around the token), found again by the notification's identity: an event has one
/// notification per locale, shared by all its pushes, so the cache holds a handful of entries.
pub(crate) struct PerNotification<T> {
    entries: Mutex<Vec<Entry<T>>>,
}

/// The `Weak` keeps the notification's allocation, so its address cannot be reused by another
/// while the entry lives; `variant` tells apart what one notification needs built several ways.
struct Entry<T> {
    notification: Weak<Notification>,
    variant: u8,
    built: Arc<T>,
}

/// Entries beyond this many (dead notifications first) are dropped.
const PER_NOTIFICATION_ENTRIES: usize = 64;

impl<T> Default for PerNotification<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
        }
    }
}

impl<T> PerNotification<T> {
    pub(crate) fn get_or_build(
        &self,
        notification: &Arc<Notification>,
        variant: u8,
        build: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let same = |e: &Entry<T>| {
            e.variant == variant && std::ptr::eq(e.notification.as_ptr(), Arc::as_ptr(notification))
        };
        if let Some(entry) = entries.iter().find(|e| same(e)) {
            return entry.built.clone();
        }
        entries.retain(|e| e.notification.strong_count() > 0);
        if entries.len() >= PER_NOTIFICATION_ENTRIES {
            entries.remove(0);
        }
        let built = Arc::new(build());
        entries.push(Entry {
            notification: Arc::downgrade(notification),
            variant,
            built: built.clone(),
        });
        built
    }
}

/// A device token as it may appear in logs: the first 8 characters, then `…`.
pub(crate) struct MaskedToken<'a>(pub &'a str);

impl fmt::Display for MaskedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: String = self.0.chars().take(8).collect();
        write!(f, "{head}…")
    }
}

/// Reads a `Retry-After` header given in seconds (providers do not send HTTP dates).
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A section of the shipped configuration file, as the defaults hold it (for tests that need a
/// provider's settings without loading everything the process would).
#[cfg(test)]
pub(crate) fn shipped<T: serde::de::DeserializeOwned>(section: &str) -> T {
    let file: toml::Table = include_str!("../../config/notifier.toml").parse().unwrap();
    file[section].clone().try_into().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked_after_eight_characters() {
        assert_eq!(MaskedToken("abcdefghijklmnop").to_string(), "abcdefgh…");
        assert_eq!(MaskedToken("abc").to_string(), "abc…");
        assert_eq!(
            MaskedToken("トークントークン長い").to_string(),
            "トークントークン…"
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "30".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}

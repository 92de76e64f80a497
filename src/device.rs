//! What a push is addressed to: a [`Device`] row of the audience, the [`Provider`] that reaches
//! it, its [`Platform`] and app ([`AppId`]), and [`PerProvider`], the one container for "one of each per provider"
//! (pushers, permits, metric handles, checkpoint lanes).
//!
//! A new provider is a new [`Provider`] variant and a new [`PerProvider`] field here; the
//! compiler then names every place that has to learn about it. Text from the database is parsed
//! into these types once, at the audience row boundary, and the database keeps its text.

use std::ops::{Index, IndexMut};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::apps::AppId;

/// The push provider that reaches a device (`devices.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    Fcm,
    Apns,
    /// A browser's push service (RFC 8030); the device's token is its subscription JSON.
    WebPush,
}

impl Provider {
    /// Every provider, in the order lanes, metrics and reports list them.
    pub const ALL: [Provider; 3] = [Provider::Fcm, Provider::Apns, Provider::WebPush];

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "fcm" => Some(Provider::Fcm),
            "apns" => Some(Provider::Apns),
            "webpush" => Some(Provider::WebPush),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Fcm => "fcm",
            Provider::Apns => "apns",
            Provider::WebPush => "webpush",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The device's platform (`devices.platform`), as far as delivery cares: FCM gives Apple devices
/// an APNs block, and a rejected APNs key in Firebase stops every device but Android ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Android,
    Ios,
    /// A browser: FCM's web devices and every Web Push subscription.
    Web,
    /// Any other text the application stores: delivered like web.
    Other,
}

impl Platform {
    /// Exactly `android`, `ios` and `web` are recognised, as before the type existed (no
    /// trimming or case folding, so no device changes how it is reached).
    pub fn parse(s: &str) -> Self {
        match s {
            "android" => Platform::Android,
            "ios" => Platform::Ios,
            "web" => Platform::Web,
            _ => Platform::Other,
        }
    }
}

/// A recipient device, as the audience query returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: i64,
    pub user_id: Option<i64>,
    /// `None` when the row names a provider the notifier does not know; such a device is skipped.
    pub provider: Option<Provider>,
    /// `None` when the row has no platform.
    pub platform: Option<Platform>,
    /// The app the device belongs to, resolved from the row's `app` once; `None` when the row
    /// names an app this process does not serve (such a device is skipped).
    pub app: Option<AppId>,
    pub token: String,
    pub locale: Option<String>,
    /// When the token was last registered, if the query says.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Device {
    /// A device with no row behind it (a token given directly: `POST /push`, a test push), of
    /// `app` (`None`: one this process does not serve), numbered `id` (its place among the
    /// tokens: it orders a lane and its checkpoint).
    pub(crate) fn addressed(
        id: i64,
        app: Option<AppId>,
        provider: Provider,
        platform: Platform,
        token: &str,
    ) -> Self {
        Self {
            id,
            user_id: None,
            provider: Some(provider),
            platform: Some(platform),
            app,
            token: token.to_string(),
            locale: None,
            updated_at: None,
        }
    }
}

/// One value per provider. Serialised as `{"fcm": …, "apns": …, "webpush": …}`, the shape
/// checkpoints stored in Redis have; a field a provider added later defaults when absent, so a
/// checkpoint written before it existed still reads (that lane starts from the beginning).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerProvider<T> {
    pub fcm: T,
    pub apns: T,
    #[serde(default)]
    pub webpush: T,
}

impl<T> PerProvider<T> {
    /// Builds each provider's value.
    pub fn from_fn(mut value: impl FnMut(Provider) -> T) -> Self {
        Self {
            fcm: value(Provider::Fcm),
            apns: value(Provider::Apns),
            webpush: value(Provider::WebPush),
        }
    }

    pub fn map<U>(self, mut f: impl FnMut(Provider, T) -> U) -> PerProvider<U> {
        PerProvider {
            fcm: f(Provider::Fcm, self.fcm),
            apns: f(Provider::Apns, self.apns),
            webpush: f(Provider::WebPush, self.webpush),
        }
    }

    /// Each provider with its value, in [`Provider::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Provider, &T)> {
        Provider::ALL.into_iter().map(move |p| (p, &self[p]))
    }
}

impl<T> Index<Provider> for PerProvider<T> {
    type Output = T;

    fn index(&self, provider: Provider) -> &T {
        match provider {
            Provider::Fcm => &self.fcm,
            Provider::Apns => &self.apns,
            Provider::WebPush => &self.webpush,
        }
    }
}

impl<T> IndexMut<Provider> for PerProvider<T> {
    fn index_mut(&mut self, provider: Provider) -> &mut T {
        match provider {
            Provider::Fcm => &mut self.fcm,
            Provider::Apns => &mut self.apns,
            Provider::WebPush => &mut self.webpush,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_and_platforms_parse_as_the_database_writes_them() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        assert_eq!(Provider::parse(" apns "), Some(Provider::Apns));
        assert_eq!(Provider::parse("webpush"), Some(Provider::WebPush));
        assert_eq!(Provider::parse("hms"), None);
        assert_eq!(Platform::parse("android"), Platform::Android);
        assert_eq!(Platform::parse("ios"), Platform::Ios);
        assert_eq!(Platform::parse("web"), Platform::Web);
        assert_eq!(Platform::parse("tv"), Platform::Other);
        assert_eq!(Platform::parse("iOS"), Platform::Other);
    }

    #[test]
    fn per_provider_indexes_by_provider() {
        let mut counts = PerProvider::from_fn(|p| p.as_str().len());
        counts[Provider::Apns] += 1;
        assert_eq!(
            counts,
            PerProvider {
                fcm: 3,
                apns: 5,
                webpush: 7
            }
        );
        let listed: Vec<_> = counts.iter().map(|(p, n)| (p, *n)).collect();
        assert_eq!(
            listed,
            [
                (Provider::Fcm, 3),
                (Provider::Apns, 5),
                (Provider::WebPush, 7)
            ]
        );
        let doubled = counts.map(|_, n| n * 2);
        assert_eq!((doubled.fcm, doubled.apns, doubled.webpush), (6, 10, 14));
    }

    /// `ALL` is written out by hand. The provider after each, by a `match` without a wildcard:
    /// a new variant does not compile until it has a place in this chain, and the chain walked
    /// from the first must be `ALL`, in its order.
    #[test]
    fn all_lists_every_provider_once_in_order() {
        fn after(p: Provider) -> Option<Provider> {
            match p {
                Provider::Fcm => Some(Provider::Apns),
                Provider::Apns => Some(Provider::WebPush),
                Provider::WebPush => None,
            }
        }
        let walked: Vec<Provider> =
            std::iter::successors(Some(Provider::Fcm), |p| after(*p)).collect();
        assert_eq!(walked, Provider::ALL);
    }

    #[test]
    fn a_per_provider_value_written_before_a_provider_existed_still_reads() {
        let old: PerProvider<u32> = serde_json::from_str(r#"{"fcm": 1, "apns": 2}"#).unwrap();
        assert_eq!((old.fcm, old.apns, old.webpush), (1, 2, 0));
        let now = serde_json::to_string(&old).unwrap();
        assert_eq!(now, r#"{"fcm":1,"apns":2,"webpush":0}"#);
    }
}

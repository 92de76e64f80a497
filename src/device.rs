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
}

impl Provider {
    /// Every provider, in the order lanes, metrics and reports list them.
    pub const ALL: [Provider; 2] = [Provider::Fcm, Provider::Apns];

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "fcm" => Some(Provider::Fcm),
            "apns" => Some(Provider::Apns),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Fcm => "fcm",
            Provider::Apns => "apns",
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
    /// Web, or any other text the application stores: delivered like web.
    Other,
}

impl Platform {
    /// Exactly `android` and `ios` are recognised, as before the type existed (no trimming or
    /// case folding, so no device changes how it is reached).
    pub fn parse(s: &str) -> Self {
        match s {
            "android" => Platform::Android,
            "ios" => Platform::Ios,
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

/// One value per provider. Serialised as `{"fcm": …, "apns": …}`, the shape checkpoints stored
/// in Redis already have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerProvider<T> {
    pub fcm: T,
    pub apns: T,
}

impl<T> PerProvider<T> {
    /// Builds each provider's value.
    pub fn from_fn(mut value: impl FnMut(Provider) -> T) -> Self {
        Self {
            fcm: value(Provider::Fcm),
            apns: value(Provider::Apns),
        }
    }

    pub fn map<U>(self, mut f: impl FnMut(Provider, T) -> U) -> PerProvider<U> {
        PerProvider {
            fcm: f(Provider::Fcm, self.fcm),
            apns: f(Provider::Apns, self.apns),
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
        }
    }
}

impl<T> IndexMut<Provider> for PerProvider<T> {
    fn index_mut(&mut self, provider: Provider) -> &mut T {
        match provider {
            Provider::Fcm => &mut self.fcm,
            Provider::Apns => &mut self.apns,
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
        assert_eq!(Provider::parse("hms"), None);
        assert_eq!(Platform::parse("android"), Platform::Android);
        assert_eq!(Platform::parse("ios"), Platform::Ios);
        assert_eq!(Platform::parse("web"), Platform::Other);
        assert_eq!(Platform::parse("iOS"), Platform::Other);
    }

    #[test]
    fn per_provider_indexes_by_provider() {
        let mut counts = PerProvider::from_fn(|p| p.as_str().len());
        counts[Provider::Apns] += 1;
        assert_eq!(counts, PerProvider { fcm: 3, apns: 5 });
        let listed: Vec<_> = counts.iter().map(|(p, n)| (p, *n)).collect();
        assert_eq!(listed, [(Provider::Fcm, 3), (Provider::Apns, 5)]);
        assert_eq!(counts.map(|_, n| n * 2), PerProvider { fcm: 6, apns: 10 });
    }
}

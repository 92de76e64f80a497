//! The apps one deployment serves (contract §10): an [`AppName`] as the settings and the
//! audience's `app` column spell it, the [`AppId`] it is resolved to once, at the row boundary,
//! and [`Apps`], one of something per app (pushers, permits, pacers, counts), indexed by it.
//!
//! The default app (the top-level `[fcm]` and `[apns]`) is always [`AppId::DEFAULT`], named
//! `default` in metrics and logs; the `[apps.NAME]` sections follow in name order. The ids are an
//! index into the process's list and are never stored: checkpoints and Redis keys use names.
//! A new per-app value is a field of whatever `Apps<T>` holds, not a new map.

use std::fmt;
use std::ops::{Index, IndexMut};
use std::sync::Arc;

/// What the default app is called where a name is needed (the `app` label, the summary).
pub const DEFAULT_APP: &str = "default";

/// The longest app name: it becomes a metric label and part of Redis keys.
const MAX_NAME_LEN: usize = 64;

/// An app's name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters, not `default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(Arc<str>);

/// Why a name cannot be an app's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppNameError {
    #[error("an app name must not be empty")]
    Empty,
    #[error("an app name is at most {MAX_NAME_LEN} characters")]
    TooLong,
    #[error(
        "an app name is lower-case letters, digits, `-` and `_`, starting with a letter or digit"
    )]
    Characters,
    #[error("`default` is the name of the top-level [fcm] and [apns] app")]
    Reserved,
}

impl AppName {
    pub fn parse(name: &str) -> Result<Self, AppNameError> {
        let mut chars = name.chars();
        let first = chars.next().ok_or(AppNameError::Empty)?;
        if name.len() > MAX_NAME_LEN {
            return Err(AppNameError::TooLong);
        }
        let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !plain(first) || !chars.all(|c| plain(c) || c == '-' || c == '_') {
            return Err(AppNameError::Characters);
        }
        if name == DEFAULT_APP {
            return Err(AppNameError::Reserved);
        }
        Ok(Self(name.into()))
    }

    fn default_app() -> Self {
        Self(DEFAULT_APP.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An app of this process, as an index into its [`AppNames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(u16);

impl AppId {
    /// The top-level `[fcm]` and `[apns]`: where a device with no `app` goes.
    pub const DEFAULT: AppId = AppId(0);

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The apps of this process: the default first, then the configured ones in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppNames(Arc<[AppName]>);

impl Default for AppNames {
    fn default() -> Self {
        Self::new(std::iter::empty())
    }
}

impl AppNames {
    /// The default app and `named` (sorted, without repeats).
    pub fn new(named: impl IntoIterator<Item = AppName>) -> Self {
        let mut named: Vec<AppName> = named.into_iter().collect();
        named.sort();
        named.dedup();
        let all: Vec<AppName> = std::iter::once(AppName::default_app())
            .chain(named)
            .take(usize::from(u16::MAX))
            .collect();
        Self(all.into())
    }

    /// The app a device row names: NULL (or no `app` column), empty text and `default` are the
    /// default app; a name no app has resolves to `None`.
    pub fn resolve(&self, name: Option<&str>) -> Option<AppId> {
        let name = match name {
            None | Some("" | DEFAULT_APP) => return Some(AppId::DEFAULT),
            Some(name) => name,
        };
        self.0
            .iter()
            .skip(1)
            .position(|n| n.as_str() == name)
            .map(|i| AppId(i as u16 + 1))
    }

    pub fn name(&self, app: AppId) -> &str {
        self.0.get(app.index()).map_or(DEFAULT_APP, AppName::as_str)
    }

    /// How many apps, the default included (never 0).
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// More than the default app is configured.
    pub fn several(&self) -> bool {
        self.0.len() > 1
    }

    /// Every app, the default first.
    pub fn ids(&self) -> impl Iterator<Item = AppId> + use<> {
        (0..self.0.len() as u16).map(AppId)
    }
}

/// One value per app, in [`AppNames`] order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Apps<T>(Vec<T>);

impl<T> Apps<T> {
    /// Builds each app's value.
    pub fn from_fn(names: &AppNames, value: impl FnMut(AppId) -> T) -> Self {
        Self(names.ids().map(value).collect())
    }

    pub fn get(&self, app: AppId) -> Option<&T> {
        self.0.get(app.index())
    }

    /// Each app with its value, the default first.
    pub fn iter(&self) -> impl Iterator<Item = (AppId, &T)> {
        self.0.iter().enumerate().map(|(i, v)| (AppId(i as u16), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn map<U>(&self, mut f: impl FnMut(AppId, &T) -> U) -> Apps<U> {
        Apps(self.iter().map(|(id, v)| f(id, v)).collect())
    }
}

impl<T> Index<AppId> for Apps<T> {
    type Output = T;

    fn index(&self, app: AppId) -> &T {
        &self.0[app.index()]
    }
}

impl<T> IndexMut<AppId> for Apps<T> {
    fn index_mut(&mut self, app: AppId) -> &mut T {
        &mut self.0[app.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_checked_once() {
        assert_eq!(AppName::parse("lite").unwrap().as_str(), "lite");
        assert!(AppName::parse("ipad-2_x").is_ok());
        assert_eq!(AppName::parse(""), Err(AppNameError::Empty));
        assert_eq!(AppName::parse("Lite"), Err(AppNameError::Characters));
        assert_eq!(AppName::parse("-x"), Err(AppNameError::Characters));
        assert_eq!(AppName::parse("a b"), Err(AppNameError::Characters));
        assert_eq!(AppName::parse("default"), Err(AppNameError::Reserved));
        assert_eq!(AppName::parse(&"a".repeat(65)), Err(AppNameError::TooLong));
    }

    #[test]
    fn the_default_app_comes_first_and_null_resolves_to_it() {
        let names = AppNames::new(["lite", "beta"].map(|n| AppName::parse(n).unwrap()));
        assert_eq!(names.count(), 3);
        assert_eq!(names.resolve(None), Some(AppId::DEFAULT));
        let beta = names.resolve(Some("beta")).unwrap();
        let lite = names.resolve(Some("lite")).unwrap();
        assert_eq!((names.name(beta), names.name(lite)), ("beta", "lite"));
        assert_eq!(names.name(AppId::DEFAULT), "default");
        assert_eq!(names.resolve(Some("default")), Some(AppId::DEFAULT));
        assert_eq!(names.resolve(Some("")), Some(AppId::DEFAULT));
        assert_eq!(names.resolve(Some("gone")), None);
        let mut counts = Apps::from_fn(&names, |_| 0);
        counts[lite] += 2;
        let listed: Vec<_> = counts.iter().map(|(id, n)| (names.name(id), *n)).collect();
        assert_eq!(listed, [("default", 0), ("beta", 0), ("lite", 2)]);
    }
}

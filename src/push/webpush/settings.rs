//! The `[webpush]` settings: the VAPID key and subject, which push services may be contacted, and
//! what each push asks of them (TTL, urgency) and the limits. Deserialised as the other provider
//! sections are (`deny_unknown_fields`), with the allowed hosts and the urgency parsed into types
//! on the way in, so a wrong entry stops the start rather than a push.
//!
//! What may change here: the defaults ([`WebPushSettings::default`], which the shipped TOML
//! repeats) and the list of public push services.

use std::fmt;

use serde::Deserialize;

/// The public push services of Chrome (and every Chromium browser), Firefox, Edge and Safari.
const PUBLIC_PUSH_SERVICES: &[&str] = &[
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.notify.windows.com",
    "web.push.apple.com",
];

/// The `[webpush]` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushSettings {
    /// Path of the VAPID private key (P-256, PEM: PKCS#8 or SEC1); empty when Web Push is not
    /// configured. Env: `WEBPUSH_VAPID_PRIVATE_KEY_PATH`.
    pub vapid_private_key_path: String,
    /// Who the push services contact about our pushes: `mailto:…` or `https:…`.
    /// Env: `WEBPUSH_VAPID_SUBJECT`.
    pub vapid_subject: String,
    /// The only hosts an endpoint may name: exact names and `*.suffix` wildcards.
    pub allowed_hosts: AllowedHosts,
    /// How long the push service keeps a push for an offline browser (the `TTL` header).
    pub ttl_secs: u64,
    pub urgency: Urgency,
    /// Pushes in flight at once, at most service.concurrency; 0 means three quarters of it.
    pub concurrency: usize,
    /// HTTP/2 connections to each push service; 0 means one per 100 pushes in flight, at most 16.
    pub connections: usize,
    pub request_timeout_secs: u64,
}

impl Default for WebPushSettings {
    fn default() -> Self {
        Self {
            vapid_private_key_path: String::new(),
            vapid_subject: String::new(),
            allowed_hosts: AllowedHosts::public_push_services(),
            ttl_secs: 86_400,
            urgency: Urgency::Normal,
            concurrency: 0,
            connections: 0,
            request_timeout_secs: 10,
        }
    }
}

/// A setting that cannot be used: its key in the section (`config` names it as the operator
/// sets it: a variable for the default app, `apps.NAME.webpush.KEY` for another), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting webpush.{key}: {reason}")]
pub struct WebPushSettingsError {
    pub(crate) key: &'static str,
    pub(crate) reason: String,
}

/// RFC 8030 §5.2: push services keep a push at most as long as they like; 28 days is FCM's cap.
const MAX_TTL_SECS: u64 = 28 * 24 * 60 * 60;

impl WebPushSettings {
    pub fn is_configured(&self) -> bool {
        !self.vapid_private_key_path.trim().is_empty()
    }

    /// The checks that need no file: the subject's form and the limits. The key itself is read
    /// by [`super::Vapid::load`].
    pub(crate) fn validate(&self) -> Result<(), WebPushSettingsError> {
        let error = |key, reason: &str| {
            Err(WebPushSettingsError {
                key,
                reason: reason.to_string(),
            })
        };
        if !self.is_configured() {
            return Ok(());
        }
        let subject = self.vapid_subject.trim();
        let contact = subject
            .strip_prefix("mailto:")
            .or_else(|| subject.strip_prefix("https://"));
        if contact.is_none_or(|c| c.is_empty() || c.contains(char::is_whitespace)) {
            return error(
                "vapid_subject",
                "a mailto: or https: URL the push services can contact is required (RFC 8292)",
            );
        }
        if self.ttl_secs > MAX_TTL_SECS {
            return error("ttl_secs", "at most 2419200 (28 days)");
        }
        if self.request_timeout_secs == 0 {
            return error("request_timeout_secs", "must be at least 1");
        }
        if self.connections > 64 {
            return error("connections", "must be from 0 (auto) to 64");
        }
        Ok(())
    }
}

/// RFC 8030 §5.3: how soon the browser should be woken for the push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    /// The `Urgency` header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// One entry of `allowed_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.notify.windows.com` as `.notify.windows.com`: any name under it, not the name itself.
    Under(String),
}

/// The hosts endpoints may name; any other endpoint is never contacted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct AllowedHosts(Vec<HostPattern>);

impl AllowedHosts {
    pub(crate) fn public_push_services() -> Self {
        Self::parse(PUBLIC_PUSH_SERVICES.iter().copied()).unwrap_or_else(|_| Self(Vec::new()))
    }

    /// Exact host names and `*.suffix` wildcards, compared without regard to case.
    pub(crate) fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for entry in entries {
            let host = entry.trim().to_ascii_lowercase();
            let (wildcard, name) = match host.strip_prefix("*.") {
                Some(name) => (true, name.to_string()),
                None => (false, host.clone()),
            };
            let valid = !name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            // An IP address is a name of digits and dots; it may be listed exactly.
            if !valid || (wildcard && !name.contains('.')) {
                return Err(format!(
                    "{entry:?} is not a host name or a *.domain wildcard (no scheme, port or path)"
                ));
            }
            patterns.push(match wildcard {
                true => HostPattern::Under(format!(".{name}")),
                false => HostPattern::Exact(name),
            });
        }
        Ok(Self(patterns))
    }

    /// Whether `host` (as the endpoint names it) is on the list.
    pub(crate) fn permits(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.0.iter().any(|pattern| match pattern {
            HostPattern::Exact(name) => *name == host,
            HostPattern::Under(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        })
    }
}

impl TryFrom<Vec<String>> for AllowedHosts {
    type Error = String;

    fn try_from(entries: Vec<String>) -> Result<Self, String> {
        Self::parse(entries.iter().map(String::as_str))
    }
}

impl fmt::Display for AllowedHosts {
    /// As the TOML lists them, for `notifier check`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pattern) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match pattern {
                HostPattern::Exact(name) => f.write_str(name)?,
                HostPattern::Under(suffix) => write!(f, "*{suffix}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_admits_the_public_push_services_and_nothing_near_them() {
        let allowed = AllowedHosts::public_push_services();
        for host in [
            "fcm.googleapis.com",
            "FCM.googleapis.com",
            "updates.push.services.mozilla.com",
            "wns2-par02p.notify.windows.com",
            "web.push.apple.com",
        ] {
            assert!(allowed.permits(host), "{host}");
        }
        for host in [
            "notify.windows.com",
            "evilnotify.windows.com",
            "fcm.googleapis.com.evil.example",
            "googleapis.com",
            "localhost",
            "127.0.0.1",
            "",
        ] {
            assert!(!allowed.permits(host), "{host}");
        }
        assert_eq!(
            allowed.to_string(),
            "fcm.googleapis.com, updates.push.services.mozilla.com, *.notify.windows.com, \
             web.push.apple.com"
        );
    }

    #[test]
    fn entries_that_are_not_host_names_are_refused() {
        for bad in [
            "https://fcm.googleapis.com",
            "fcm.googleapis.com:443",
            "fcm.googleapis.com/path",
            "*",
            "*.com",
            "a.*.com",
            "",
            "bad host",
        ] {
            assert!(AllowedHosts::parse([bad]).is_err(), "{bad:?}");
        }
        let ok = AllowedHosts::parse(["localhost", "127.0.0.1", "*.Example.COM"]).unwrap();
        assert!(ok.permits("localhost") && ok.permits("127.0.0.1") && ok.permits("a.example.com"));
    }

    #[test]
    fn the_section_reads_from_toml_with_typed_hosts_and_urgency() {
        let text = r#"
            vapid_private_key_path = "/etc/notifier/vapid.pem"
            vapid_subject = "mailto:ops@example.com"
            allowed_hosts = ["fcm.googleapis.com", "*.notify.windows.com"]
            ttl_secs = 3600
            urgency = "very-low"
            concurrency = 50
            connections = 2
            request_timeout_secs = 10
        "#;
        let s: WebPushSettings = toml::from_str(text).unwrap();
        assert_eq!(s.urgency, Urgency::VeryLow);
        assert_eq!((s.ttl_secs, s.concurrency, s.connections), (3600, 50, 2));
        assert!(s.allowed_hosts.permits("x.notify.windows.com"));
        assert_eq!(s.validate(), Ok(()));
        let bad = text.replace(r#""*.notify.windows.com""#, r#""https://x""#);
        assert!(toml::from_str::<WebPushSettings>(&bad).is_err());
        let bad = text.replace("very-low", "urgent");
        assert!(toml::from_str::<WebPushSettings>(&bad).is_err());
    }

    #[test]
    fn the_shipped_section_holds_the_defaults() {
        let shipped: WebPushSettings = crate::push::shipped("webpush");
        assert_eq!(shipped, WebPushSettings::default());
    }

    #[test]
    fn a_configured_key_needs_a_mailto_or_https_subject() {
        let mut s = WebPushSettings::default();
        assert_eq!(s.validate(), Ok(()), "not configured: nothing to check");
        s.vapid_private_key_path = "/k.pem".into();
        for bad in [
            "",
            "ops@example.com",
            "mailto:",
            "http://example.com",
            "mailto:a b",
        ] {
            s.vapid_subject = bad.into();
            let e = s.validate().unwrap_err();
            assert_eq!(e.key, "vapid_subject", "{bad:?}");
        }
        for good in ["mailto:ops@example.com", "https://example.com/contact"] {
            s.vapid_subject = good.into();
            assert_eq!(s.validate(), Ok(()), "{good}");
        }
        s.ttl_secs = MAX_TTL_SECS + 1;
        assert_eq!(s.validate().unwrap_err().key, "ttl_secs");
    }
}

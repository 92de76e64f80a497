//! The subscription a web device's `token` column holds, as the browser's
//! `PushManager.subscribe()` gave it: `{"endpoint": "https://…", "keys": {"p256dh": "…", "auth":
//! "…"}}`, keys in base64url. Parsed per push (the text is the device's; nothing is trusted), with
//! an error that says which part is wrong and never repeats the secret parts.
//!
//! The endpoint is only parsed here; whether it may be contacted is [`super::AllowedHosts`]'s
//! call, made before anything is dialled.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// An uncompressed P-256 point: `04 || x || y`.
pub(crate) const P256_POINT_LEN: usize = 65;
/// RFC 8291 §3.2: the authentication secret is 16 bytes.
pub(crate) const AUTH_LEN: usize = 16;

/// A parsed subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub(crate) endpoint: Endpoint,
    /// The browser's ECDH public key.
    pub(crate) p256dh: [u8; P256_POINT_LEN],
    pub(crate) auth: [u8; AUTH_LEN],
}

/// Where the push goes: the endpoint's URI and its origin (`https://host[:port]`), which names
/// the connections it takes and the VAPID token's audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) uri: http::Uri,
    pub(crate) origin: String,
}

impl Endpoint {
    pub(crate) fn is_https(&self) -> bool {
        self.uri.scheme_str() == Some("https")
    }

    pub(crate) fn host(&self) -> &str {
        self.uri.host().unwrap_or_default()
    }
}

/// What is wrong with a subscription. The texts name the part, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SubscriptionError {
    #[error("not a push subscription ({0})")]
    Json(String),
    #[error("endpoint is not an absolute http(s) URL with a host")]
    Endpoint,
    #[error("keys.p256dh is not base64url")]
    P256dhEncoding,
    #[error("keys.p256dh is {0} bytes, not an uncompressed P-256 point (65 bytes, 0x04 first)")]
    P256dhPoint(usize),
    #[error("keys.auth is not base64url")]
    AuthEncoding,
    #[error("keys.auth is {0} bytes, not 16")]
    AuthLength(usize),
}

impl SubscriptionError {
    /// A short code for the reason's label.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            SubscriptionError::Json(_) => "subscription",
            SubscriptionError::Endpoint => "endpoint",
            SubscriptionError::P256dhEncoding | SubscriptionError::P256dhPoint(_) => "p256dh",
            SubscriptionError::AuthEncoding | SubscriptionError::AuthLength(_) => "auth",
        }
    }
}

/// The JSON as browsers write it; other members (`expirationTime`) are ignored.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    endpoint: Cow<'a, str>,
    #[serde(borrow)]
    keys: RawKeys<'a>,
}

#[derive(Deserialize)]
struct RawKeys<'a> {
    #[serde(borrow)]
    p256dh: Cow<'a, str>,
    #[serde(borrow)]
    auth: Cow<'a, str>,
}

impl Subscription {
    pub(crate) fn parse(token: &str) -> Result<Self, SubscriptionError> {
        let raw: Raw<'_> = serde_json::from_str(token).map_err(|e| {
            // serde's message names the missing or mistyped member; its position is noise.
            let text = e.to_string();
            let what = text.split(" at line ").next().unwrap_or_default();
            SubscriptionError::Json(what.to_string())
        })?;
        let endpoint = Endpoint::parse(&raw.endpoint)?;
        let p256dh = decode(&raw.keys.p256dh).ok_or(SubscriptionError::P256dhEncoding)?;
        let p256dh: [u8; P256_POINT_LEN] = p256dh
            .as_slice()
            .try_into()
            .ok()
            .filter(|point: &[u8; P256_POINT_LEN]| point[0] == 0x04)
            .ok_or(SubscriptionError::P256dhPoint(p256dh.len()))?;
        let auth = decode(&raw.keys.auth).ok_or(SubscriptionError::AuthEncoding)?;
        let auth = auth
            .as_slice()
            .try_into()
            .map_err(|_| SubscriptionError::AuthLength(auth.len()))?;
        Ok(Self {
            endpoint,
            p256dh,
            auth,
        })
    }
}

impl Endpoint {
    fn parse(text: &str) -> Result<Self, SubscriptionError> {
        let uri: http::Uri = text
            .trim()
            .parse()
            .map_err(|_| SubscriptionError::Endpoint)?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(SubscriptionError::Endpoint);
        };
        // `user@host` would make the origin, and the connection, someone else's.
        if !matches!(scheme, "https" | "http")
            || authority.as_str().contains('@')
            || authority.host().is_empty()
        {
            return Err(SubscriptionError::Endpoint);
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let origin = match authority.port_u16() {
            Some(port) if port != default_port => format!("{scheme}://{}:{port}", authority.host()),
            _ => format!("{scheme}://{}", authority.host()),
        };
        Ok(Self {
            uri,
            origin: origin.to_ascii_lowercase(),
        })
    }
}

/// Base64url as browsers give it (no padding), also taken with padding or in the standard
/// alphabet, which some client libraries store.
fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    let text: Cow<'_, str> = if text.contains(['+', '/']) {
        text.replace('+', "-").replace('/', "_").into()
    } else {
        text.into()
    };
    URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subscription of RFC 8291's Appendix A, as a browser would store it.
    pub(crate) const RFC_SUBSCRIPTION: &str = r#"{"endpoint":"https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV","expirationTime":null,"keys":{"p256dh":"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4","auth":"BTBZMqHH6r4Tts7J_aSIgg"}}"#;

    #[test]
    fn a_browsers_subscription_parses_into_endpoint_origin_and_keys() {
        let s = Subscription::parse(RFC_SUBSCRIPTION).unwrap();
        assert_eq!(s.endpoint.origin, "https://push.example.net");
        assert_eq!(s.endpoint.host(), "push.example.net");
        assert!(s.endpoint.is_https());
        assert_eq!(
            s.endpoint.uri.path(),
            "/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV"
        );
        assert_eq!(s.p256dh[0], 0x04);
        assert_eq!(s.auth[..4], [0x05, 0x30, 0x59, 0x32]);
        // Padded and standard-alphabet keys are the same keys.
        let padded = RFC_SUBSCRIPTION
            .replace("BTBZMqHH6r4Tts7J_aSIgg", "BTBZMqHH6r4Tts7J/aSIgg==")
            .replace("zTZsEc6-VV", "zTZsEc6+VV");
        assert_eq!(Subscription::parse(&padded).unwrap(), s);
    }

    #[test]
    fn origins_keep_a_port_other_than_the_default_and_nothing_else() {
        let origin = |endpoint: &str| Endpoint::parse(endpoint).map(|e| e.origin);
        assert_eq!(
            origin("https://FCM.googleapis.com:443/fcm/send/abc?x=1"),
            Ok("https://fcm.googleapis.com".to_string())
        );
        assert_eq!(
            origin("https://localhost:8443/wp/1"),
            Ok("https://localhost:8443".to_string())
        );
        assert_eq!(
            origin("http://localhost/wp/1"),
            Ok("http://localhost".to_string())
        );
        for bad in [
            "/relative",
            "fcm.googleapis.com/send",
            "ftp://host/x",
            "https://user@evil.example@fcm.googleapis.com/x",
            "https://user@fcm.googleapis.com/x",
            "",
        ] {
            assert_eq!(origin(bad), Err(SubscriptionError::Endpoint), "{bad:?}");
        }
    }

    #[test]
    fn each_broken_part_is_named_without_its_value() {
        let with = |from: &str, to: &str| Subscription::parse(&RFC_SUBSCRIPTION.replace(from, to));
        let cases: &[(Result<Subscription, SubscriptionError>, &str)] = &[
            (Subscription::parse("not json"), "subscription"),
            (
                Subscription::parse(r#"{"endpoint":"https://a/b"}"#),
                "subscription",
            ),
            (
                with("https://push.example.net", "push.example.net"),
                "endpoint",
            ),
            (with("BCVxsr7N", "!!!"), "p256dh"),
            (with("BCVxsr7N", "AAVxsr7N"), "p256dh"),
            (with("BTBZMqHH6r4Tts7J_aSIgg", "BTBZMqHH6r4Tts7J"), "auth"),
            (with("BTBZMqHH6r4Tts7J_aSIgg", "B*"), "auth"),
        ];
        for (result, code) in cases {
            let e = result.as_ref().unwrap_err();
            assert_eq!(e.code(), *code, "{e}");
            assert!(!e.to_string().contains("BTBZ") && !e.to_string().contains("Jz"));
        }
        assert_eq!(
            with("BTBZMqHH6r4Tts7J_aSIgg", "BTBZMqHH6r4Tts7J").unwrap_err(),
            SubscriptionError::AuthLength(12)
        );
    }
}

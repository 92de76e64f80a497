//! Gaurun's notification (mercari/gaurun SPEC.md) as its clients send it to `POST /push`
//! (`gaurun_push`; read as Go reads it, in `gaurun_json`), and the rules each must meet to be
//! sent: Gaurun's (a token is not empty, platform 1 or 2, a message) and the notifier's own (the
//! providers' ranges and reserved keys, bounded lengths so that no log line is flooded).
//!
//! The field names, platform codes and messages are Gaurun's and must not change; a new rule is
//! a variant of [`Invalid`] with its label (listed in `telemetry::API_REJECTED_REASONS`) and a
//! test row.

use std::fmt;

use serde::Serialize;

use crate::device::Provider;

/// Gaurun's `platform` codes.
const IOS: i64 = 1;
const ANDROID: i64 = 2;
/// FCM's longest time to live (and Gaurun's `gcm` check): four weeks.
const MAX_TIME_TO_LIVE: i64 = 4 * 7 * 24 * 3600;
/// The longest device token taken, in bytes: FCM registration tokens run to about 160
/// characters and APNs tokens to 64 hex digits (Apple allows for up to 200); the reference
/// schema's `devices.token` column holds 1024.
pub(super) const MAX_TOKEN_BYTES: usize = 1024;
/// The longest `identifier`, in characters: it is repeated on every log line about its tokens.
pub(super) const MAX_IDENTIFIER_CHARS: usize = 128;
/// How much of a caller's value a reason quotes.
pub(super) const QUOTED_CHARS: usize = 64;

/// One notification, each field as Gaurun's `RequestGaurunNotification`; absent or `null` means
/// Go's zero value (`Deserialize` is in `gaurun_json`).
#[derive(Clone, Default, Serialize)]
pub(super) struct GaurunNotification {
    pub(super) token: Vec<String>,
    pub(super) platform: i64,
    pub(super) message: String,
    pub(super) title: String,
    pub(super) subtitle: String,
    pub(super) badge: i64,
    pub(super) category: String,
    pub(super) sound: String,
    pub(super) content_available: bool,
    pub(super) mutable_content: bool,
    pub(super) expiry: i64,
    pub(super) push_type: String,
    pub(super) collapse_key: String,
    /// Accepted and dropped: FCM v1 has no equivalent.
    pub(super) delay_while_idle: bool,
    pub(super) time_to_live: i64,
    pub(super) priority: String,
    pub(super) extend: Vec<Extend>,
    /// Not sent: a field of the span of every log line about the notification's tokens.
    pub(super) identifier: String,
}

/// Never the tokens themselves: a `Debug` print may reach a log.
impl fmt::Debug for GaurunNotification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GaurunNotification")
            .field("tokens", &self.token.len())
            .field("platform", &self.platform)
            .field("identifier", &self.identifier)
            .finish_non_exhaustive()
    }
}

/// A custom key: `{"key": .., "val": ..}` (Gaurun's spelling; `value` is read too).
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Extend {
    pub(super) key: String,
    pub(super) val: String,
}

impl GaurunNotification {
    /// Where its tokens go; `None` for a platform Gaurun does not know.
    pub(super) fn provider(&self) -> Option<Provider> {
        match self.platform {
            IOS => Some(Provider::Apns),
            ANDROID => Some(Provider::Fcm),
            _ => None,
        }
    }

    /// The first rule it breaks, in Gaurun's order (tokens, platform, message), then ours. No
    /// token at all breaks none: the notification sends nothing, as in Gaurun.
    pub(super) fn check(&self, allow_empty_message: bool) -> Result<Provider, Invalid> {
        self.check_tokens()?;
        let provider = self.provider().ok_or(Invalid::Platform(self.platform))?;
        if self.message.is_empty() && !allow_empty_message {
            return Err(Invalid::EmptyMessage);
        }
        if self.identifier.chars().count() > MAX_IDENTIFIER_CHARS {
            return Err(Invalid::IdentifierTooLong);
        }
        if let Some(at) = self.extend.iter().position(|e| e.key.is_empty()) {
            return Err(Invalid::ExtendKey(at));
        }
        self.check_values()?;
        match provider {
            Provider::Apns => self.check_ios()?,
            Provider::Fcm => self.check_android()?,
            // Gaurun has no web platform: `provider` never names Web Push.
            Provider::WebPush => return Err(Invalid::Platform(self.platform)),
        }
        Ok(provider)
    }

    /// Each token is a value a provider could take, and one a log line can hold.
    fn check_tokens(&self) -> Result<(), Invalid> {
        for (at, token) in self.token.iter().enumerate() {
            if token.trim().is_empty() {
                return Err(Invalid::EmptyToken(at));
            }
            if token.len() > MAX_TOKEN_BYTES {
                return Err(Invalid::TokenTooLong(at));
            }
            if token.chars().any(char::is_control) {
                return Err(Invalid::TokenControl(at));
            }
        }
        Ok(())
    }

    /// Each field's own range, whichever platform reads it: a value that is wrong is wrong even
    /// where the other platform would ignore it (Gaurun ignored it), so the document's one schema
    /// tells a client what is accepted.
    fn check_values(&self) -> Result<(), Invalid> {
        if !matches!(self.push_type.as_str(), "" | "alert" | "background") {
            return Err(Invalid::PushType(quoted(&self.push_type)));
        }
        if self.badge < 0 {
            return Err(Invalid::Badge(self.badge));
        }
        if self.expiry < 0 {
            return Err(Invalid::Expiry(self.expiry));
        }
        if !(0..=MAX_TIME_TO_LIVE).contains(&self.time_to_live) {
            return Err(Invalid::TimeToLive(self.time_to_live));
        }
        if !matches!(self.priority.as_str(), "" | "high" | "normal") {
            return Err(Invalid::Priority(quoted(&self.priority)));
        }
        Ok(())
    }

    fn check_ios(&self) -> Result<(), Invalid> {
        // Apple's dictionary would be replaced by a custom key of the same name.
        match self.extend.iter().find(|e| e.key == "aps") {
            Some(e) => Err(Invalid::ReservedKey(quoted(&e.key))),
            None => Ok(()),
        }
    }

    fn check_android(&self) -> Result<(), Invalid> {
        // FCM refuses the whole message for these data keys.
        match self.extend.iter().find(|e| fcm_reserved(&e.key)) {
            Some(e) => Err(Invalid::ReservedKey(quoted(&e.key))),
            None => Ok(()),
        }
    }
}

fn fcm_reserved(key: &str) -> bool {
    matches!(key, "from" | "notification" | "message_type")
        || key.starts_with("google")
        || key.starts_with("gcm")
}

/// At most [`QUOTED_CHARS`] of a caller's value, for a reason.
pub(super) fn quoted(value: &str) -> String {
    value.chars().take(QUOTED_CHARS).collect()
}

/// Why one notification is left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Invalid {
    /// Only in strict mode: otherwise a notification without tokens is no error.
    #[error("token is empty")]
    NoToken,
    #[error("token[{0}] is an empty string")]
    EmptyToken(usize),
    #[error("token[{0}] is longer than {MAX_TOKEN_BYTES} bytes")]
    TokenTooLong(usize),
    #[error("token[{0}] holds a control character")]
    TokenControl(usize),
    #[error("platform {0} is not 1 (iOS) or 2 (Android)")]
    Platform(i64),
    #[error("message is empty")]
    EmptyMessage,
    #[error("identifier is longer than {MAX_IDENTIFIER_CHARS} characters")]
    IdentifierTooLong,
    #[error("push_type {0:?} is not alert or background")]
    PushType(String),
    #[error("badge {0} is negative")]
    Badge(i64),
    #[error("expiry {0} is negative")]
    Expiry(i64),
    #[error("time_to_live {0} is not from 0 to 2419200 (four weeks)")]
    TimeToLive(i64),
    #[error("priority {0:?} is not high or normal")]
    Priority(String),
    #[error("extend[{0}] has an empty key")]
    ExtendKey(usize),
    #[error("extend key {0:?} is reserved by the provider")]
    ReservedKey(String),
}

impl Invalid {
    /// The `reason` label of `notifier_api_rejected_total` (one of `telemetry::API_REJECTED_REASONS`).
    pub(super) fn label(&self) -> &'static str {
        match self {
            Invalid::NoToken => "no_token",
            Invalid::EmptyToken(_) => "empty_token",
            Invalid::TokenTooLong(_) => "token_too_long",
            Invalid::TokenControl(_) => "token_control_character",
            Invalid::Platform(_) => "platform",
            Invalid::EmptyMessage => "empty_message",
            Invalid::IdentifierTooLong => "identifier_too_long",
            Invalid::PushType(_) => "push_type",
            Invalid::Badge(_) => "badge",
            Invalid::Expiry(_) => "expiry",
            Invalid::TimeToLive(_) => "time_to_live",
            Invalid::Priority(_) => "priority",
            Invalid::ExtendKey(_) => "extend_key",
            Invalid::ReservedKey(_) => "reserved_key",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn android() -> Value {
        json!({"token": ["t1"], "platform": 2, "message": "hello"})
    }

    fn ios() -> Value {
        json!({"token": ["t1"], "platform": 1, "message": "hello"})
    }

    fn with(mut base: Value, field: &str, value: Value) -> Value {
        base[field] = value;
        base
    }

    fn check(n: Value) -> Result<Provider, Invalid> {
        serde_json::from_value::<GaurunNotification>(n)
            .unwrap()
            .check(false)
    }

    #[test]
    fn the_platform_code_chooses_the_provider_and_no_token_breaks_no_rule() {
        assert_eq!(check(ios()), Ok(Provider::Apns));
        assert_eq!(check(android()), Ok(Provider::Fcm));
        assert_eq!(
            check(with(android(), "token", json!([]))),
            Ok(Provider::Fcm)
        );
        assert_eq!(
            check(with(android(), "token", Value::Null)),
            Ok(Provider::Fcm)
        );
    }

    #[test]
    fn each_rule_names_its_reason() {
        let long_token = "a".repeat(MAX_TOKEN_BYTES + 1);
        let long_id = "é".repeat(MAX_IDENTIFIER_CHARS + 1);
        let cases = [
            (
                with(android(), "token", json!(["a", ""])),
                Invalid::EmptyToken(1),
            ),
            (
                with(android(), "token", json!([" "])),
                Invalid::EmptyToken(0),
            ),
            (
                with(android(), "token", json!(["a", long_token])),
                Invalid::TokenTooLong(1),
            ),
            (
                with(android(), "token", json!(["a\nb"])),
                Invalid::TokenControl(0),
            ),
            (with(android(), "platform", json!(3)), Invalid::Platform(3)),
            (with(android(), "platform", json!(0)), Invalid::Platform(0)),
            (with(android(), "message", json!("")), Invalid::EmptyMessage),
            (
                with(ios(), "identifier", json!(long_id)),
                Invalid::IdentifierTooLong,
            ),
            (
                with(ios(), "push_type", json!("voip")),
                Invalid::PushType("voip".into()),
            ),
            (with(ios(), "badge", json!(-1)), Invalid::Badge(-1)),
            (with(ios(), "expiry", json!(-5)), Invalid::Expiry(-5)),
            (
                with(android(), "time_to_live", json!(2_419_201)),
                Invalid::TimeToLive(2_419_201),
            ),
            (
                with(android(), "time_to_live", json!(-1)),
                Invalid::TimeToLive(-1),
            ),
            (
                with(android(), "priority", json!("urgent")),
                Invalid::Priority("urgent".into()),
            ),
            (
                with(android(), "extend", json!([{"key": "", "val": "x"}])),
                Invalid::ExtendKey(0),
            ),
            (
                with(ios(), "extend", json!([{"key": "aps", "val": "x"}])),
                Invalid::ReservedKey("aps".into()),
            ),
            (
                with(
                    android(),
                    "extend",
                    json!([{"key": "google.x", "val": "x"}]),
                ),
                Invalid::ReservedKey("google.x".into()),
            ),
        ];
        for (n, expected) in cases {
            assert_eq!(check(n.clone()), Err(expected), "{n}");
        }
        // A token of the longest length and an identifier of the longest length pass.
        let longest = with(android(), "token", json!(["a".repeat(MAX_TOKEN_BYTES)]));
        let longest = with(
            longest,
            "identifier",
            json!("é".repeat(MAX_IDENTIFIER_CHARS)),
        );
        assert_eq!(check(longest), Ok(Provider::Fcm));
    }

    #[test]
    fn a_reason_quotes_at_most_a_few_characters_of_the_caller_s_value() {
        let huge = "v".repeat(10_000);
        let Err(Invalid::PushType(quoted)) = check(with(ios(), "push_type", json!(huge))) else {
            panic!("push_type");
        };
        assert_eq!(quoted.chars().count(), QUOTED_CHARS);
    }

    #[test]
    fn a_value_out_of_range_is_refused_even_where_the_platform_ignores_the_field() {
        let ios_only = with(android(), "push_type", json!("voip"));
        assert_eq!(check(ios_only), Err(Invalid::PushType("voip".into())));
        let android_only = with(ios(), "priority", json!("urgent"));
        assert_eq!(check(android_only), Err(Invalid::Priority("urgent".into())));
        // Valid values of the other platform's fields are accepted and ignored, as Gaurun does.
        assert!(check(with(android(), "push_type", json!("background"))).is_ok());
        assert!(check(with(ios(), "priority", json!("high"))).is_ok());
    }

    #[test]
    fn an_empty_message_passes_when_allowed() {
        let n: GaurunNotification =
            serde_json::from_value(json!({"token": ["t"], "platform": 2})).unwrap();
        assert_eq!(n.check(true), Ok(Provider::Fcm));
        assert_eq!(n.check(false), Err(Invalid::EmptyMessage));
    }

    #[test]
    fn every_reason_s_label_is_a_series_of_the_metric_and_the_debug_print_hides_tokens() {
        let all = [
            Invalid::NoToken,
            Invalid::EmptyToken(0),
            Invalid::TokenTooLong(0),
            Invalid::TokenControl(0),
            Invalid::Platform(0),
            Invalid::EmptyMessage,
            Invalid::IdentifierTooLong,
            Invalid::PushType(String::new()),
            Invalid::Badge(0),
            Invalid::Expiry(0),
            Invalid::TimeToLive(0),
            Invalid::Priority(String::new()),
            Invalid::ExtendKey(0),
            Invalid::ReservedKey(String::new()),
        ];
        let mut labels: Vec<&str> = all.iter().map(Invalid::label).collect();
        labels.sort_unstable();
        let mut listed = crate::telemetry::API_REJECTED_REASONS.to_vec();
        listed.sort_unstable();
        assert_eq!(labels, listed);
        let n: GaurunNotification =
            serde_json::from_value(with(ios(), "token", json!(["secret-device-token"]))).unwrap();
        assert!(!format!("{n:?}").contains("secret-device-token"), "{n:?}");
    }
}

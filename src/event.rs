//! The `talk_posted` event as a publisher sends it, and its validation.
//!
//! PHP apps are loose with types (`json_encode` of a form value gives `"42"`), so ids are accepted
//! as integers or digit strings; everything else that is off is rejected with a reason precise
//! enough to fix the publisher from one log line.

use std::fmt;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde_json::{Map, Value};

/// Messages larger than this are rejected before parsing.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const MAX_EVENT_ID_CHARS: usize = 128;
const PREVIEW_CHARS: usize = 120;

/// A validated event: a talk was posted.
#[derive(Debug, Clone, PartialEq)]
pub struct TalkPosted {
    pub talk_id: i64,
    /// The program as the publisher states it; the talk's own program is used when absent.
    pub program_id: Option<i64>,
    /// Idempotency key; `talk_posted:{talk_id}` unless the publisher chose one.
    pub event_id: String,
    /// `Some(true)` forces a dry run for this event.
    pub dry_run: Option<bool>,
    pub published_at: Option<DateTime<Utc>>,
}

/// Why a message is not a usable event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("message is {0} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("message is not valid UTF-8")]
    NotUtf8,
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message is JSON but not an object")]
    NotObject,
    #[error("talk_id is missing")]
    MissingTalkId,
    #[error("{field} must be a positive integer or a string of digits, got {got}")]
    BadId { field: &'static str, got: String },
    #[error(
        "event_id must be a string of 1 to {MAX_EVENT_ID_CHARS} characters, none a control \
         character, got {0}"
    )]
    BadEventId(String),
    #[error("dry_run must be true or false, got {0}")]
    BadDryRun(String),
    #[error("published_at must be an RFC 3339 timestamp or unix seconds, got {0}")]
    BadPublishedAt(String),
}

impl Rejection {
    /// A low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::TooLarge(_) => "too_large",
            Rejection::NotUtf8 => "not_utf8",
            Rejection::NotJson(_) => "not_json",
            Rejection::NotObject => "not_object",
            Rejection::MissingTalkId => "missing_talk_id",
            Rejection::BadId { .. } => "bad_id",
            Rejection::BadEventId(_) => "bad_event_id",
            Rejection::BadDryRun(_) => "bad_dry_run",
            Rejection::BadPublishedAt(_) => "bad_published_at",
        }
    }
}

impl TalkPosted {
    /// Parses and validates one message as it came off the channel.
    pub fn parse(message: &[u8]) -> Result<Self, Rejection> {
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(Rejection::TooLarge(message.len()));
        }
        let text = std::str::from_utf8(message).map_err(|_| Rejection::NotUtf8)?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| Rejection::NotJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(Rejection::NotObject);
        };
        Self::from_fields(&fields)
    }

    fn from_fields(fields: &Map<String, Value>) -> Result<Self, Rejection> {
        let talk_id = match fields.get("talk_id") {
            None | Some(Value::Null) => return Err(Rejection::MissingTalkId),
            Some(v) => positive_id("talk_id", v)?,
        };
        let program_id = match fields.get("program_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(positive_id("program_id", v)?),
        };
        let event_id = match fields.get("event_id") {
            None | Some(Value::Null) => format!("talk_posted:{talk_id}"),
            Some(Value::String(s)) if valid_event_id(s) => s.clone(),
            Some(v) => return Err(Rejection::BadEventId(short(v))),
        };
        let dry_run = match fields.get("dry_run") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => return Err(Rejection::BadDryRun(short(v))),
        };
        let published_at = match fields.get("published_at") {
            None | Some(Value::Null) => None,
            Some(v) => Some(timestamp(v).ok_or_else(|| Rejection::BadPublishedAt(short(v)))?),
        };
        Ok(Self {
            talk_id,
            program_id,
            event_id,
            dry_run,
            published_at,
        })
    }

    /// The event as a publisher would send it (used by `notifier publish`).
    pub fn to_json(&self) -> String {
        let mut fields = Map::new();
        fields.insert("talk_id".into(), self.talk_id.into());
        if let Some(p) = self.program_id {
            fields.insert("program_id".into(), p.into());
        }
        fields.insert("event_id".into(), self.event_id.clone().into());
        if let Some(d) = self.dry_run {
            fields.insert("dry_run".into(), d.into());
        }
        if let Some(t) = self.published_at {
            fields.insert("published_at".into(), t.to_rfc3339().into());
        }
        Value::Object(fields).to_string()
    }
}

/// 1 to 128 characters, none a control character: the id is written into log lines and, for
/// APNs, into the `apns-collapse-id` header, which refuses control characters (a push that would
/// fail for every iPhone of the event).
fn valid_event_id(id: &str) -> bool {
    (1..=MAX_EVENT_ID_CHARS).contains(&id.chars().count()) && !id.chars().any(char::is_control)
}

fn positive_id(field: &'static str, value: &Value) -> Result<i64, Rejection> {
    let parsed = match value {
        // `640.0` is the number 640 to JSON (and to PHP, which writes floats so).
        Value::Number(n) => n.as_i64().or_else(|| whole(n.as_f64()?)),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().ok()
        }
        _ => None,
    };
    match parsed {
        Some(id) if id > 0 => Ok(id),
        _ => Err(Rejection::BadId {
            field,
            got: short(value),
        }),
    }
}

/// A float that is a whole number an `i64` holds.
pub(crate) fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
}

/// A time a publisher could mean: RFC 3339's four-digit years, so the event survives its own
/// JSON (`to_json`), which a unix time in the year 200,000 would not.
fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    any_timestamp(value).filter(|t| t.year() <= 9999)
}

fn any_timestamp(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Utc.timestamp_opt(s.parse().ok()?, 0).single()
        }
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => {
            let secs = n.as_f64()?;
            if !secs.is_finite() || secs < 0.0 {
                return None;
            }
            let millis = (secs * 1000.0).round() as i64;
            Utc.timestamp_millis_opt(millis).single()
        }
        _ => None,
    }
}

fn short(value: &Value) -> String {
    truncate_chars(&value.to_string(), 40)
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// The start of a raw message, safe to log: invalid UTF-8 and control characters are escaped.
pub(crate) struct Preview<'a>(pub &'a [u8]);

impl fmt::Display for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = &self.0[..self.0.len().min(PREVIEW_CHARS * 4)];
        let text = String::from_utf8_lossy(head);
        let cut = truncate_chars(&text, PREVIEW_CHARS);
        let more = if cut.len() < text.len() || head.len() < self.0.len() {
            "…"
        } else {
            ""
        };
        let cut = cut.trim_end_matches('…');
        write!(f, "{:?}{more}", cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<TalkPosted, Rejection> {
        TalkPosted::parse(s.as_bytes())
    }

    #[test]
    fn a_minimal_event_gets_the_default_event_id() {
        let e = parse(r#"{"talk_id": 42}"#).unwrap();
        assert_eq!(e.talk_id, 42);
        assert_eq!(e.event_id, "talk_posted:42");
        assert_eq!(
            (e.program_id, e.dry_run, e.published_at),
            (None, None, None)
        );
    }

    #[test]
    fn a_whole_float_is_an_id_and_a_fraction_is_not() {
        let e = parse(r#"{"talk_id": 42.0, "program_id": 7.0}"#).unwrap();
        assert_eq!((e.talk_id, e.program_id), (42, Some(7)));
        assert!(matches!(
            parse(r#"{"talk_id": 42.5}"#),
            Err(Rejection::BadId {
                field: "talk_id",
                ..
            })
        ));
    }

    #[test]
    fn php_style_digit_strings_are_ids() {
        let e = parse(r#"{"talk_id": "42", "program_id": "7", "extra": [1]}"#).unwrap();
        assert_eq!((e.talk_id, e.program_id), (42, Some(7)));
    }

    #[test]
    fn every_optional_field_is_read() {
        let e = parse(
            r#"{"talk_id":1,"event_id":"x-1","dry_run":true,"published_at":"2026-11-22T01:02:03+09:00"}"#,
        )
        .unwrap();
        assert_eq!(e.event_id, "x-1");
        assert_eq!(e.dry_run, Some(true));
        assert_eq!(
            e.published_at.unwrap().to_rfc3339(),
            "2026-11-21T16:02:03+00:00"
        );
        let unix = parse(r#"{"talk_id":1,"published_at":1700000000}"#).unwrap();
        assert_eq!(unix.published_at.unwrap().timestamp(), 1_700_000_000);
    }

    #[test]
    fn malformed_messages_are_rejected_with_their_reason() {
        let big = format!(
            r#"{{"talk_id":1,"pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        let cases: &[(&[u8], &str)] = &[
            (b"\xff\xfe{}", "not_utf8"),
            (b"talk 42", "not_json"),
            (b"[42]", "not_object"),
            (b"42", "not_object"),
            (b"{}", "missing_talk_id"),
            (br#"{"talk_id": null}"#, "missing_talk_id"),
            (br#"{"talk_id": 0}"#, "bad_id"),
            (br#"{"talk_id": -3}"#, "bad_id"),
            (br#"{"talk_id": "-3"}"#, "bad_id"),
            (br#"{"talk_id": 4.5}"#, "bad_id"),
            (br#"{"talk_id": "abc"}"#, "bad_id"),
            (br#"{"talk_id": " 42"}"#, "bad_id"),
            (br#"{"talk_id": "99999999999999999999"}"#, "bad_id"),
            (br#"{"talk_id": true}"#, "bad_id"),
            (br#"{"talk_id": 1, "program_id": "x"}"#, "bad_id"),
            (br#"{"talk_id": 1, "event_id": ""}"#, "bad_event_id"),
            (br#"{"talk_id": 1, "event_id": 5}"#, "bad_event_id"),
            (br#"{"talk_id": 1, "event_id": "a\nb"}"#, "bad_event_id"),
            (
                br#"{"talk_id": 1, "event_id": "tab\there"}"#,
                "bad_event_id",
            ),
            (
                br#"{"talk_id": 1, "event_id": "del\u007f"}"#,
                "bad_event_id",
            ),
            (br#"{"talk_id": 1, "dry_run": "yes"}"#, "bad_dry_run"),
            (
                br#"{"talk_id": 1, "published_at": "yesterday"}"#,
                "bad_published_at",
            ),
            (big.as_bytes(), "too_large"),
        ];
        for (message, label) in cases {
            let err = TalkPosted::parse(message).unwrap_err();
            assert_eq!(err.label(), *label, "{}: {err}", Preview(message));
        }
    }

    #[test]
    fn an_event_id_of_128_characters_is_accepted_and_129_is_not() {
        let ok = format!(r#"{{"talk_id":1,"event_id":"{}"}}"#, "あ".repeat(128));
        assert!(parse(&ok).is_ok());
        let long = format!(r#"{{"talk_id":1,"event_id":"{}"}}"#, "あ".repeat(129));
        assert_eq!(parse(&long).unwrap_err().label(), "bad_event_id");
    }

    #[test]
    fn an_event_survives_a_round_trip_through_its_json() {
        let e = parse(r#"{"talk_id":3,"program_id":4,"event_id":"e","dry_run":false}"#).unwrap();
        assert_eq!(parse(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn previews_are_short_and_escaped() {
        let p = Preview(b"line\nbreak \xff").to_string();
        assert_eq!(p, r#""line\nbreak �""#);
        let long = Preview("x".repeat(1000).as_bytes()).to_string();
        assert!(long.len() < 130 && long.ends_with('…'), "{long}");
    }

    /// Bad input searched for rather than listed: whatever arrives on the channel, the parser
    /// answers with an event or a rejection that says what was wrong, and never panics.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                "\\PC{0,20}".prop_map(Value::from),
                "[0-9]{1,25}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::btree_map(field_name(), inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// The event's own fields more often than chance would pick them.
        fn field_name() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("talk_id".to_string()),
                Just("program_id".to_string()),
                Just("event_id".to_string()),
                Just("dry_run".to_string()),
                Just("published_at".to_string()),
                "[a-z_]{1,10}",
            ]
        }

        fn event_object() -> impl Strategy<Value = Value> {
            prop::collection::btree_map(field_name(), json_value(), 0..7)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        }

        fn assert_answered(message: &[u8], parsed: &Result<TalkPosted, Rejection>) {
            match parsed {
                Ok(event) => {
                    assert!(event.talk_id > 0);
                    assert!(valid_event_id(&event.event_id), "{:?}", event.event_id);
                    assert_eq!(parse(&event.to_json()).as_ref(), Ok(event));
                }
                Err(rejection) => {
                    assert!(!rejection.to_string().is_empty());
                    assert!(!rejection.label().is_empty());
                }
            }
            // Bounded whatever the message: 120 characters, each escaped as at most `\u{10ffff}`.
            let preview = Preview(message).to_string();
            assert!(
                preview.chars().count() <= PREVIEW_CHARS * 10 + 3,
                "{preview}"
            );
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1_000))]

            #[test]
            fn arbitrary_bytes_are_answered_without_a_panic(
                message in prop::collection::vec(any::<u8>(), 0..512)
            ) {
                let parsed = TalkPosted::parse(&message);
                assert_answered(&message, &parsed);
            }

            #[test]
            fn arbitrary_json_values_are_answered_without_a_panic(value in json_value()) {
                let message = value.to_string();
                let parsed = TalkPosted::parse(message.as_bytes());
                if !value.is_object() {
                    prop_assert_eq!(parsed.clone(), Err(Rejection::NotObject));
                }
                assert_answered(message.as_bytes(), &parsed);
            }

            #[test]
            fn arbitrary_objects_are_events_or_rejections_naming_the_field(value in event_object()) {
                let message = value.to_string();
                let parsed = TalkPosted::parse(message.as_bytes());
                assert_answered(message.as_bytes(), &parsed);
                if let Err(rejection) = &parsed {
                    let named = match rejection {
                        Rejection::MissingTalkId => "talk_id",
                        Rejection::BadId { field, .. } => field,
                        Rejection::BadEventId(_) => "event_id",
                        Rejection::BadDryRun(_) => "dry_run",
                        Rejection::BadPublishedAt(_) => "published_at",
                        other => panic!("an object rejected as {other:?}"),
                    };
                    prop_assert!(rejection.to_string().contains(named), "{}", rejection);
                }
            }

            #[test]
            fn any_positive_id_as_a_number_or_digit_string_is_accepted(
                id in 1..=i64::MAX, as_string in any::<bool>()
            ) {
                let message = if as_string {
                    format!(r#"{{"talk_id": "{id}"}}"#)
                } else {
                    format!(r#"{{"talk_id": {id}}}"#)
                };
                let event = parse(&message).unwrap();
                prop_assert_eq!(event.talk_id, id);
            }
        }
    }
}

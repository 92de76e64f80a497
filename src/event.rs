//! The `talk_posted` event as a publisher sends it, and its validation.
//!
//! PHP apps are loose with types (`json_encode` of a form value gives `"42"`), so ids are accepted
//! as integers or digit strings; everything else that is off is rejected with a reason precise
//! enough to fix the publisher from one log line.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};

/// Messages larger than this are rejected before parsing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
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
    #[error("event_id must be a string of 1 to {MAX_EVENT_ID_CHARS} characters, got {0}")]
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
            Some(Value::String(s)) if (1..=MAX_EVENT_ID_CHARS).contains(&s.chars().count()) => {
                s.clone()
            }
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

fn positive_id(field: &'static str, value: &Value) -> Result<i64, Rejection> {
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
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

fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
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
pub struct Preview<'a>(pub &'a [u8]);

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
}

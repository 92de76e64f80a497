//! The plaintext of a push, what the site's service worker reads in its `push` event:
//! `{"title", "body", "data": {…}}` from the notification rendered for the device's locale, its
//! data map as configured (`[content.data]`: `talk_id`, `program_id`, …) plus the `event_id`.
//! Written once per notification and shared by every subscription it goes to; only the
//! encryption differs per push.

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::content::Notification;

/// The plaintext for `notification`, sent as part of event `event_id`.
pub(crate) fn plaintext(notification: &Notification, event_id: &str) -> Vec<u8> {
    let body = Plaintext {
        title: &notification.title,
        body: &notification.body,
        data: Data {
            pairs: &notification.data,
            event_id,
        },
    };
    // Strings and a map of strings: serialising into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Serialize)]
struct Plaintext<'a> {
    title: &'a str,
    body: &'a str,
    data: Data<'a>,
}

/// The configured data map, then `event_id` unless the map has one of its own.
struct Data<'a> {
    pairs: &'a [(String, String)],
    event_id: &'a str,
}

impl Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.pairs {
            map.serialize_entry(key, value)?;
        }
        if !self.pairs.iter().any(|(key, _)| key == "event_id") {
            map.serialize_entry("event_id", self.event_id)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plaintext_holds_title_body_and_the_data_with_the_event_id() {
        let n = Notification {
            title: "「Rust」に新しいトークが投稿されました".into(),
            body: "Quote \" and backslash \\".into(),
            data: vec![
                ("type".into(), "talk_posted".into()),
                ("talk_id".into(), "42".into()),
                ("program_id".into(), "7".into()),
            ],
            collapse_id: "ev-1".into(),
            thread_id: "program-7".into(),
        };
        let value: serde_json::Value = serde_json::from_slice(&plaintext(&n, "ev-1")).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "title": "「Rust」に新しいトークが投稿されました",
                "body": "Quote \" and backslash \\",
                "data": {"type": "talk_posted", "talk_id": "42", "program_id": "7", "event_id": "ev-1"},
            })
        );
    }
}

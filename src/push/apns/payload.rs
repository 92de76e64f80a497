//! What APNs receives in a request's body, and the collapse id beside it: the `aps` dictionary
//! (alert, sound, thread) with the notification's data keys at the top level, as the iOS app
//! reads them. What may change here: the payload's keys, with the app and the golden test.

use std::borrow::Cow;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::content::Notification;

/// APNs refuses a collapse id longer than this many bytes.
const MAX_COLLAPSE_ID: usize = 64;

/// The JSON body for `notification`, with `sound` unless it is empty.
pub(super) fn payload(n: &Notification, sound: &str) -> bytes::Bytes {
    let payload = Payload {
        aps: Aps {
            alert: Alert {
                title: &n.title,
                body: &n.body,
            },
            sound: Some(sound).filter(|s| !s.is_empty()),
            thread_id: &n.thread_id,
        },
        data: &n.data,
    };
    // Serialising plain strings cannot fail.
    serde_json::to_vec(&payload).unwrap_or_default().into()
}

/// The event's collapse id as APNs accepts it: as is up to 64 bytes, else its SHA-256 in hex
/// (64 characters), the same for every push of the event.
pub fn collapse_id(event_id: &str) -> Cow<'_, str> {
    if event_id.len() <= MAX_COLLAPSE_ID {
        return Cow::Borrowed(event_id);
    }
    let digest = Sha256::digest(event_id.as_bytes());
    Cow::Owned(digest.iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Serialize)]
struct Payload<'a> {
    aps: Aps<'a>,
    #[serde(flatten, serialize_with = "data_map")]
    data: &'a [(String, String)],
}

fn data_map<S: serde::Serializer>(data: &&[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(data.len()))?;
    for (k, v) in data.iter() {
        // `aps` is Apple's; a data key of that name would replace it.
        if k != "aps" {
            map.serialize_entry(k, v)?;
        }
    }
    map.end()
}

#[derive(Serialize)]
struct Aps<'a> {
    alert: Alert<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sound: Option<&'a str>,
    #[serde(rename = "thread-id")]
    thread_id: &'a str,
}

#[derive(Serialize)]
struct Alert<'a> {
    title: &'a str,
    body: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_event_id_becomes_a_64_byte_collapse_id_stable_per_event() {
        let long = "x".repeat(100);
        let id = collapse_id(&long);
        assert_eq!(id.len(), 64);
        assert_eq!(id, collapse_id(&long));
        assert_ne!(id, collapse_id(&"y".repeat(100)));
        assert_eq!(collapse_id("short"), "short");
    }

    #[test]
    fn a_data_key_named_aps_never_replaces_apples_dictionary() {
        let n = Notification {
            title: "t".into(),
            body: "b".into(),
            data: vec![("aps".into(), "x".into()), ("k".into(), "v".into())],
            collapse_id: "c".into(),
            thread_id: "th".into(),
        };
        let body: serde_json::Value = serde_json::from_slice(&payload(&n, "")).unwrap();
        assert_eq!(body["aps"]["alert"]["title"], "t");
        assert_eq!(body["k"], "v");
        assert!(body["aps"].get("sound").is_none());
    }
}

//! Gaurun's notification as the providers receive it (anchors-2 §1i): Android as an FCM v1
//! data-only message, iOS as the APNs payload and headers Gaurun builds, quirks kept — `badge` is
//! always sent (omitting it clears the badge), `extend` keys sit at the payload's top level, the
//! alert is a plain string when there is only a body, and `expiry` is relative.
//!
//! The JSON written here is what Gaurun clients' apps already parse: a change is a breaking one,
//! and each field has a test row below.

use serde::Serialize;
use serde::ser::SerializeMap;

use super::gaurun::{Extend, GaurunNotification};
use crate::device::Provider;
use crate::push::{ApnsPrebuilt, ApnsPushType, FcmPrebuilt, Prebuilt};

/// The body of FCM v1 `messages:send` for one token.
#[derive(Debug, Serialize)]
pub(super) struct FcmSend<'a> {
    message: FcmMessage<'a>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    validate_only: bool,
}

#[derive(Debug, Serialize)]
struct FcmMessage<'a> {
    token: &'a str,
    data: FcmData<'a>,
    android: AndroidConfig<'a>,
}

/// `message` first, then the `extend` pairs; a pair named `message` wins, as in Gaurun's map.
#[derive(Debug)]
struct FcmData<'a> {
    message: &'a str,
    extend: &'a [Extend],
}

impl Serialize for FcmData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let overridden = self.extend.iter().any(|e| e.key == "message");
        let mut map = s.serialize_map(None)?;
        if !overridden {
            map.serialize_entry("message", self.message)?;
        }
        for e in self.extend {
            map.serialize_entry(&e.key, &e.val)?;
        }
        map.end()
    }
}

#[derive(Debug, Serialize)]
struct AndroidConfig<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    collapse_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<&'a str>,
}

/// The FCM v1 request for `token` (0 `time_to_live`: FCM's default, as Gaurun's `omitempty`).
pub(super) fn fcm_send<'a>(
    n: &'a GaurunNotification,
    token: &'a str,
    validate_only: bool,
) -> FcmSend<'a> {
    // `high` or `normal` (validated), as firebase-admin and the notifier's own messages write it.
    let priority = Some(n.priority.as_str()).filter(|p| !p.is_empty());
    FcmSend {
        message: FcmMessage {
            token,
            data: FcmData {
                message: &n.message,
                extend: &n.extend,
            },
            android: AndroidConfig {
                collapse_key: &n.collapse_key,
                ttl: (n.time_to_live > 0).then(|| format!("{}s", n.time_to_live)),
                priority,
            },
        },
        validate_only,
    }
}

/// An APNs request for one token: the payload and the headers Gaurun sets (the topic is the
/// configured one, added by the pusher).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ApnsSend {
    pub(super) payload: Vec<u8>,
    /// `apns-push-type`: `alert` unless `background` was asked.
    pub(super) push_type: ApnsPushType,
    /// `apns-expiration`: a Unix time, only for an `expiry` over 0.
    pub(super) expiration: Option<i64>,
}

#[derive(Debug, Serialize)]
struct ApnsPayload<'a> {
    aps: Aps<'a>,
    #[serde(flatten)]
    extend: TopLevel<'a>,
}

#[derive(Debug)]
struct TopLevel<'a>(&'a [Extend]);

impl Serialize for TopLevel<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for e in self.0 {
            map.serialize_entry(&e.key, &e.val)?;
        }
        map.end()
    }
}

#[derive(Debug, Serialize)]
struct Aps<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<Alert<'a>>,
    badge: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    sound: &'a str,
    #[serde(rename = "content-available", skip_serializing_if = "Option::is_none")]
    content_available: Option<u8>,
    #[serde(skip_serializing_if = "str::is_empty")]
    category: &'a str,
    #[serde(rename = "mutable-content", skip_serializing_if = "Option::is_none")]
    mutable_content: Option<u8>,
}

/// A string when only the body is set, else the dictionary (buford's `Alert.Map`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Alert<'a> {
    Body(&'a str),
    Full {
        #[serde(skip_serializing_if = "str::is_empty")]
        title: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        subtitle: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        body: &'a str,
    },
}

fn alert(n: &GaurunNotification) -> Option<Alert<'_>> {
    match (
        n.title.is_empty() && n.subtitle.is_empty(),
        n.message.is_empty(),
    ) {
        (true, true) => None,
        (true, false) => Some(Alert::Body(&n.message)),
        (false, _) => Some(Alert::Full {
            title: &n.title,
            subtitle: &n.subtitle,
            body: &n.message,
        }),
    }
}

/// The APNs request Gaurun would send, `now` being the Unix time of acceptance.
pub(super) fn apns_send(n: &GaurunNotification, now: i64) -> Result<ApnsSend, serde_json::Error> {
    let payload = ApnsPayload {
        aps: Aps {
            alert: alert(n),
            badge: n.badge,
            sound: &n.sound,
            content_available: n.content_available.then_some(1),
            category: &n.category,
            mutable_content: n.mutable_content.then_some(1),
        },
        extend: TopLevel(&n.extend),
    };
    Ok(ApnsSend {
        payload: serde_json::to_vec(&payload)?,
        push_type: match n.push_type.as_str() {
            "background" => ApnsPushType::Background,
            _ => ApnsPushType::Alert,
        },
        expiration: (n.expiry > 0).then(|| now.saturating_add(n.expiry)),
    })
}

/// The request the providers get for `n`, accepted at `accepted_at` (Unix seconds): what the
/// pushers send to each of its tokens.
pub(super) fn prebuilt(
    n: &GaurunNotification,
    provider: Provider,
    accepted_at: i64,
) -> Result<Prebuilt, serde_json::Error> {
    Ok(match provider {
        Provider::Fcm => {
            let mut message = match serde_json::to_value(fcm_send(n, "", false).message)? {
                serde_json::Value::Object(message) => message,
                _ => serde_json::Map::new(),
            };
            // The pusher puts each token in.
            message.remove("token");
            Prebuilt::Fcm(FcmPrebuilt { message })
        }
        Provider::Apns => {
            let sent = apns_send(n, accepted_at)?;
            Prebuilt::Apns(ApnsPrebuilt {
                payload: sent.payload.into(),
                push_type: sent.push_type,
                expiration: sent.expiration.map(|at| at.max(0) as u64),
            })
        }
        // Gaurun has no web platform, so no accepted notification names Web Push.
        Provider::WebPush => {
            return Err(serde::de::Error::custom(
                "Gaurun's notifications have no web platform",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn notification(fields: Value) -> GaurunNotification {
        serde_json::from_value(fields).unwrap()
    }

    fn fcm(fields: Value) -> Value {
        let n = notification(fields);
        serde_json::to_value(fcm_send(&n, "tok", false)).unwrap()
    }

    fn apns(fields: Value) -> (Value, ApnsSend) {
        let sent = apns_send(&notification(fields), 1_700_000_000).unwrap();
        (serde_json::from_slice(&sent.payload).unwrap(), sent)
    }

    #[test]
    fn android_becomes_a_data_only_fcm_v1_message_field_by_field() {
        let base = json!({"platform": 2, "message": "hi"});
        let rows = [
            (
                json!({}),
                json!({"token": "tok", "data": {"message": "hi"}, "android": {}}),
            ),
            (
                json!({"collapse_key": "c"}),
                json!({"token": "tok", "data": {"message": "hi"}, "android": {"collapse_key": "c"}}),
            ),
            (
                json!({"time_to_live": 60}),
                json!({"token": "tok", "data": {"message": "hi"}, "android": {"ttl": "60s"}}),
            ),
            (
                json!({"priority": "high"}),
                json!({"token": "tok", "data": {"message": "hi"}, "android": {"priority": "high"}}),
            ),
            (
                json!({"priority": "normal"}),
                json!({"token": "tok", "data": {"message": "hi"}, "android": {"priority": "normal"}}),
            ),
            (
                json!({"extend": [{"key": "k", "val": "v"}]}),
                json!({"token": "tok", "data": {"message": "hi", "k": "v"}, "android": {}}),
            ),
            (
                json!({"extend": [{"key": "message", "val": "mine"}]}),
                json!({"token": "tok", "data": {"message": "mine"}, "android": {}}),
            ),
            (
                json!({"delay_while_idle": true, "title": "ignored", "badge": 3}),
                json!({"token": "tok", "data": {"message": "hi"}, "android": {}}),
            ),
        ];
        for (fields, message) in rows {
            let mut n = base.clone();
            n.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            assert_eq!(fcm(n.clone()), json!({ "message": message }), "{n}");
        }
    }

    #[test]
    fn validate_only_is_sent_only_when_asked() {
        let n = notification(json!({"platform": 2, "message": "m"}));
        let body = serde_json::to_value(fcm_send(&n, "t", true)).unwrap();
        assert_eq!(body["validate_only"], json!(true));
    }

    #[test]
    fn ios_becomes_gaurun_s_apns_payload_field_by_field() {
        let rows = [
            (
                json!({"message": "hi"}),
                json!({"aps": {"alert": "hi", "badge": 0}}),
            ),
            (
                json!({"message": "hi", "title": "T"}),
                json!({"aps": {"alert": {"title": "T", "body": "hi"}, "badge": 0}}),
            ),
            (
                json!({"message": "hi", "subtitle": "S"}),
                json!({"aps": {"alert": {"subtitle": "S", "body": "hi"}, "badge": 0}}),
            ),
            (json!({}), json!({"aps": {"badge": 0}})),
            (
                json!({"message": "hi", "badge": 5}),
                json!({"aps": {"alert": "hi", "badge": 5}}),
            ),
            (
                json!({"message": "hi", "sound": "default"}),
                json!({"aps": {"alert": "hi", "badge": 0, "sound": "default"}}),
            ),
            (
                json!({"message": "hi", "category": "c"}),
                json!({"aps": {"alert": "hi", "badge": 0, "category": "c"}}),
            ),
            (
                json!({"content_available": true}),
                json!({"aps": {"badge": 0, "content-available": 1}}),
            ),
            (
                json!({"message": "hi", "mutable_content": true}),
                json!({"aps": {"alert": "hi", "badge": 0, "mutable-content": 1}}),
            ),
            (
                json!({"message": "hi", "extend": [{"key": "url", "val": "x://1"}]}),
                json!({"aps": {"alert": "hi", "badge": 0}, "url": "x://1"}),
            ),
            (
                json!({"message": "hi", "collapse_key": "ignored", "time_to_live": 9}),
                json!({"aps": {"alert": "hi", "badge": 0}}),
            ),
        ];
        for (fields, payload) in rows {
            assert_eq!(apns(fields.clone()).0, payload, "{fields}");
        }
    }

    #[test]
    fn ios_headers_follow_push_type_and_a_relative_expiry() {
        let (_, plain) = apns(json!({"message": "m"}));
        assert_eq!(
            (plain.push_type, plain.expiration),
            (ApnsPushType::Alert, None)
        );
        let (_, background) = apns(json!({"push_type": "background", "expiry": 60}));
        assert_eq!(background.push_type, ApnsPushType::Background);
        assert_eq!(background.expiration, Some(1_700_000_060));
    }
}

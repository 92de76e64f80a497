//! The FCM v1 request body: the serde structs of `messages:send`, and [`Bodies`], which writes
//! each notification's body once (per platform variant) with a hole where the token goes and
//! splices each device's token in. The hole is found by serialising the real request, so the
//! structs below stay the one description of the body.

use serde::Serialize;
use serde::ser::SerializeMap;

use super::FcmSettings;
use crate::audience::Platform;
use crate::content::Notification;
use crate::push::{PerNotification, Prebuilt, Push, PushContent};

/// Writes request bodies for one FCM pusher.
pub(super) struct Bodies {
    validate_only: bool,
    ttl: String,
    channel_id: Option<String>,
    templates: PerNotification<BodyTemplate>,
}

/// A request body with a hole where the token goes.
struct BodyTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl Bodies {
    pub(super) fn new(settings: &FcmSettings, validate_only: bool) -> Self {
        Self {
            validate_only,
            ttl: format!("{}s", settings.ttl_secs),
            channel_id: Some(settings.android_channel_id.clone()).filter(|c| !c.is_empty()),
            templates: PerNotification::default(),
        }
    }

    /// The request body for one push: the notification's shared body with the device's token
    /// spliced in, so the JSON shared by every device of the event is written once.
    pub(super) fn body(&self, push: &Push) -> Vec<u8> {
        let token = &push.device.token;
        let notification = match &push.content {
            PushContent::Talk(n) => n,
            PushContent::Prebuilt(prebuilt) => return self.prebuilt_body(prebuilt, token),
        };
        let ios = push.device.platform == Some(Platform::Ios);
        let template = self.templates.get_or_build(notification, ios.into(), || {
            self.template(notification, ios)
        });
        let mut body =
            Vec::with_capacity(template.prefix.len() + token.len() + 2 + template.suffix.len());
        body.extend_from_slice(&template.prefix);
        // Folded without an early exit, so the check runs vectorised over the whole token.
        if token.bytes().fold(true, |plain, b| {
            plain & b.is_ascii_graphic() & (b != b'"') & (b != b'\\')
        }) {
            // Real tokens ([A-Za-z0-9_:-]) need no escaping.
            body.push(b'"');
            body.extend_from_slice(token.as_bytes());
            body.push(b'"');
        } else {
            // Writing a string into a Vec cannot fail; it escapes what JSON needs escaped.
            let _ = serde_json::to_writer(&mut body, token.as_str());
        }
        body.extend_from_slice(&template.suffix);
        body
    }

    /// A prebuilt FCM message with the token; a body built for another provider is a bug of the
    /// caller's, sent as an empty body for FCM to refuse (INVALID_ARGUMENT) rather than a panic.
    fn prebuilt_body(&self, prebuilt: &Prebuilt, token: &str) -> Vec<u8> {
        match prebuilt {
            Prebuilt::Fcm(fcm) => fcm.body(token, self.validate_only),
            Prebuilt::Apns(_) => Vec::new(),
        }
    }

    /// The whole body for a device with an empty token, cut around the token's place: `token`
    /// is the message's first field, so `"token":""` occurs once and first.
    fn template(&self, n: &Notification, ios: bool) -> BodyTemplate {
        let full = serde_json::to_vec(&self.request("", n, ios)).unwrap_or_default();
        const EMPTY_TOKEN: &[u8] = br#""token":"""#;
        match full
            .windows(EMPTY_TOKEN.len())
            .position(|w| w == EMPTY_TOKEN)
        {
            Some(at) => BodyTemplate {
                prefix: full[..at + EMPTY_TOKEN.len() - 2].to_vec(),
                suffix: full[at + EMPTY_TOKEN.len()..].to_vec(),
            },
            // Unreachable with the types below; a test pins it.
            None => BodyTemplate {
                prefix: full,
                suffix: Vec::new(),
            },
        }
    }

    fn request<'a>(&'a self, token: &'a str, n: &'a Notification, ios: bool) -> SendRequest<'a> {
        SendRequest {
            validate_only: self.validate_only,
            message: Message {
                token,
                notification: Text {
                    title: &n.title,
                    body: &n.body,
                },
                data: Data(&n.data),
                android: Android {
                    priority: "high",
                    ttl: &self.ttl,
                    collapse_key: &n.collapse_id,
                    notification: AndroidNotification {
                        tag: &n.collapse_id,
                        channel_id: self.channel_id.as_deref(),
                    },
                },
                // An iPhone reached through FCM gets the same grouping as one reached directly.
                apns: ios.then(|| ApnsOverride {
                    headers: ApnsHeaders {
                        priority: "10",
                        push_type: "alert",
                        collapse_id: crate::push::apns::collapse_id(&n.collapse_id),
                    },
                    payload: ApnsOverridePayload {
                        aps: ApnsOverrideAps {
                            thread_id: &n.thread_id,
                            sound: "default",
                        },
                    },
                }),
            },
        }
    }
}

#[derive(Serialize)]
struct SendRequest<'a> {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    validate_only: bool,
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    notification: Text<'a>,
    data: Data<'a>,
    android: Android<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    apns: Option<ApnsOverride<'a>>,
}

#[derive(Serialize)]
struct Text<'a> {
    title: &'a str,
    body: &'a str,
}

/// The data pairs as a JSON object of strings.
struct Data<'a>(&'a [(String, String)]);

impl Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Android<'a> {
    priority: &'a str,
    ttl: &'a str,
    collapse_key: &'a str,
    notification: AndroidNotification<'a>,
}

#[derive(Serialize)]
struct AndroidNotification<'a> {
    tag: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ApnsOverride<'a> {
    headers: ApnsHeaders<'a>,
    payload: ApnsOverridePayload<'a>,
}

#[derive(Serialize)]
struct ApnsHeaders<'a> {
    #[serde(rename = "apns-priority")]
    priority: &'a str,
    #[serde(rename = "apns-push-type")]
    push_type: &'a str,
    #[serde(rename = "apns-collapse-id")]
    collapse_id: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct ApnsOverridePayload<'a> {
    aps: ApnsOverrideAps<'a>,
}

#[derive(Serialize)]
struct ApnsOverrideAps<'a> {
    #[serde(rename = "thread-id")]
    thread_id: &'a str,
    sound: &'a str,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn bodies(validate_only: bool) -> Bodies {
        let settings = FcmSettings {
            endpoint: "http://127.0.0.1:9".into(),
            credentials: String::new(),
            project_id: "p".into(),
            concurrency: 0,
            connections: 0,
            ttl_secs: 3600,
            android_channel_id: "talks".into(),
            request_timeout_secs: 5,
            quota_per_minute: 0,
        };
        Bodies::new(&settings, validate_only)
    }

    fn push(notification: &Arc<Notification>, token: &str, platform: &str) -> Push {
        Push {
            event_id: "e".into(),
            device: crate::audience::Device {
                id: 1,
                user_id: Some(2),
                provider: Some(crate::audience::Provider::Fcm),
                platform: Some(Platform::parse(platform)),
                app: Some(crate::apps::AppId::DEFAULT),
                token: token.into(),
                locale: None,
                updated_at: None,
            },
            content: notification.clone().into(),
        }
    }

    /// The spliced body is byte for byte what serialising the whole request gives, for tokens
    /// JSON must escape too, and each notification's template is its own.
    #[test]
    fn a_spliced_body_equals_the_whole_request_serialised() {
        let notification = |title: &str| {
            Arc::new(Notification {
                title: title.into(),
                body: "本文 \"quoted\"".into(),
                data: vec![
                    ("talk_id".into(), "42".into()),
                    ("url".into(), "x://t/42".into()),
                ],
                collapse_id: "talk-42".into(),
                thread_id: "program-7".into(),
            })
        };
        let (ja, en) = (notification("新しいトーク"), notification("New talk"));
        for validate_only in [false, true] {
            let fcm = bodies(validate_only);
            for n in [&ja, &en, &ja] {
                for platform in ["android", "ios", "web"] {
                    for token in [
                        "plain-token:APA91b",
                        "",
                        "q\"uote\\back\u{1}ctl",
                        "トークン",
                        "with space/slash",
                    ] {
                        let p = push(n, token, platform);
                        let whole =
                            serde_json::to_vec(&fcm.request(token, n, platform == "ios")).unwrap();
                        assert_eq!(
                            String::from_utf8(fcm.body(&p)).unwrap(),
                            String::from_utf8(whole).unwrap()
                        );
                    }
                }
            }
        }
    }
}

//! Provider requests built before the push, by whoever accepted them (the HTTP API's Gaurun
//! notifications, mapped in `api::gaurun_map`), as opposed to a notification rendered from a talk
//! that each pusher turns into its provider's request. The pusher adds only what is its own: the
//! token, FCM's `validate_only`, the APNs topic.
//!
//! A new provider adds a variant here and its arm in that provider's pusher.

use serde_json::{Map, Value};

/// A request body built for one provider, the same for every token it goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Prebuilt {
    Fcm(FcmPrebuilt),
    Apns(ApnsPrebuilt),
}

/// An FCM v1 `message` without its `token`.
#[derive(Debug, Clone, PartialEq)]
pub struct FcmPrebuilt {
    pub message: Map<String, Value>,
}

/// An APNs payload and the headers that go with it (the topic is the pusher's).
#[derive(Debug, Clone, PartialEq)]
pub struct ApnsPrebuilt {
    pub payload: bytes::Bytes,
    pub push_type: ApnsPushType,
    /// `apns-expiration` as a Unix time; `None`: the pusher's own time to live.
    pub expiration: Option<u64>,
}

/// The `apns-push-type` values a prebuilt payload may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsPushType {
    Alert,
    Background,
}

impl ApnsPushType {
    pub fn as_str(self) -> &'static str {
        match self {
            ApnsPushType::Alert => "alert",
            ApnsPushType::Background => "background",
        }
    }
}

impl FcmPrebuilt {
    /// The `messages:send` body for `token`.
    pub(crate) fn body(&self, token: &str, validate_only: bool) -> Vec<u8> {
        let mut message = self.message.clone();
        message.insert("token".into(), Value::String(token.into()));
        let mut request = Map::new();
        request.insert("message".into(), Value::Object(message));
        if validate_only {
            request.insert("validate_only".into(), Value::Bool(true));
        }
        // Serialising a map of JSON values cannot fail.
        serde_json::to_vec(&request).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_token_and_validate_only_are_the_pusher_s_additions() {
        let Value::Object(message) = json!({"data": {"message": "hi"}}) else {
            unreachable!()
        };
        let fcm = FcmPrebuilt { message };
        let body: Value = serde_json::from_slice(&fcm.body("tok\"1", false)).unwrap();
        assert_eq!(
            body,
            json!({"message": {"data": {"message": "hi"}, "token": "tok\"1"}})
        );
        let body: Value = serde_json::from_slice(&fcm.body("t", true)).unwrap();
        assert_eq!(body["validate_only"], json!(true));
    }
}

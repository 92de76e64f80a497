//! The `Idempotency-Key` header of `POST /push` and `POST /v1/events`: a request repeating a key
//! seen within the dedup window is answered as the first one was, and queues nothing again (the
//! record is written by the same script that queues the request: `backlog`, `events`). The key
//! is a client's string of 1 to 255 visible ASCII characters (the IETF draft's and Stripe's
//! rule); it is kept hashed, per route and app.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(super) const HEADER: &str = "idempotency-key";
const MAX_LEN: usize = 255;

/// The request's key, if it has one; a key that breaks the rule is refused with the reason.
pub(super) fn key(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .filter(|k| (1..=MAX_LEN).contains(&k.len()))
        .filter(|k| k.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    match text {
        Some(key) => Ok(Some(key.to_string())),
        None => Err(format!(
            "Idempotency-Key must be 1 to {MAX_LEN} visible ASCII characters"
        )),
    }
}

/// An answer of JSON text, first given or given again.
pub(super) fn answer(status: StatusCode, body: String) -> Response {
    let json = HeaderValue::from_static("application/json");
    (status, [(header::CONTENT_TYPE, json)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_to_255_visible_characters() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_str(value).unwrap());
            key(&h)
        };
        assert_eq!(key(&HeaderMap::new()), Ok(None));
        assert_eq!(with("order-42"), Ok(Some("order-42".into())));
        assert!(with("").is_err());
        assert!(with(&"k".repeat(256)).is_err());
        assert!(with("tab\there").is_err());
    }
}

//! Google's OAuth2 token endpoint, as far as the notifier uses it: the JWT-bearer grant. It checks
//! the grant type and the scope the assertion asks for, not Google's signature, and issues
//! `ya29.stand-in-…` access tokens that the FCM endpoint then accepts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;

/// The OAuth2 JWT-bearer grant, as Google's token endpoint answers it.
pub(crate) async fn token(State(shared): State<Arc<Shared>>, body: String) -> Response {
    shared
        .counters
        .token_requests
        .fetch_add(1, Ordering::Relaxed);
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let grant_ok = form.get("grant_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:grant-type:jwt-bearer");
    let scope_ok = form
        .get("assertion")
        .and_then(|jwt| jwt_claims(jwt))
        .and_then(|claims| {
            claims["scope"]
                .as_str()
                .map(|s| s.contains("firebase.messaging"))
        })
        .unwrap_or(false);
    if !grant_ok || !scope_ok {
        let body =
            json!({"error": "invalid_grant", "error_description": "Invalid JWT grant or scope."});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let n = shared.counters.token_requests.load(Ordering::Relaxed);
    let mut access_token = format!("ya29.stand-in-{n}-{}.", fastrand::u64(..));
    // Every FCM request carries the token: a short one would hide what sending Google's costs.
    while access_token.len() < shared.config.access_token_bytes {
        access_token.push(fastrand::alphanumeric());
    }
    shared
        .counters
        .issued
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(access_token.clone());
    Json(json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

/// Decodes `application/x-www-form-urlencoded` text.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The claims of a JWT, unverified: the stand-in checks shape and scope, not Google's signature.
fn jwt_claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    serde_json::from_slice(&bytes).ok()
}

pub(crate) fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_percent_decoded() {
        assert_eq!(
            percent_decode("urn%3Aietf%3Aparams+x%2By%3D"),
            "urn:ietf:params x+y="
        );
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn jwt_claims_are_read_from_base64url() {
        // {"scope":"https://www.googleapis.com/auth/firebase.messaging"}
        let jwt = "e30.eyJzY29wZSI6Imh0dHBzOi8vd3d3Lmdvb2dsZWFwaXMuY29tL2F1dGgvZmlyZWJhc2UubWVzc2FnaW5nIn0.sig";
        assert_eq!(
            jwt_claims(jwt).unwrap()["scope"],
            "https://www.googleapis.com/auth/firebase.messaging"
        );
    }
}

//! The VAPID check of the Web Push service (RFC 8292), as push services make it: `Authorization:
//! vapid t=<JWT>, k=<key>`; the JWT ES256-signed with `k`, `k` the subscription's
//! `applicationServerKey` when it was made with one, and the claims: `aud` the subscription's
//! origin, `exp` in the future and at most 24 hours away (by the stand-in's clock), `sub` a
//! `mailto:` or `https:` contact.

use std::sync::PoisonError;

use axum::http::{HeaderMap, header};
use serde_json::Value;

use crate::Shared;
use crate::oauth::base64url_decode;
use crate::webpush::Subscribed;

/// RFC 8292 §2: a token expiring later than this is refused.
const MAX_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// Why the request's VAPID token is refused, if it is.
pub(crate) fn check_vapid(
    shared: &Shared,
    subscribed: &Subscribed,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization header")?;
    let (scheme, params) = value.split_once(' ').ok_or("not a vapid authorization")?;
    if !scheme.eq_ignore_ascii_case("vapid") {
        return Err("not a vapid authorization");
    }
    let param = |name: &str| {
        params.split(',').find_map(|p| {
            let (key, value) = p.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim())
        })
    };
    let jwt = param("t").ok_or("no t= token")?;
    let k = param("k").ok_or("no k= key")?;
    let key = base64url_decode(k)
        .filter(|k| k.len() == 65)
        .ok_or("k= is not a P-256 public key")?;
    if subscribed.server_key.as_ref().is_some_and(|s| *s != key) {
        return Err("the VAPID key is not the one the subscription was made with");
    }
    verify_signature(shared, jwt, k, &key)?;
    let part = |i: usize| -> Option<Value> {
        serde_json::from_slice(&base64url_decode(jwt.split('.').nth(i)?)?).ok()
    };
    let head = part(0).ok_or("the token's header is not JSON")?;
    if head["alg"] != "ES256" {
        return Err("the token is not ES256");
    }
    let claims = part(1).ok_or("the token's claims are not JSON")?;
    if claims["aud"].as_str() != Some(subscribed.origin.as_str()) {
        return Err("aud is not the push service's origin");
    }
    let now = shared.unix_now();
    match claims["exp"].as_u64() {
        Some(exp) if exp > now && exp <= now + MAX_LIFETIME_SECS => {}
        _ => return Err("exp is not within the next 24 hours"),
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err("sub is not a mailto: or https: contact");
    }
    Ok(())
}

/// The signature of `jwt` checked with `key` (`k` as sent), once per token and key.
fn verify_signature(shared: &Shared, jwt: &str, k: &str, key: &[u8]) -> Result<(), &'static str> {
    let seen = format!("{jwt} {k}");
    let verified = &shared.webpush.verified;
    if verified
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&seen)
    {
        return Ok(());
    }
    let (signed, signature) = jwt.rsplit_once('.').ok_or("the token is not a JWT")?;
    let signature = base64url_decode(signature).ok_or("the signature is not base64url")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "the token's signature does not verify with k=")?;
    verified
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(seen);
    Ok(())
}

//! VAPID (RFC 8292): how a push service knows the pushes for a subscription come from the server
//! the browser subscribed with. Each request carries `Authorization: vapid t=<JWT>, k=<public
//! key>`, the JWT ES256-signed with our key and claiming the push service's origin (`aud`), an
//! expiry within 24 hours (`exp`) and a contact (`sub`).
//!
//! A token is signed once per origin and reused by every push to it until an hour before it
//! expires (12 hours after signing), so a fan-out signs a handful of tokens, not one per push.
//! What may change here: the two durations, within RFC 8292's day.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::settings::WebPushSettings;
use crate::push::jwt::{self, Clock, Es256Key};

/// How long a token claims to be valid (`exp` - now); RFC 8292 §2 allows at most 24 hours.
pub(crate) const LIFETIME_SECS: u64 = 12 * 60 * 60;
/// A token this close to its expiry is replaced by the next push that needs one, so no push
/// arrives with a token that expires in flight or by a push service's clock running ahead.
pub(crate) const RENEW_BEFORE_SECS: u64 = 60 * 60;
const _: () = assert!(LIFETIME_SECS <= 24 * 60 * 60 && RENEW_BEFORE_SECS < LIFETIME_SECS);
/// Origins whose tokens are kept; past it the cache starts over (wildcards such as
/// `*.notify.windows.com` admit many hosts).
const MAX_ORIGINS: usize = 1024;

/// Why the VAPID key cannot be used; found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum VapidKeyError {
    #[error("cannot read WEBPUSH_VAPID_PRIVATE_KEY_PATH {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("WEBPUSH_VAPID_PRIVATE_KEY_PATH is not a usable P-256 private key")]
    Key(#[source] jwt::KeyError),
}

/// Signing failed: ring says no more than that.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("cannot sign the VAPID token")]
pub(crate) struct SigningError;

/// The VAPID key, with the tokens signed for each origin.
pub(crate) struct Vapid {
    key: Es256Key,
    /// `mailto:…` or `https:…`, checked by the settings.
    subject: String,
    /// The `k=` parameter: the public key, base64url. Browsers subscribe with the same key
    /// (`applicationServerKey`), so operators need it too.
    public_key: String,
    clock: Arc<dyn Clock>,
    tokens: RwLock<HashMap<String, Signed>>,
}

#[derive(Clone)]
struct Signed {
    header: http::HeaderValue,
    expires: u64,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("subject", &self.subject)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl Vapid {
    /// Reads the key the settings name.
    pub(crate) fn load(
        settings: &WebPushSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, VapidKeyError> {
        let path = &settings.vapid_private_key_path;
        let pem = std::fs::read(path).map_err(|source| VapidKeyError::Read {
            path: path.clone(),
            source,
        })?;
        let key = Es256Key::from_pem(&pem).map_err(VapidKeyError::Key)?;
        Ok(Self::new(key, settings.vapid_subject.trim(), clock))
    }

    pub(crate) fn new(key: Es256Key, subject: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            public_key: URL_SAFE_NO_PAD.encode(key.public_key()),
            key,
            subject: subject.to_string(),
            clock,
            tokens: RwLock::new(HashMap::new()),
        }
    }

    /// The public key, base64url: what `notifier check` shows and browsers subscribe with.
    pub(crate) fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Signs a token (kept nowhere), for `notifier check`: the key is usable, not only read.
    pub(crate) fn check(&self) -> Result<(), SigningError> {
        self.sign("https://push.example", self.clock.unix_now())
            .map(drop)
    }

    /// The `Authorization` header for a push to `origin` (`https://host[:port]`): the cached
    /// token while it has more than an hour left, else a new one.
    pub(crate) fn authorization(&self, origin: &str) -> Result<http::HeaderValue, SigningError> {
        let now = self.clock.unix_now();
        let fresh = |s: &&Signed| s.expires.saturating_sub(now) > RENEW_BEFORE_SECS;
        let tokens = self.tokens.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(signed) = tokens.get(origin).filter(fresh) {
            return Ok(signed.header.clone());
        }
        drop(tokens);
        let mut tokens = self.tokens.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(signed) = tokens.get(origin).filter(fresh) {
            return Ok(signed.header.clone());
        }
        let signed = self.sign(origin, now)?;
        if tokens.len() >= MAX_ORIGINS {
            tokens.clear();
        }
        tokens.insert(origin.to_string(), signed.clone());
        Ok(signed.header)
    }

    fn sign(&self, origin: &str, now: u64) -> Result<Signed, SigningError> {
        let expires = now + LIFETIME_SECS;
        let claims = serde_json::json!({"aud": origin, "exp": expires, "sub": self.subject});
        let jwt = self
            .key
            .sign(r#"{"typ":"JWT","alg":"ES256"}"#, &claims.to_string())
            .map_err(|_| SigningError)?;
        // Base64url, dots, commas and spaces only: always a valid header value.
        let header = http::HeaderValue::try_from(format!("vapid t={jwt}, k={}", self.public_key))
            .map_err(|_| SigningError)?;
        Ok(Signed { header, expires })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use serde_json::Value;

    use super::*;
    use crate::push::jwt::tests::ManualClock;

    fn vapid(clock: Arc<ManualClock>) -> (Vapid, Vec<u8>) {
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = Es256Key::from_pem(pair.serialize_pem().as_bytes()).unwrap();
        let vapid = Vapid::new(key, "mailto:ops@example.com", clock);
        (vapid, pair.public_key_raw().to_vec())
    }

    /// The token's claims, after checking its signature with `k=` as a push service does.
    fn claims(header: &http::HeaderValue) -> (Value, String) {
        let text = header.to_str().unwrap().strip_prefix("vapid t=").unwrap();
        let (jwt, k) = text.split_once(", k=").unwrap();
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        let public = URL_SAFE_NO_PAD.decode(k).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &public)
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .unwrap();
        let part = |i: usize| -> Value {
            serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(jwt.split('.').nth(i).unwrap())
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(part(0), serde_json::json!({"typ": "JWT", "alg": "ES256"}));
        (part(1), k.to_string())
    }

    #[test]
    fn a_token_claims_the_origin_a_day_at_most_and_the_subject_signed_with_k() {
        let clock = Arc::new(ManualClock(AtomicU64::new(1_800_000_000)));
        let (vapid, public) = vapid(clock);
        let header = vapid.authorization("https://fcm.googleapis.com").unwrap();
        let (claims, k) = claims(&header);
        assert_eq!(
            claims,
            serde_json::json!({
                "aud": "https://fcm.googleapis.com",
                "exp": 1_800_000_000 + LIFETIME_SECS,
                "sub": "mailto:ops@example.com",
            })
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(&k).unwrap(), public);
        assert_eq!(vapid.public_key(), k);
    }

    #[test]
    fn tokens_are_cached_per_origin_until_an_hour_before_they_expire() {
        let clock = Arc::new(ManualClock(AtomicU64::new(1_800_000_000)));
        let (vapid, _) = vapid(clock.clone());
        let fcm = vapid.authorization("https://fcm.googleapis.com").unwrap();
        let mozilla = vapid
            .authorization("https://updates.push.services.mozilla.com")
            .unwrap();
        assert_ne!(fcm, mozilla);
        assert_eq!(
            claims(&mozilla).0["aud"],
            "https://updates.push.services.mozilla.com"
        );
        clock
            .0
            .fetch_add(LIFETIME_SECS - RENEW_BEFORE_SECS - 1, Ordering::Relaxed);
        assert_eq!(
            vapid.authorization("https://fcm.googleapis.com").unwrap(),
            fcm
        );
        clock.0.fetch_add(1, Ordering::Relaxed);
        let renewed = vapid.authorization("https://fcm.googleapis.com").unwrap();
        assert_ne!(renewed, fcm);
        assert_eq!(
            claims(&renewed).0["exp"],
            1_800_000_000 + 2 * LIFETIME_SECS - RENEW_BEFORE_SECS
        );
    }
}

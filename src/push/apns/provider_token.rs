//! The provider token APNs wants on every request: an ES256 JWT (`{alg, kid}` / `{iss, iat}`)
//! signed with the .p8 key. Apple's rules: refresh it no more than once every 20 minutes and at
//! least once every 60 (`TooManyProviderTokenUpdates` / `ExpiredProviderToken` otherwise), so one
//! token is shared by every push and renewed once, by one caller, after 50 minutes.
//!
//! Time comes from a [`Clock`], so tests can run a simulated hour against a stand-in that judges
//! the token by the same clock. What may change here: the two durations, within Apple's window.

use std::sync::{Arc, PoisonError, RwLock};

use super::ApnsSettings;
use crate::push::jwt::Es256Key;
pub use crate::push::jwt::{Clock, SystemClock};

/// A token this old is replaced by the next push that needs one (Apple: at least every 60).
pub(crate) const RENEW_AFTER_SECS: u64 = 50 * 60;
/// A token younger than this is never replaced (Apple: no more than once every 20 minutes).
pub(crate) const KEEP_AT_LEAST_SECS: u64 = 20 * 60;

/// Why the .p8 key cannot be used; found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read APNS_KEY_PATH {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("APNS_KEY_PATH is not a usable P-256 (.p8) key")]
    Key(#[source] crate::push::jwt::KeyError),
}

/// Signing failed: ring says no more than that.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("cannot sign the APNs provider token")]
pub struct SigningError(#[source] pub ring::error::Unspecified);

/// A signed token, as the `authorization` header carries it, and when it was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    pub value: http::HeaderValue,
    /// Its `iat`, seconds since the Unix epoch.
    pub issued_at: u64,
}

/// What became of a token APNs called expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// A newer token is (or will be, on the next call) there: send once more.
    Renewed,
    /// The token is younger than 20 minutes: replacing it would break Apple's other rule, and
    /// a clock that far behind Apple's makes every new token look old too.
    TooSoon,
}

/// The provider token shared by every push of the process.
pub struct ProviderToken {
    key: Es256Key,
    key_id: String,
    team_id: String,
    clock: Arc<dyn Clock>,
    /// Read by every push; written (by one caller at a time) only to sign a new token.
    current: RwLock<Option<Bearer>>,
}

impl ProviderToken {
    /// Loads the .p8 key the settings name; nothing is signed yet.
    pub fn load(settings: &ApnsSettings) -> Result<Self, KeyError> {
        Self::load_with_clock(settings, Arc::new(SystemClock))
    }

    /// The same, reading the time from `clock`.
    pub fn load_with_clock(
        settings: &ApnsSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, KeyError> {
        let pem = std::fs::read(&settings.key_path).map_err(|source| KeyError::Read {
            path: settings.key_path.clone(),
            source,
        })?;
        let key = Es256Key::from_pem(&pem).map_err(KeyError::Key)?;
        Ok(Self {
            key,
            key_id: settings.key_id.clone(),
            team_id: settings.team_id.clone(),
            clock,
            current: RwLock::new(None),
        })
    }

    /// The token to send now: the current one while younger than 50 minutes, else a new one.
    /// Callers that find it old queue on the write lock; the first signs, the rest take its token.
    pub fn bearer(&self) -> Result<Bearer, SigningError> {
        let now = self.clock.unix_now();
        let fresh = |b: &&Bearer| now.saturating_sub(b.issued_at) < RENEW_AFTER_SECS;
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(bearer) = current.as_ref().filter(fresh) {
            return Ok(bearer.clone());
        }
        drop(current);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(bearer) = current.as_ref().filter(fresh) {
            return Ok(bearer.clone());
        }
        let bearer = self.sign(now)?;
        *current = Some(bearer.clone());
        Ok(bearer)
    }

    /// APNs answered `ExpiredProviderToken` to a request that carried `sent`: drops it so the
    /// next [`ProviderToken::bearer`] signs anew, unless it is too young to replace. Many pushes
    /// in flight with the same token report it at once; only the first drops it.
    pub fn expired(&self, sent: &Bearer) -> Renewal {
        let now = self.clock.unix_now();
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        match current.as_ref() {
            Some(c) if c != sent => Renewal::Renewed,
            Some(c) if now.saturating_sub(c.issued_at) < KEEP_AT_LEAST_SECS => Renewal::TooSoon,
            _ => {
                *current = None;
                Renewal::Renewed
            }
        }
    }

    fn sign(&self, issued_at: u64) -> Result<Bearer, SigningError> {
        // serde_json quotes the ids, whatever they hold.
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let header = format!(r#"{{"alg":"ES256","kid":{}}}"#, quoted(&self.key_id));
        let claims = format!(r#"{{"iss":{},"iat":{issued_at}}}"#, quoted(&self.team_id));
        let token = format!(
            "bearer {}",
            self.key.sign(&header, &claims).map_err(SigningError)?
        );
        // Base64url and dots only: always a valid header value. Indexed by HPACK like FCM's
        // bearer: sent in full once per connection and token, not per push.
        let value = http::HeaderValue::try_from(token)
            .map_err(|_| SigningError(ring::error::Unspecified))?;
        Ok(Bearer { value, issued_at })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::push::jwt::tests::ManualClock as Manual;

    fn token(clock: Arc<Manual>) -> (ProviderToken, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("AuthKey.p8");
        std::fs::write(&path, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let mut settings = crate::push::shipped::<super::ApnsSettings>("apns");
        settings.key_path = path.display().to_string();
        settings.key_id = "ABC123DEFG".into();
        settings.team_id = "DEF123GHIJ".into();
        (
            ProviderToken::load_with_clock(&settings, clock).unwrap(),
            dir,
        )
    }

    #[test]
    fn a_provider_token_is_an_es256_jwt_with_the_key_id_team_and_issue_time() {
        let (token, _dir) = token(Arc::new(Manual(AtomicU64::new(1_800_000_000))));
        let bearer = token.bearer().unwrap();
        let text = bearer
            .value
            .to_str()
            .unwrap()
            .strip_prefix("bearer ")
            .unwrap();
        let parts: Vec<&str> = text.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |part| String::from_utf8(URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
        assert_eq!(decode(parts[0]), r#"{"alg":"ES256","kid":"ABC123DEFG"}"#);
        assert_eq!(decode(parts[1]), r#"{"iss":"DEF123GHIJ","iat":1800000000}"#);
        assert_eq!(parts[2].len(), 86, "a 64-byte P-256 signature");
        assert_eq!(
            token.bearer().unwrap(),
            bearer,
            "cached, not re-signed per push"
        );
    }

    #[test]
    fn a_token_lives_50_minutes_and_an_expired_answer_renews_it_only_after_20() {
        let clock = Arc::new(Manual(AtomicU64::new(1_800_000_000)));
        let (token, _dir) = token(clock.clone());
        let advance = |secs| clock.0.fetch_add(secs, Ordering::Relaxed);
        let first = token.bearer().unwrap();
        advance(RENEW_AFTER_SECS - 1);
        assert_eq!(token.bearer().unwrap(), first);
        advance(1);
        let second = token.bearer().unwrap();
        assert_eq!(second.issued_at, first.issued_at + RENEW_AFTER_SECS);

        // Apple calls the 10-minute-old token expired: a clock far behind Apple's; renewing now
        // would be a second update within 20 minutes.
        advance(10 * 60);
        assert_eq!(token.expired(&second), Renewal::TooSoon);
        assert_eq!(token.bearer().unwrap(), second);
        // At 25 minutes it is renewed, once, however many pushes report it.
        advance(15 * 60);
        assert_eq!(token.expired(&second), Renewal::Renewed);
        let third = token.bearer().unwrap();
        assert_ne!(third, second);
        assert_eq!(token.expired(&second), Renewal::Renewed);
        assert_eq!(token.bearer().unwrap(), third);
    }
}

//! OAuth2 access tokens for FCM: the [`AccessTokens`] seam, [`ServiceAccountTokens`] (minted by
//! gcp_auth from a service account, cached, renewed by one task while the others keep the old
//! token). How a failed fetch is sorted (worth another try, or
//! our credentials refused) is decided here; what a push does about it, in `classify`.

use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

use gcp_auth::TokenProvider;
use tokio::time::Instant;

use super::FcmError;
use crate::telemetry::ErrorChain;

/// The OAuth2 scope for sending with FCM.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A token is renewed this long before it expires. gcp_auth hands back its cached token until 20 s
/// before expiry, so asking earlier would only get the same token again.
const RENEW_BEFORE: Duration = Duration::from_secs(15);
/// A token endpoint that keeps refusing for this long means the credentials are wrong; shorter
/// refusals (Google's 5xx look the same through gcp_auth) are retried.
const REFUSED_FOR: Duration = Duration::from_secs(30);
/// How long a failed token fetch answers for every caller before the next try.
const FAILURE_SHARED_FOR: Duration = Duration::from_secs(5);

/// Why no access token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TokenError {
    /// The key is unusable, or the token endpoint has refused the service account for a while
    /// (revoked key, wrong token_uri): every push would fail alike.
    #[error("the token endpoint refused the service account: {0}")]
    Refused(String),
    /// No token this time (timeout, network, a refusal not yet persistent); worth another try.
    #[error("no access token: {0}")]
    Unavailable(String),
}

/// Where bearer tokens come from.
#[async_trait::async_trait]
pub(crate) trait AccessTokens: Send + Sync {
    /// An `Authorization` header value, `Bearer …`.
    async fn bearer(&self) -> Result<http::HeaderValue, TokenError>;

    /// The cached value while it is fresh, without awaiting: the path nearly every push takes,
    /// kept out of `bearer`'s future, which is large (it holds the token fetch) and is boxed
    /// and moved on every call.
    fn fresh(&self) -> Option<http::HeaderValue> {
        None
    }
}

/// Access tokens minted by gcp_auth from a service-account JSON (whose `token_uri` it honours),
/// cached until shortly before they expire. One task renews; the others keep the old token
/// meanwhile or wait for the new one.
pub(crate) struct ServiceAccountTokens {
    account: gcp_auth::CustomServiceAccount,
    timeout: Duration,
    cached: RwLock<Option<(http::HeaderValue, Instant)>>,
    renewing: tokio::sync::Mutex<Failures>,
}

/// Recent failed fetches, shared: while the endpoint fails, tasks waiting for a token get the
/// same answer at once instead of each asking again.
#[derive(Default)]
struct Failures {
    last: Option<(TokenError, Instant)>,
    /// When the current run of refusals began.
    refused_since: Option<Instant>,
}

impl ServiceAccountTokens {
    pub(crate) fn from_file(path: &Path, timeout: Duration) -> Result<Self, FcmError> {
        let account = gcp_auth::CustomServiceAccount::from_file(path).map_err(|source| {
            FcmError::ServiceAccount {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(Self {
            account,
            timeout,
            cached: RwLock::new(None),
            renewing: tokio::sync::Mutex::new(Failures::default()),
        })
    }

    pub(crate) fn project_id(&self) -> Option<&str> {
        self.account.project_id()
    }

    fn cached(&self) -> Option<http::HeaderValue> {
        let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((value, renew_at)) if Instant::now() < *renew_at => Some(value.clone()),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl AccessTokens for ServiceAccountTokens {
    async fn bearer(&self) -> Result<http::HeaderValue, TokenError> {
        if let Some(value) = self.cached() {
            return Ok(value);
        }
        let mut failures = self.renewing.lock().await;
        if let Some(value) = self.cached() {
            return Ok(value); // another task renewed it while this one waited
        }
        if let Some((error, at)) = &failures.last
            && at.elapsed() < FAILURE_SHARED_FOR
        {
            return Err(error.clone());
        }
        // gcp_auth has no timeout of its own.
        let fetched = tokio::time::timeout(self.timeout, self.account.token(&[SCOPE])).await;
        let token = match fetched {
            Ok(Ok(token)) => token,
            Err(_) => {
                let e = TokenError::Unavailable(format!("no answer within {:?}", self.timeout));
                failures.last = Some((e.clone(), Instant::now()));
                return Err(e);
            }
            Ok(Err(e)) => {
                let e = classify_token_error(&e, &mut failures.refused_since);
                failures.last = Some((e.clone(), Instant::now()));
                return Err(e);
            }
        };
        *failures = Failures::default();
        // Not marked sensitive, and HPACK still never indexes it: h2 leaves every `authorization`
        // value out of its table, so each push sends the token Huffman-coded again (about 1 % of
        // a fan-out's CPU, README "Per-push cost"). Logs never show it.
        let value = http::HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
            .map_err(|_| TokenError::Refused("the access token is not a valid header".into()))?;
        let lifetime = (token.expires_at() - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE);
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) = Some((value.clone(), renew_at));
        Ok(value)
    }

    fn fresh(&self) -> Option<http::HeaderValue> {
        self.cached()
    }
}

/// Sorts a gcp_auth failure: network trouble is retryable, an unusable key is not, and a refusal
/// by the token endpoint (gcp_auth cannot tell a 4xx from a 5xx) becomes final once it persists.
fn classify_token_error(e: &gcp_auth::Error, refused_since: &mut Option<Instant>) -> TokenError {
    match e {
        gcp_auth::Error::Str("token request failed") => {
            let since = *refused_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= REFUSED_FOR {
                TokenError::Refused(format!("{e}, for {:?}", since.elapsed()))
            } else {
                TokenError::Unavailable(e.to_string())
            }
        }
        gcp_auth::Error::Str(_) => TokenError::Refused(e.to_string()),
        _ => TokenError::Unavailable(ErrorChain(e).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_token_endpoint_is_retried_until_the_refusals_persist() {
        let refused = gcp_auth::Error::Str("token request failed");
        let mut since = None;
        assert!(matches!(
            classify_token_error(&refused, &mut since),
            TokenError::Unavailable(_)
        ));
        since = Some(Instant::now() - REFUSED_FOR);
        assert!(matches!(
            classify_token_error(&refused, &mut since),
            TokenError::Refused(_)
        ));
        let bad_key = gcp_auth::Error::Str("invalid private key in credentials");
        assert!(matches!(
            classify_token_error(&bad_key, &mut None),
            TokenError::Refused(_)
        ));
        let io = gcp_auth::Error::Io("read", std::io::Error::other("reset"));
        assert!(matches!(
            classify_token_error(&io, &mut None),
            TokenError::Unavailable(_)
        ));
    }
}

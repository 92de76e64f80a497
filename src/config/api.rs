//! The `[api]` settings of the HTTP API (`crate::api`): its address, bearer tokens and limits.
//! Kept here rather than beside the API, as the status listener's address is: the API reads the
//! claims, which read the settings, so the API's settings cannot live above them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The `[api]` settings; the address and the tokens come from the environment only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// `NOTIFIER_API_ADDR`; unset: no API.
    #[serde(skip)]
    pub addr: Option<SocketAddr>,
    /// `NOTIFIER_API_TOKENS`.
    #[serde(skip)]
    pub tokens: ApiTokens,
    /// `NOTIFIER_API_ALLOW_UNAUTHENTICATED`: a non-loopback address without tokens.
    #[serde(skip)]
    pub allow_unauthenticated: bool,
    /// Gaurun's `core.notification_max`: notifications in one `POST /push`.
    pub notification_max: usize,
    /// Gaurun's `core.allows_empty_message`.
    pub allow_empty_message: bool,
    /// A larger request body is refused with 413 before it is read whole.
    pub body_limit_bytes: usize,
    /// A request that takes longer (its body included) is answered 503.
    pub request_timeout_secs: u64,
    /// Gaurun's `core.queue_num`: notifications waiting in the backlog, all replicas together.
    pub backlog_max: usize,
    /// The `Retry-After` of a 503 for a full backlog.
    pub retry_after_secs: u64,
}

impl ApiSettings {
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Whether anyone who reaches the address may use the API: no tokens on a non-loopback
    /// address is refused at start-up unless explicitly allowed.
    pub(crate) fn is_open_beyond_loopback(&self) -> bool {
        self.addr.is_some_and(|a| !a.ip().is_loopback()) && self.tokens.is_empty()
    }
}

/// The bearer tokens, kept as digests: the secrets are never printed (`Debug` shows the count),
/// and comparing digests takes the same time wherever a guess differs.
#[derive(Clone, Default)]
pub struct ApiTokens(Arc<[[u8; 32]]>);

impl ApiTokens {
    /// From `a,b,c`; blanks around and between commas are ignored.
    pub(crate) fn parse(list: &str) -> Self {
        let digests: Vec<[u8; 32]> = list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(digest)
            .collect();
        Self(digests.into())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no token is required, or `presented` is one of them.
    pub(crate) fn admit(&self, presented: Option<&str>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(presented) = presented else {
            return false;
        };
        let presented = digest(presented);
        self.0.contains(&presented)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiTokens({} set)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_admit_only_their_own_and_never_print() {
        let tokens = ApiTokens::parse(" alpha, ,beta ");
        assert_eq!(tokens.len(), 2);
        assert!(tokens.admit(Some("alpha")) && tokens.admit(Some("beta")));
        assert!(!tokens.admit(Some("alph")) && !tokens.admit(None));
        assert_eq!(format!("{tokens:?}"), "ApiTokens(2 set)");
        assert!(ApiTokens::parse("").admit(None), "no tokens: open");
    }
}

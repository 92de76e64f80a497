//! The `[api]` settings of the HTTP API (`crate::api`): its address, bearer tokens, how strictly
//! `POST /push` refuses, and the limits of its listener.
//! Kept here rather than beside the API, as the status listener's address is: the API reads the
//! claims, which read the settings, so the API's settings cannot live above them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::http_server::Limits;

/// The shortest bearer token start-up accepts: a short one can be guessed.
pub(crate) const MIN_TOKEN_CHARS: usize = 16;

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
    /// `POST /push` refuses the whole request (400) for one notification it would leave out,
    /// instead of Gaurun's 200 with that notification dropped.
    pub strict: bool,
    /// A larger request body is refused with 413 before it is read whole.
    pub body_limit_bytes: usize,
    /// A request that takes longer (its body included) is answered 503.
    pub request_timeout_secs: u64,
    /// Gaurun's `core.queue_num`: notifications waiting in the backlog, all replicas together.
    pub backlog_max: usize,
    /// The `Retry-After` of a 503 for a full backlog.
    pub retry_after_secs: u64,
    /// A connection that has not sent a whole request head within this is closed (at most 30).
    pub header_timeout_secs: u64,
    /// A connection on which nothing moved for this long, no request in hand, is closed.
    pub idle_timeout_secs: u64,
    /// Connections open at once; more wait, unaccepted, until one closes.
    pub max_connections: usize,
}

impl ApiSettings {
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The limits of the API's listener.
    pub(crate) fn listener_limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
        }
    }

    /// Whether anyone who reaches the address may use the API: no tokens on a non-loopback
    /// address is refused at start-up unless explicitly allowed.
    pub(crate) fn is_open_beyond_loopback(&self) -> bool {
        self.addr.is_some_and(|a| !a.ip().is_loopback()) && self.tokens.is_empty()
    }
}

/// The bearer tokens, kept as digests: the secrets are never printed (`Debug` shows the count),
/// and a presented token is compared with every one of them, each byte, whatever matches, so the
/// time taken says nothing about how close a guess came.
#[derive(Clone, Default)]
pub struct ApiTokens(Arc<[[u8; 32]]>);

impl ApiTokens {
    /// From `a,b,c`; blanks around and between commas are ignored. A token shorter than
    /// [`MIN_TOKEN_CHARS`] is refused (the reason does not repeat it).
    pub(crate) fn parse(list: &str) -> Result<Self, String> {
        let tokens: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(at) = tokens
            .iter()
            .position(|t| t.chars().count() < MIN_TOKEN_CHARS)
        {
            return Err(format!(
                "token {} of the list is shorter than {MIN_TOKEN_CHARS} characters",
                at + 1
            ));
        }
        Ok(Self(tokens.into_iter().map(digest).collect()))
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
        let mut found = 0u8;
        for known in self.0.iter() {
            let differ = known
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            // `black_box`: the compiler may not turn the fold into an early exit.
            found |= u8::from(std::hint::black_box(differ) == 0);
        }
        found == 1
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

    const ALPHA: &str = "alpha-0123456789";
    const BETA: &str = "beta-0123456789ab";

    #[test]
    fn tokens_admit_only_their_own_and_never_print() {
        let tokens = ApiTokens::parse(&format!(" {ALPHA}, ,{BETA} ")).unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens.admit(Some(ALPHA)) && tokens.admit(Some(BETA)));
        assert!(!tokens.admit(Some(&ALPHA[1..])) && !tokens.admit(None));
        assert!(!tokens.admit(Some("")));
        assert_eq!(format!("{tokens:?}"), "ApiTokens(2 set)");
        assert!(ApiTokens::parse("").unwrap().admit(None), "no tokens: open");
    }

    #[test]
    fn a_short_token_is_refused_without_repeating_it() {
        let err = ApiTokens::parse(&format!("{ALPHA},tiny-tok")).unwrap_err();
        assert!(err.contains("token 2") && err.contains("16"), "{err}");
        assert!(!err.contains("tiny-tok") && !err.contains(ALPHA), "{err}");
        assert!(ApiTokens::parse(&"x".repeat(MIN_TOKEN_CHARS)).is_ok());
    }
}

//! Sending one push: the [`Pusher`] trait that every provider implements, what a push carries,
//! and the outcomes, shaped by what the fan-out does next (count, prune, or report).
//!
//! Providers never touch the database; an unregistered token is an outcome that the fan-out acts
//! on, so pruning is batched and dry runs never prune.

pub mod dry_run;

use std::fmt;
use std::sync::Arc;

use crate::audience::Device;
use crate::content::Notification;

/// One push: a device and the notification for its locale.
#[derive(Debug, Clone)]
pub struct Push {
    pub event_id: Arc<str>,
    pub device: Device,
    pub notification: Arc<Notification>,
}

/// What became of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The provider accepted it (or, in a dry run, would have been asked to).
    Sent,
    /// The token is dead; the device should stop receiving pushes.
    Unregistered { reason: String },
    /// It was not delivered, and retrying would not help or has not helped.
    Failed { reason: String },
    /// It was never attempted (unknown provider, provider paused).
    Skipped { reason: String },
}

/// A way to deliver pushes. Implementations must be cheap to share across tasks.
#[async_trait::async_trait]
pub trait Pusher: Send + Sync + 'static {
    async fn push(&self, push: &Push) -> PushOutcome;
}

/// A device token as it may appear in logs: the first 8 characters, then `…`.
pub struct MaskedToken<'a>(pub &'a str);

impl fmt::Display for MaskedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: String = self.0.chars().take(8).collect();
        write!(f, "{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked_after_eight_characters() {
        assert_eq!(MaskedToken("abcdefghijklmnop").to_string(), "abcdefgh…");
        assert_eq!(MaskedToken("abc").to_string(), "abc…");
        assert_eq!(
            MaskedToken("トークントークン長い").to_string(),
            "トークントークン…"
        );
    }
}

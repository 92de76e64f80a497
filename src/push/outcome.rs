//! What became of one attempt to send a push, shaped by what the fan-out does next: count it,
//! prune the token, retry, report, or pause the provider. A provider's classifier builds these;
//! the fan-out, the retry loop, the metrics and the pruner read them as types, never as text.
//!
//! The `Display` forms are what logs, `disabled_reason` and `notifier send` have always printed
//! (`fcm:UNREGISTERED`, `fcm:INVALID_ARGUMENT: message`, `apns:transport: reset`): change them
//! only with the operators who grep for them.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::audience::Provider;

/// What became of one attempt to send a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The provider accepted it (or, in a dry run, would have been asked to).
    Delivered,
    /// The token is dead: disable the device. `since` is when the provider last saw it invalid
    /// (APNs 410); a device registered after that keeps its token.
    Unregistered {
        reason: Reason,
        since: Option<DateTime<Utc>>,
    },
    /// Worth another try later: 5xx, 429, timeouts, resets, GOAWAY.
    Retryable {
        reason: Reason,
        retry_after: Option<Duration>,
        /// A quota was exceeded: wait at least the quota delay (FCM asks for a minute).
        quota: bool,
    },
    /// The request itself is wrong (payload, topic…); retrying cannot help, the token stays.
    Rejected { reason: Reason },
    /// The provider refused our credentials: every further push would fail the same way.
    CredentialsRejected {
        reason: Reason,
        /// The setting the operator has to fix.
        setting: &'static str,
        /// Which of the provider's pushes fail alike, and so are paused.
        scope: PauseScope,
    },
    /// Not attempted (provider not configured or paused, unknown provider).
    Skipped { reason: String },
}

impl PushOutcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            PushOutcome::Delivered => OutcomeKind::Delivered,
            PushOutcome::Unregistered { .. } => OutcomeKind::Unregistered,
            PushOutcome::Retryable { .. } => OutcomeKind::Retryable,
            PushOutcome::Rejected { .. } => OutcomeKind::Rejected,
            PushOutcome::CredentialsRejected { .. } => OutcomeKind::CredentialsRejected,
            PushOutcome::Skipped { .. } => OutcomeKind::Skipped,
        }
    }

    /// A low-cardinality label for logs and metrics.
    pub fn label(&self) -> &'static str {
        self.kind().label()
    }

    /// What the provider said, for every outcome but a delivery and a skip.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            PushOutcome::Unregistered { reason, .. }
            | PushOutcome::Retryable { reason, .. }
            | PushOutcome::Rejected { reason }
            | PushOutcome::CredentialsRejected { reason, .. } => Some(reason),
            PushOutcome::Delivered | PushOutcome::Skipped { .. } => None,
        }
    }
}

/// The kinds of [`PushOutcome`], for counting: `notifier_pushes_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    Delivered,
    Unregistered,
    Retryable,
    Rejected,
    CredentialsRejected,
    Skipped,
}

impl OutcomeKind {
    /// Every kind, in [`OutcomeKind::index`] order.
    pub const ALL: [OutcomeKind; 6] = [
        OutcomeKind::Delivered,
        OutcomeKind::Unregistered,
        OutcomeKind::Retryable,
        OutcomeKind::Rejected,
        OutcomeKind::CredentialsRejected,
        OutcomeKind::Skipped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::Unregistered => "unregistered",
            OutcomeKind::Retryable => "retryable",
            OutcomeKind::Rejected => "rejected",
            OutcomeKind::CredentialsRejected => "credentials_rejected",
            OutcomeKind::Skipped => "skipped",
        }
    }

    /// Its position in [`OutcomeKind::ALL`], for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which pushes a credentials rejection stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseScope {
    /// Every push through the provider.
    Provider,
    /// Only devices that are not Android: FCM's THIRD_PARTY_AUTH_ERROR, where the APNs key or web
    /// push credentials in the Firebase project are wrong and Android devices are unaffected.
    NonAndroid,
}

impl PauseScope {
    pub const ALL: [PauseScope; 2] = [PauseScope::Provider, PauseScope::NonAndroid];

    /// Its position in [`PauseScope::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a push failed, as the provider said it: a short `code` (the provider's error code, an
/// HTTP status, or a transport stage) and the provider's words about it, if any.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reason {
    provider: Provider,
    code: Cow<'static, str>,
    detail: Option<String>,
}

/// Longest code used as a metric label: longer ones are cut, so a provider cannot blow up the
/// label's cardinality with prose.
const LABEL_CHARS: usize = 32;

impl Reason {
    pub fn new(provider: Provider, code: impl Into<Cow<'static, str>>) -> Self {
        Self {
            provider,
            code: code.into(),
            detail: None,
        }
    }

    /// A reason with the provider's (or the transport's) words after the code.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A reason with no code, only words: our own credentials refused before any request.
    pub fn uncoded(provider: Provider, detail: impl Into<String>) -> Self {
        Self::new(provider, "").with_detail(detail)
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The code as a metric label (`UNAVAILABLE`, `timeout`, `HTTP_503`): never the message,
    /// at most 32 characters, anything but ASCII letters and digits written as `_`.
    pub fn metric_label(&self) -> String {
        self.code
            .trim()
            .chars()
            .take(LABEL_CHARS)
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    }
}

impl fmt::Display for Reason {
    /// `fcm:CODE`, `fcm:CODE: detail`, or `fcm: detail` for a reason without a code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider, self.code)?;
        match &self.detail {
            Some(detail) if self.code.is_empty() => write!(f, " {detail}"),
            Some(detail) => write!(f, ": {detail}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_print_as_they_always_have() {
        let cases = [
            (
                Reason::new(Provider::Fcm, "UNREGISTERED"),
                "fcm:UNREGISTERED",
            ),
            (
                Reason::new(Provider::Fcm, "INVALID_ARGUMENT").with_detail("bad payload"),
                "fcm:INVALID_ARGUMENT: bad payload",
            ),
            (
                Reason::uncoded(Provider::Fcm, "invalid_grant"),
                "fcm: invalid_grant",
            ),
            (
                Reason::new(Provider::Apns, "transport").with_detail("reset"),
                "apns:transport: reset",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn metric_labels_are_short_codes_without_messages() {
        let unavailable = Reason::new(Provider::Fcm, "UNAVAILABLE")
            .with_detail("The service is currently unavailable.");
        assert_eq!(unavailable.metric_label(), "UNAVAILABLE");
        assert_eq!(
            Reason::new(Provider::Fcm, "token unavailable")
                .with_detail("no answer within 10s")
                .metric_label(),
            "token_unavailable"
        );
        assert_eq!(
            Reason::new(Provider::Apns, "HTTP 503").metric_label(),
            "HTTP_503"
        );
        let long = Reason::new(Provider::Apns, "x".repeat(100));
        assert_eq!(long.metric_label().len(), LABEL_CHARS);
    }

    #[test]
    fn every_outcome_kind_has_its_own_label_and_index() {
        for (i, kind) in OutcomeKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        let labels: std::collections::HashSet<_> = OutcomeKind::ALL
            .map(OutcomeKind::label)
            .into_iter()
            .collect();
        assert_eq!(labels.len(), OutcomeKind::ALL.len());
        for (i, scope) in PauseScope::ALL.into_iter().enumerate() {
            assert_eq!(scope.index(), i);
        }
    }
}

//! What became of one event: the [`EventOutcome`] the worker hands to its followers, the
//! contract's per-event [`Summary`], and how both are counted and logged.
//!
//! The summary line's name (`Event processed.`) and fields are the contract (§5): add fields,
//! never rename them. The `notifier_events_total{result}` labels are listed in
//! `telemetry::EVENT_RESULTS`: a new outcome needs a label there too.

use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use crate::claims::ClaimError;
use crate::content::{ContentError, TalkError};
use crate::event::Rejection;
use crate::fanout::{FanoutError, FanoutReport};

/// What became of one message.
#[derive(Debug, Clone)]
pub enum EventOutcome {
    Processed(Summary),
    Rejected(Rejection),
    /// The talk is not in the database (or the event's program is not the talk's).
    UnknownTalk,
    /// Published longer ago than `service.max_event_age_secs`.
    Stale,
    /// Claimed already: `done` when it was finished, else another replica is on it.
    Duplicate {
        done: bool,
    },
    /// Another replica took the event over while this one was sending.
    Lost,
    Failed(Arc<EventError>),
}

impl EventOutcome {
    /// Whether the message that carried the event is finished with, so a stream entry may be
    /// acknowledged. An event that another replica is still running is not: its entry comes back
    /// and is acknowledged once the event is done.
    pub(crate) fn settled(&self) -> bool {
        match self {
            EventOutcome::Processed(s) => !s.report.interrupted,
            EventOutcome::Rejected(_) | EventOutcome::UnknownTalk | EventOutcome::Stale => true,
            EventOutcome::Duplicate { done } => *done,
            EventOutcome::Lost | EventOutcome::Failed(_) => false,
        }
    }

    /// Counts the outcome in `notifier_events_total{result}`.
    pub(crate) fn count(&self) {
        let result = match self {
            EventOutcome::Processed(s) if s.report.interrupted => "interrupted",
            EventOutcome::Processed(_) => "processed",
            EventOutcome::Rejected(_) => "rejected",
            EventOutcome::UnknownTalk => "unknown_talk",
            EventOutcome::Stale => "stale",
            EventOutcome::Duplicate { .. } => "duplicate",
            EventOutcome::Lost => "lost",
            EventOutcome::Failed(_) => "failed",
        };
        metrics::counter!(crate::telemetry::EVENTS, "result" => result).increment(1);
    }
}

/// Why an event failed. All but an unknown talk are worth another attempt.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("could not claim the event")]
    Claim(#[source] ClaimError),
    #[error(transparent)]
    Talk(#[from] TalkError),
    #[error(transparent)]
    Render(#[from] ContentError),
    #[error(transparent)]
    Fanout(#[from] FanoutError),
    #[error(transparent)]
    Split(#[from] crate::jobs::SplitError),
}

impl EventError {
    /// The talk is not there (or not the event's program's): skipped, never retried.
    pub(crate) fn is_unknown_talk(&self) -> bool {
        matches!(self, EventError::Talk(e) if e.is_unknown())
    }
}

/// The per-event summary of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub event_id: String,
    pub talk_id: i64,
    pub dry_run: bool,
    /// This run picked the event up from a checkpoint left by an earlier one.
    pub resumed: bool,
    pub report: FanoutReport,
}

impl Summary {
    /// The contract's summary line. `event_id`, `talk_id` and `dry_run` are written out although
    /// the event's span carries them too: the line must hold them wherever it is read.
    pub(crate) fn log(&self, started: Instant) {
        let r = &self.report;
        info!(
            event_id = %self.event_id,
            talk_id = self.talk_id,
            recipients = r.recipients,
            sent = r.sent,
            failed = r.failed,
            pruned = r.pruned,
            skipped = r.skipped,
            retries = r.retries,
            resumed = self.resumed,
            paused = %r.paused.join(","),
            dry_run = self.dry_run,
            elapsed_ms = started.elapsed().as_millis() as u64,
            interrupted = r.interrupted,
            apps = r.apps_detail().as_deref(),
            "Event processed."
        );
    }
}

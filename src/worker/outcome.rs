//! What became of one event: the [`EventOutcome`] the worker hands to its followers, the
//! contract's per-event [`Summary`], and how both are counted and logged.
//!
//! The summary line's name (`Event processed.`) and fields are the contract (§5): add fields,
//! never rename them. The `notifier_events_total{result}` labels are listed in
//! `telemetry::EVENT_RESULTS`: a new outcome needs a label there too.

use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use crate::content::{ContentError, TalkError};
use crate::event::Rejection;
use crate::fanout::{FanoutError, FanoutReport};
use crate::work::ClaimError;

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
    /// Stopped by a cancel (`DELETE /v1/events/{id}`, `notifier cancel`), with what it reached.
    Cancelled(Summary),
    /// Cut into jobs for every replica; this run went on to see them through, and was stopped
    /// (the process's stop) before they were all done: another run takes over.
    Coordinating,
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
            EventOutcome::Cancelled(_) => true,
            EventOutcome::Lost | EventOutcome::Failed(_) | EventOutcome::Coordinating => false,
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
            EventOutcome::Cancelled(_) => "cancelled",
            EventOutcome::Coordinating => "interrupted",
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
    Split(#[from] SplitError),
}

/// Why an event could not be cut into jobs.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("the audience query cannot be wrapped for job boundaries: {0}")]
    Query(#[source] crate::database::QueryError),
    #[error("probing the audience for job boundaries failed")]
    Database(#[source] crate::database::DatabaseError),
    #[error("storing the event's plan of jobs failed")]
    Plan(#[source] ClaimError),
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
        self.write(false, started);
    }

    /// The line of an event a cancel stopped, with the same fields: what it reached.
    pub(crate) fn log_cancelled(&self, started: Instant) {
        self.write(true, started);
    }

    fn write(&self, cancelled: bool, started: Instant) {
        let r = &self.report;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let paused = r.paused.join(",");
        let apps = r.apps_detail();
        // tracing's macros take the message as a literal: one call per message.
        macro_rules! line {
            ($message:literal) => {
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
                    paused = %paused,
                    dry_run = self.dry_run,
                    elapsed_ms,
                    interrupted = r.interrupted,
                    apps = apps.as_deref(),
                    $message
                )
            };
        }
        if cancelled {
            line!("Event cancelled.")
        } else {
            line!("Event processed.")
        }
    }
}

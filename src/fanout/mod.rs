//! The fan-out of one event: one lane per provider, each streaming its own devices from the
//! audience (one query, cut into pages) and turning each into a push task.
//!
//! A lane takes a permit from its provider's semaphore and then one from the global semaphore
//! *before* spawning, so live push tasks never exceed either limit however large the audience,
//! and a provider holds at most its own share of the global slots. The lanes share nothing that
//! can block, so a slow or failing provider never holds up the other. Finished tasks are reaped
//! as a lane goes and each lane holds at most three pages (plus the one being cut), so memory
//! stays flat: while they wait, the query waits too. One failing push never stops the others.
//!
//! Here: the entry point and its limits and report. [`lane`] hands out one provider's pushes,
//! [`pages`] reads its audience, [`tally`] counts outcomes and acts on them, [`checkpoint`] keeps
//! where the event stands for a resume.

mod checkpoint;
mod lane;
mod pages;
mod resize;
mod tally;

pub(crate) use checkpoint::{Checkpoint, LaneCheckpoint, Progress};
pub(crate) use resize::PushLimit;
pub(crate) use tally::skipped;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error};

use crate::audience::{Audience, PerProvider, Provider};
use crate::content::Rendered;
use crate::database::DatabaseError;
use crate::pacing::Pacer;
use crate::prune::Dead;
use crate::push::ProviderPushers;
use crate::push::retry::RetryPolicy;
use lane::Lane;
use tally::Tally;

/// Limits shared by every event.
#[derive(Debug, Clone)]
pub(crate) struct FanoutLimits {
    /// Pushes in flight at once across the process.
    pub permits: Arc<Semaphore>,
    /// The same semaphore's limit, changeable at run time.
    pub limit: Arc<PushLimit>,
    /// Pushes in flight at once per provider, each less than the global limit.
    pub provider_permits: PerProvider<Arc<Semaphore>>,
    /// Audience reads open at once, all events together. Each holds a database connection for
    /// its whole read, so there are fewer of them than pool connections: the rest stay free for
    /// the talk and prune statements, which are short, so nothing waits on a read to finish.
    pub audience_reads: Arc<Semaphore>,
    /// How long a failing audience read is retried (from where it stopped) before the event fails.
    pub retry_pages_for: Duration,
    /// After a stop, how long in-flight pushes may take before they are abandoned.
    pub drain_timeout: Duration,
}

/// How one event's pushes are sent.
#[derive(Clone)]
pub(crate) struct Delivery {
    /// The pusher for each provider; `None` where the provider is not configured.
    pub pushers: ProviderPushers,
    pub retry: RetryPolicy,
    /// The deployment's rate for each provider (unpaced in dry runs).
    pub pacers: PerProvider<Pacer>,
    /// Where dead tokens go to be pruned; `None` in dry and validate runs.
    pub prune: Option<mpsc::Sender<Dead>>,
}

/// What a fan-out did, for the event summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutReport {
    /// Devices that got an outcome: sent, failed, pruned or skipped.
    pub recipients: u64,
    pub sent: u64,
    pub failed: u64,
    /// Devices whose token the provider declared dead, queued for disabling.
    pub pruned: u64,
    pub skipped: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// What was paused because a provider rejected our credentials: `fcm`, `fcm:ios+web`, `apns`.
    pub paused: Vec<&'static str>,
    /// Audience pages read, all lanes together.
    pub pages: u64,
    /// Audience queries run, all lanes together: one per lane, plus one per read resumed after a
    /// failure.
    pub queries: u64,
    /// Most devices held in memory at once, read but not yet handed to a push task.
    pub peak_buffered: usize,
    /// The fan-out was stopped (shutdown) before the whole audience was reached.
    pub interrupted: bool,
    /// The event was cut into this many jobs for every replica instead of sent here (0: not).
    pub jobs: u32,
}

impl FanoutReport {
    /// The counts an event's status shows, by name (`recipients`, `sent`, …).
    pub(crate) fn counts(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("recipients", self.recipients),
            ("sent", self.sent),
            ("failed", self.failed),
            ("pruned", self.pruned),
            ("skipped", self.skipped),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("reading the audience failed: {source}")]
    Audience {
        #[source]
        source: DatabaseError,
        /// What was done before the failure.
        report: FanoutReport,
    },
}

/// Sends the event's notification to every device of the audience: `audiences` holds one reader
/// per provider.
pub(crate) async fn fan_out(
    audiences: Vec<(Provider, Audience)>,
    event_id: Arc<str>,
    content: Arc<Rendered>,
    delivery: Delivery,
    progress: Arc<Progress>,
    limits: &FanoutLimits,
    stop: &CancellationToken,
) -> Result<FanoutReport, FanoutError> {
    let tally = Arc::new(Tally::new(event_id, content, delivery, progress));
    let lanes: Vec<_> = audiences
        .into_iter()
        .map(|(provider, audience)| {
            let audience = audience.resume_after(tally.progress.read_after(provider));
            tokio::spawn(
                Lane::run(
                    provider,
                    audience,
                    Arc::clone(&tally),
                    limits.clone(),
                    stop.clone(),
                )
                .in_current_span(),
            )
        })
        .collect();
    let mut failure = None;
    for lane in lanes {
        match lane.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(e) => error!(error = %e, "A fan-out lane failed."),
        }
    }
    let report = tally.report();
    match failure {
        Some(source) => Err(FanoutError::Audience { source, report }),
        None => Ok(report),
    }
}

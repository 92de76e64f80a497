//! The fan-out of one unit of work: one lane per provider, each taking its own devices from a
//! [`Source`] (an event's audience, streamed from the database in pages, or the tokens of a
//! `POST /push` notification) and turning each into a push through the push engine
//! (`push::engine`): its app's pusher, permits, pace and retries, let through by the run's fence.
//!
//! The apps share a provider's lane (and its one query and checkpoint, so a resume is exact for
//! every app), but nothing that holds a push: each app has its own pusher, connections, permits,
//! pace and pauses. A lane waits for the permits of the device at hand, so while one app's
//! provider has all its permits taken, the lane's next devices (of any app) wait behind it.
//!
//! A lane takes its permits *before* spawning, so live push tasks never exceed the limits however
//! large the audience, and a provider holds at most its own share of the global slots. The lanes
//! share nothing that can block, so a slow or failing provider never holds up the other. Finished
//! tasks are reaped as a lane goes and each lane holds at most three pages (plus the one being
//! cut), so memory stays flat: while they wait, the query waits too. One failing push never stops
//! the others.
//!
//! Here: the entry point and what it is given. [`lane`] hands out one provider's pushes,
//! [`pages`] reads its source, [`tally`] counts outcomes and acts on them, [`checkpoint`] keeps
//! where the unit stands for a resume, [`report`] what it did.

mod checkpoint;
mod lane;
mod pages;
mod report;
mod tally;

pub(crate) use checkpoint::{Checkpoint, LaneCheckpoint, Progress};
pub use report::{AppReport, FanoutReport};
pub(crate) use tally::Observer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error};

use crate::audience::{Audience, Device, Provider};
use crate::content::Rendered;
use crate::database::DatabaseError;
use crate::prune::Dead;
use crate::push::{Delivery, Prebuilt, PushContent, PushLimits};
use crate::work::Fence;
use lane::Lane;
use tally::Tally;

/// Limits shared by every unit of the process.
#[derive(Debug, Clone)]
pub(crate) struct FanoutLimits {
    /// Pushes in flight: the process's, each app's provider's, and the drain.
    pub push: PushLimits,
    /// Audience reads open at once, all events together. Each holds a database connection for
    /// its whole read, so there are fewer of them than pool connections: the rest stay free for
    /// the talk and prune statements, which are short, so nothing waits on a read to finish.
    pub audience_reads: Arc<Semaphore>,
    /// How long a failing audience read is retried (from where it stopped) before the unit fails.
    pub retry_pages_for: Duration,
}

/// Where a lane's devices come from.
pub(crate) enum Source {
    /// An event's audience for one provider, streamed from the database.
    Audience(Audience),
    /// Devices known already (a `POST /push` notification's tokens), in id order.
    Devices(Vec<Device>),
}

/// What every device of the unit gets.
#[derive(Clone)]
pub(crate) enum Content {
    /// A talk's notification, rendered per locale.
    Talk(Arc<Rendered>),
    /// A provider request built already (a `POST /push` notification).
    Prebuilt(Arc<Prebuilt>),
}

impl Content {
    fn for_device(&self, device: &Device) -> PushContent {
        match self {
            Content::Talk(rendered) => {
                PushContent::Talk(Arc::clone(rendered.for_locale(device.locale.as_deref())))
            }
            Content::Prebuilt(prebuilt) => PushContent::Prebuilt(Arc::clone(prebuilt)),
        }
    }
}

/// What becomes of a token the provider calls dead.
pub(crate) enum DeadTokens {
    /// Disabled in the database, in batches (live runs of events).
    Prune(mpsc::Sender<Dead>),
    /// Counted failed: this send mode writes nothing (dry and validate runs).
    Kept,
    /// Counted failed and left to the caller who owns it (`POST /push`), whose [`Observer`]
    /// reports it.
    Callers,
}

/// One unit's fan-out, before it runs.
pub(crate) struct Fanout {
    /// The unit's id as the pushes carry it (the event id: the collapse id on the phone).
    pub event_id: Arc<str>,
    pub content: Content,
    pub delivery: Delivery,
    pub dead: DeadTokens,
    /// Told of every settled push, beside the tally (`POST /push`'s per-token reports).
    pub observer: Option<Arc<dyn Observer>>,
    pub progress: Arc<Progress>,
    /// The run's right to send: no push is handed out, nor attempted again, once it is shut.
    pub fence: Arc<Fence>,
}

/// Sends the unit's content to every device of `sources` (one per provider).
pub(crate) async fn fan_out(
    fanout: Fanout,
    sources: Vec<(Provider, Source)>,
    limits: &FanoutLimits,
    stop: &CancellationToken,
) -> Result<FanoutReport, FanoutError> {
    let tally = Arc::new(Tally::new(fanout));
    tally.progress.expect_lanes(sources.len());
    // Every lane says it may ask for permits before any starts, so no lane's share gives way
    // to another that has not begun reading yet.
    let asking: Vec<_> = sources
        .iter()
        .map(|(provider, _)| {
            let served = tally.delivery.pushers.iter();
            let pairs = served.filter_map(|(app, pushers)| {
                pushers[*provider].is_some().then_some((app, *provider))
            });
            limits.push.shares.asking(pairs)
        })
        .collect();
    let lanes: Vec<_> = sources
        .into_iter()
        .zip(asking)
        .map(|((provider, source), asking)| {
            let source = source.resume_after(tally.progress.read_after(provider));
            let lane = Lane::run(
                provider,
                source,
                Arc::clone(&tally),
                limits.clone(),
                stop.clone(),
                asking,
            );
            tokio::spawn(lane.in_current_span())
        })
        .collect();
    let mut failure = None;
    for lane in lanes {
        match lane.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(e) => {
                error!(error = %e, "A fan-out lane failed.");
                // Its devices were not all reached: the run must be resumed, not recorded done.
                tally.interrupt();
            }
        }
    }
    let report = tally.report();
    match failure {
        Some(source) => Err(FanoutError::Audience {
            source,
            report: Box::new(report),
        }),
        None => Ok(report),
    }
}

impl Source {
    /// The same source from just after `device_id` (a resumed run's start).
    fn resume_after(self, device_id: i64) -> Self {
        match self {
            Source::Audience(audience) => Source::Audience(audience.resume_after(device_id)),
            Source::Devices(mut devices) => {
                devices.retain(|d| d.id > device_id);
                Source::Devices(devices)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("reading the audience failed: {source}")]
    Audience {
        #[source]
        source: DatabaseError,
        /// What was done before the failure.
        report: Box<FanoutReport>,
    },
}

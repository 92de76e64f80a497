//! The worker's side of the job stream: every replica takes jobs of the deployment's split
//! events (`{work prefix}jobs`, in the send mode's group) and runs each as a bounded event run
//! under the job's own claim (`job:{n}:{event_id}`), whose parent is the event's claim: a cancel
//! of the event reaches the job at its next renewal. A job's end (its counts added to the event's
//! totals, its entry acknowledged and deleted) is one fenced step (`EventRun`'s settlement).
//!
//! A job is read only while an event slot is free; its claim, taken once it has a slot, decides
//! which run sends it, whoever read its entry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};

use super::Worker;
use super::run::{EventRun, Of};
use crate::event::TalkPosted;
use crate::telemetry::ErrorChain;
use crate::work::claims::{Claim, Finished};
use crate::work::plan::Job;
use crate::work::retry_redis;
use crate::work::stream::{Entry, StreamHandle, StreamReader};

/// How long a replica waits on the stream for a job before looking again.
const READ_BLOCK: Duration = Duration::from_secs(2);

impl Worker {
    /// Takes jobs from the stream, one event slot each, until `stop`. A job is read only while a
    /// slot is free, but the slot is not held while waiting on the stream: events (and the scan
    /// that takes abandoned ones over) keep every slot they had. A job read while events took the
    /// slots waits for one unclaimed; if it waits past the lease, another replica takes it over,
    /// and its claim decides which of the two runs it.
    pub(super) async fn run_jobs(
        self: Arc<Self>,
        mut reader: StreamReader,
        events: Arc<Semaphore>,
        running: TaskTracker,
        stop: CancellationToken,
    ) {
        let mut tidied = tokio::time::Instant::now();
        while let Some(free) = slot(&events, &stop).await {
            drop(free);
            if tidied.elapsed() >= self.settings.claims.lease() {
                tidied = tokio::time::Instant::now();
                forget_departed(&reader).await;
            }
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                next = reader.next(READ_BLOCK, 1) => next,
            };
            let entry = match next {
                Ok(mut entries) if !entries.is_empty() => entries.swap_remove(0),
                Ok(_) => continue,
                Err(e) => {
                    warn!(error = %e, "Reading the job stream failed; trying again.");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let Some(permit) = slot(&events, &stop).await else {
                break;
            };
            let (worker, stream, stop) = (Arc::clone(&self), reader.handle().clone(), stop.clone());
            running.spawn(async move { worker.run_job(stream, entry, permit, &stop).await });
        }
        reader.leave().await;
    }

    async fn run_job(
        &self,
        stream: StreamHandle,
        entry: Entry,
        slot: OwnedSemaphorePermit,
        stop: &CancellationToken,
    ) {
        let Some(job) = Job::from_entry(&entry) else {
            warn!(entry = %entry.id, "A job stream entry that is not a job was dropped.");
            return drop_entry(&stream, &entry.id).await;
        };
        let event = match TalkPosted::parse(job.payload.as_bytes()) {
            Ok(event) => event,
            Err(rejection) => {
                error!(entry = %entry.id, reason = %rejection, "A job's event cannot be read; dropped.");
                return drop_entry(&stream, &entry.id).await;
            }
        };
        let span = tracing::info_span!("job", event_id = %event.event_id, talk_id = event.talk_id, job = job.number);
        if entry.taken_over {
            // Its replica stopped answering for it; the job's claim decides whether we resume it.
            span.in_scope(
                || info!(entry = %entry.id, "Took over a job another replica held too long."),
            );
        }
        self.claim_and_run_job(stream, entry.id, job, event, slot, stop)
            .instrument(span)
            .await;
    }

    async fn claim_and_run_job(
        &self,
        stream: StreamHandle,
        entry: String,
        job: Job,
        event: TalkPosted,
        slot: OwnedSemaphorePermit,
        stop: &CancellationToken,
    ) {
        let keys = self.claims.keys();
        let key = keys.job(&job.event_id, job.number);
        let parent = keys.event(&job.event_id);
        let claimed = retry_redis(
            || self.claims.claim(&key, "", &job.payload, Some(&parent)),
            stop,
        )
        .await;
        let (held, resume) = match claimed {
            Ok(Claim::Run { held, resume }) => (held, resume),
            // Its owner lives: the entry comes back to whoever holds it when it is done.
            Ok(Claim::Busy) => return,
            Ok(Claim::Done) => return drop_entry(&stream, &entry).await,
            Ok(Claim::Cancel { held, counts }) => {
                // Its event was cancelled: ended with what it reached, nothing more sent.
                let unit = (job.event_id.as_str(), job.number);
                let at = (stream.group.as_str(), entry.as_str());
                let never = CancellationToken::new();
                let finish = || {
                    self.claims
                        .finish_job(&held, Finished::Cancelled, unit, at, &counts)
                };
                if let Err(e) = retry_redis(finish, &never).await {
                    warn!(error = %ErrorChain(&e), "Could not record a cancelled job's end.");
                }
                return;
            }
            Err(e) => {
                warn!(error = %ErrorChain(&e), "Could not claim a job; it comes back later.");
                return;
            }
        };
        EventRun {
            worker: self,
            event,
            held,
            resume,
            of: Of::Job { job, stream, entry },
            slot: Mutex::new(Some(slot)),
        }
        .run(stop)
        .await;
    }
}

/// Consumers that left the stream's group without leaving (killed replicas) are removed, once idle
/// long enough with nothing pending; failing is only logged: the next pass tries again.
pub(super) async fn forget_departed(reader: &StreamReader) {
    if let Err(e) = reader.forget_departed().await {
        warn!(stream = %reader.handle().key, error = %e, "Could not look for consumers that left.");
    }
}

/// An entry that carries no job to run: acknowledged and deleted.
async fn drop_entry(stream: &StreamHandle, id: &str) {
    if let Err(e) = stream.finish(id).await {
        // Not lost: the entry comes back, and is dropped then.
        warn!(entry = id, error = %e, "Could not remove a job entry from the stream.");
    }
}

/// An event slot, or `None` once stopping.
pub(super) async fn slot(
    events: &Arc<Semaphore>,
    stop: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        _ = stop.cancelled() => None,
        permit = Arc::clone(events).acquire_owned() => permit.ok(),
    }
}

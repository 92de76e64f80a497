//! Keeping a claim while its unit runs, and riding out a Redis that is briefly away.
//!
//! [`Keeper`] renews the lease every second (a cancel is seen within one), opens the run's
//! [`Fence`] for half a lease after each renewal, stores checkpoints when the run asks, and keeps
//! the stream entry that carried the unit with this replica. Lost or cancelled, it shuts the
//! fence. [`retry_redis`] is the patience every claim call shares. The timings (a renewal a
//! second at most a third of a lease apart, trust for half a lease) are what keep two runs of one
//! unit from sending at once: change them with the lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::claims::{ClaimError, Claims, Counts, Held, Renewal};
use super::fence::{Fence, Shut};
use super::stream::Touch;
use crate::telemetry::ErrorChain;

/// Where a run stands, as the keeper stores it: what the fan-out's progress gives.
pub(crate) trait Checkpointing: Send + Sync + 'static {
    /// The checkpoint as of now (JSON).
    fn checkpoint(&self) -> String;
    /// The counts so far, stored with it for the unit's status.
    fn counts(&self) -> Counts;
    /// Resolves when enough pushes finished since the last checkpoint that another is due.
    fn due(&self) -> impl Future<Output = ()> + Send;
}

/// Keeps a unit's claim while it runs (see the module's paragraph).
pub(crate) struct Keeper<P> {
    pub claims: Claims,
    pub held: Held,
    /// The unit as stored, written again if Redis lost the claim.
    pub payload: String,
    pub progress: Arc<P>,
    pub fence: Arc<Fence>,
    /// The stream entry that carried the unit, kept with this replica while it runs.
    pub touch: Option<Touch>,
    /// Ends the keeper; it outlives a process stop, since the lease must hold through the drain.
    pub stop: CancellationToken,
    /// The run's own stop, cancelled when another run took the unit over.
    pub run_stop: CancellationToken,
    /// Told each time Redis had lost the claim and it was written again (a split event's
    /// owner then queues again what Redis lost with it); a notice waits if nobody listens yet.
    pub recreated: Arc<Notify>,
}

/// How often a running unit's claim is renewed at most: a cancel is seen within this.
const RENEW_AT_MOST_EVERY: Duration = Duration::from_secs(1);

impl<P: Checkpointing> Keeper<P> {
    pub(crate) async fn run(self) {
        let lease = self.claims.lease();
        let every = (lease / 3).min(RENEW_AT_MOST_EVERY);
        let mut renew = tokio::time::interval(every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await; // the claim was just made
        let mut touched = Instant::now();
        loop {
            let renewing = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = renew.tick() => true,
                _ = self.progress.due() => false,
            };
            let sent = Instant::now();
            match self.write(renewing).await {
                Ok(Renewal::Renewed | Renewal::Recreated) if !renewing => {}
                Ok(renewal @ (Renewal::Renewed | Renewal::Recreated)) => {
                    self.fence.renewed(sent, lease / 2);
                    if renewal == Renewal::Recreated {
                        warn!(
                            "Redis had lost this run's claim (restarted without persistence?); it is written again."
                        );
                        self.recreated.notify_one();
                    }
                    if touched.elapsed() >= lease / 3 {
                        touched = Instant::now();
                        self.touch().await;
                    }
                }
                Ok(Renewal::Cancelled) => {
                    // Still renewed: the lease holds while the run drains its pushes in flight.
                    self.fence.renewed(sent, lease / 2);
                    self.fence.shut(Shut::Cancelled);
                }
                Ok(Renewal::Lost) => {
                    self.fence.shut(Shut::Lost);
                    self.run_stop.cancel();
                    return;
                }
                Err(e) => {
                    warn!(error = %ErrorChain(&e), "Could not renew the claim.");
                    // Try again soon rather than at the next tick.
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                    renew.reset_immediately();
                }
            }
        }
    }

    /// Renews the lease or only stores the checkpoint (a renewal stores it too), within a third
    /// of a lease; the fence learns which finished pushes the stored checkpoint holds.
    async fn write(&self, renewing: bool) -> Result<Renewal, ClaimError> {
        let limit = self.claims.lease() / 3;
        // Read before the checkpoint is taken, so the checkpoint holds at least these.
        let finished = self.fence.finished_so_far();
        let checkpoint = self.progress.checkpoint();
        let call = async {
            if renewing {
                self.claims
                    .renew(&self.held, &self.payload, &checkpoint)
                    .await
            } else {
                let counts = self.progress.counts();
                let (held, payload) = (&self.held, &self.payload);
                self.claims
                    .checkpoint(held, payload, &checkpoint, &counts)
                    .await
            }
        };
        let written = tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(ClaimError::Timeout(limit)));
        if let Ok(Renewal::Renewed | Renewal::Recreated | Renewal::Cancelled) = written {
            self.fence.stored(finished);
        }
        written
    }

    async fn touch(&self) {
        if let Some(touch) = &self.touch
            && let Err(e) = touch.touch().await
        {
            warn!(error = %ErrorChain(&e), "Could not keep the unit's stream entry with this replica.");
        }
    }
}

/// Retries a Redis call with backoff for up to 30 s (Redis restarting, failing over), or until
/// `stop`.
pub(crate) async fn retry_redis<T, F, Fut>(
    mut call: F,
    stop: &CancellationToken,
) -> Result<T, ClaimError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClaimError>>,
{
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let started = Instant::now();
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if started.elapsed() > Duration::from_secs(30) || stop.is_cancelled() => {
                return Err(e);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(error = %ErrorChain(&e), retry_in_ms = delay.as_millis() as u64, "Redis is unavailable; retrying.");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

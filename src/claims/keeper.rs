//! Keeping a claim while its event runs, and riding out a Redis that is briefly away.
//!
//! [`Keeper`] renews the lease, stores checkpoints when the fan-out asks, and holds the fan-out
//! when the lease can no longer be trusted. [`retry_redis`] is the patience every claim call
//! shares. The timings (a third of a lease between renewals, a hold after half a lease without
//! one) are what keep two runs of one event from sending at once: change them with the lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{ClaimError, Claims, Renewal};
use crate::fanout::Progress;
use crate::telemetry::ErrorChain;

/// Keeps an event's claim while it runs: renews the lease every third of it, stores a checkpoint
/// whenever the fan-out says one is due, and holds the fan-out once half a lease has passed
/// without a successful renewal (sending on could race a run that takes the event over). If
/// another run owns the event now, it cancels this run's fan-out and sets `lost`.
pub(crate) struct Keeper {
    pub claims: Claims,
    pub event_id: String,
    pub payload: String,
    pub progress: Arc<Progress>,
    /// Ends the keeper; it outlives a process stop, since the lease must hold through the drain.
    pub stop: CancellationToken,
    /// The event's own stop, cancelled when another run took the event over.
    pub event_stop: CancellationToken,
    pub lost: Arc<AtomicBool>,
}

impl Keeper {
    pub async fn run(self) {
        let lease = self.claims.lease();
        let mut renew = tokio::time::interval(lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await; // the claim was just made
        let mut last_ok = tokio::time::Instant::now();
        loop {
            let renewing = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = renew.tick() => true,
                _ = self.progress.checkpoint_due() => false,
                // No call may outlast this point unnoticed, however long it hangs.
                _ = tokio::time::sleep_until(last_ok + lease / 2) => {
                    self.progress.set_hold(true);
                    true
                }
            };
            match self.write(renewing).await {
                Ok(Renewal::Renewed) => {
                    last_ok = tokio::time::Instant::now();
                    self.progress.set_hold(false);
                }
                Ok(Renewal::Lost) => {
                    self.lost.store(true, Ordering::Relaxed);
                    self.event_stop.cancel();
                    return;
                }
                Err(e) => {
                    warn!(error = %ErrorChain(&e), "Could not renew the event's claim.");
                    if last_ok.elapsed() > lease / 2 {
                        self.progress.set_hold(true);
                    }
                    // Try again soon rather than at the next third of a lease.
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                    renew.reset_immediately();
                }
            }
        }
    }

    /// Renews the lease (with the checkpoint) or only stores the checkpoint, within a third of a
    /// lease.
    async fn write(&self, renewing: bool) -> Result<Renewal, ClaimError> {
        let limit = self.claims.lease() / 3;
        let checkpoint = serde_json::to_string(&self.progress.snapshot()).unwrap_or_default();
        let call = async {
            let (id, payload) = (&self.event_id, &self.payload);
            if renewing {
                self.claims.renew(id, payload, &checkpoint).await
            } else {
                self.claims.checkpoint(id, payload, &checkpoint).await
            }
        };
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(ClaimError::Timeout(limit)))
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
    let started = tokio::time::Instant::now();
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

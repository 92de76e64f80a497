//! A run's right to send, as the run itself can tell without asking Redis: open while its last
//! renewal is recent enough to trust the lease, closed for good once the claim is lost or the
//! unit cancelled.
//!
//! The keeper renews every second and moves the deadline to half a lease after the renewal was
//! sent (the lease itself runs a whole lease from when Redis ran it, so the run stops well before
//! anyone may take over). Every push is admitted against it, and every attempt of a push again,
//! so a run whose process was frozen past its lease (SIGSTOP, a long pause) finds its fence shut
//! the moment it wakes, before any renewal could tell it so. The checks are a clock read and an
//! atomic load: cheap enough for every push.
//!
//! A renewal proves the run may send, not that its progress is kept: with Redis away, a run that
//! renewed a moment before would send for half a lease with no checkpoint stored, and whoever
//! takes the unit over would repeat all of it. So a new push is also held while more than
//! `unsaved_at_most` finished pushes wait for a stored checkpoint (two checkpoints' worth): what
//! a run cut off from Redis repeats stays within its pushes in flight and that many.
//!
//! A delivery finishes before its push gives the permits back. Any other outcome may wait to
//! settle (a dead token for a slow prune queue, which must not hold the slots), so its push gives
//! them back first and is counted as unsaved while it is [`Settling`]. Uncounted, those pushes
//! were a hole in the bound: a run whose prune statements waited on a row lock handed out its
//! whole audience, and a takeover sent the thousands still settling again.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::push::{Admission, Gate};

/// Why a fence is shut for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shut {
    /// Another run holds the unit now.
    Lost,
    /// The unit, or its event, is being cancelled.
    Cancelled,
}

/// Why a run held a new push (`notifier_fence_holds_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldCause {
    /// Its lease was not renewed in time to trust it.
    Lease,
    /// Too many finished pushes wait for a stored checkpoint.
    Checkpoint,
}

impl HoldCause {
    /// Its label, one of those telemetry registers at zero.
    fn label(self) -> &'static str {
        let [lease, checkpoint] = crate::telemetry::FENCE_HOLD_REASONS;
        match self {
            HoldCause::Lease => lease,
            HoldCause::Checkpoint => checkpoint,
        }
    }
}

const OPEN: u8 = 0;
const LOST: u8 = 1;
const CANCELLED: u8 = 2;

pub(crate) struct Fence {
    base: Instant,
    /// Milliseconds after `base` until which pushes may start; `u64::MAX` without a lease.
    until_ms: AtomicU64,
    state: AtomicU8,
    changed: Notify,
    /// Pushes that gave their permits back before they finished, and are settling.
    settling: AtomicU64,
    /// Pushes the run finished, and how many of them the last stored checkpoint holds.
    finished: AtomicU64,
    stored: AtomicU64,
    /// New pushes hold while more finished ones than this wait to be stored (`u64::MAX`
    /// without a lease: nothing is stored, nothing is taken over).
    unsaved_at_most: u64,
}

impl Fence {
    /// A fence whose lease was renewed just now and holds for `trust`, and that holds new
    /// pushes while more than `unsaved_at_most` finished ones wait for a stored checkpoint.
    pub(crate) fn new(trust: Duration, unsaved_at_most: u64) -> Self {
        let fence = Self {
            unsaved_at_most,
            ..Self::always_open()
        };
        fence
            .until_ms
            .store(trust.as_millis() as u64, Ordering::Relaxed);
        fence
    }

    /// A fence with no lease behind it (claims that are not shared): open until shut.
    pub(crate) fn always_open() -> Self {
        Self {
            base: Instant::now(),
            until_ms: AtomicU64::new(u64::MAX),
            state: AtomicU8::new(OPEN),
            changed: Notify::new(),
            settling: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            unsaved_at_most: u64::MAX,
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// A renewal sent at `sent` succeeded: pushes may start until `trust` after it.
    pub(crate) fn renewed(&self, sent: Instant, trust: Duration) {
        let until = self.ms(sent + trust);
        self.until_ms.fetch_max(until, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Shuts the fence for good: nothing more is admitted. The first reason stays.
    pub(crate) fn shut(&self, why: Shut) {
        let code = match why {
            Shut::Lost => LOST,
            Shut::Cancelled => CANCELLED,
        };
        let _ = self
            .state
            .compare_exchange(OPEN, code, Ordering::Relaxed, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub(crate) fn shut_by(&self) -> Option<Shut> {
        match self.state.load(Ordering::Relaxed) {
            LOST => Some(Shut::Lost),
            CANCELLED => Some(Shut::Cancelled),
            _ => None,
        }
    }

    /// A push finished (after the run's progress recorded it, so a checkpoint taken once this
    /// count is read holds it): a delivery, its permits still held, or through
    /// [`Settling::finished`] a push that gave them back first.
    pub(crate) fn finished(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }

    /// A push is about to give its permits back before it finishes: unsaved from now on (until
    /// [`Settling::finished`], and then until a stored checkpoint holds it), or a hole if the
    /// guard drops unfinished. Counted before the permits go back, so whoever takes them sees it.
    pub(crate) fn settling(&self) -> Settling<'_> {
        self.settling.fetch_add(1, Ordering::SeqCst);
        Settling { fence: self }
    }

    /// Pushes finished so far: read before a checkpoint is taken, and given to
    /// [`Fence::stored`] once it is stored.
    pub(crate) fn finished_so_far(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }

    /// A checkpoint holding the first `finished` finished pushes is stored.
    pub(crate) fn stored(&self, finished: u64) {
        self.stored.fetch_max(finished, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Whether a new push may be handed out now: admitted, and the run's progress kept.
    pub(crate) fn hand_out(&self) -> Admission {
        match self.admission() {
            Admission::Go => {
                // Settling before finished: a push moving from one to the other between the two
                // reads is counted twice, never missed (it moves in the other order).
                let settling = self.settling.load(Ordering::SeqCst);
                let finished = self.finished.load(Ordering::SeqCst);
                // The keeper may store a count read after ours: none unsaved then, not an overflow.
                let stored = self.stored.load(Ordering::Relaxed);
                let unsaved = finished.saturating_sub(stored) + settling;
                match unsaved > self.unsaved_at_most {
                    true => Admission::Hold,
                    false => Admission::Go,
                }
            }
            other => other,
        }
    }

    /// Whether a push may start now (or try again: an attempt of a push handed out already).
    pub(crate) fn admission(&self) -> Admission {
        if self.shut_by().is_some() {
            return Admission::Shut;
        }
        let until = self.until_ms.load(Ordering::Relaxed);
        if until == u64::MAX || self.ms(Instant::now()) < until {
            Admission::Go
        } else {
            Admission::Hold
        }
    }

    /// Why a new push is held now: the lease, unless it is trusted (then the checkpoint).
    fn hold_cause(&self) -> HoldCause {
        match self.admission() {
            Admission::Go => HoldCause::Checkpoint,
            _ => HoldCause::Lease,
        }
    }

    /// Waits until a new push may be handed out: true, or false once the fence is shut or `stop`
    /// comes. Each wait counts once in `notifier_fence_holds_total`, by why it began.
    pub(crate) async fn admit(&self, stop: &CancellationToken) -> bool {
        let mut counted = false;
        loop {
            let changed = self.changed.notified();
            match self.hand_out() {
                Admission::Go => return true,
                Admission::Shut => return false,
                Admission::Hold if !counted => {
                    counted = true;
                    let cause = self.hold_cause().label();
                    metrics::counter!(crate::telemetry::FENCE_HOLDS, "reason" => cause)
                        .increment(1);
                }
                Admission::Hold => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = changed => {}
                // Notifications may race the check above: look again now and then.
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

/// A push between giving its permits back and being finished, counted as unsaved meanwhile.
pub(crate) struct Settling<'a> {
    fence: &'a Fence,
}

impl Settling<'_> {
    /// The push finished (after the run's progress recorded it, so a checkpoint taken once this
    /// count is read holds it).
    pub(crate) fn finished(self) {
        self.fence.finished();
        // Drop then leaves `settling`, after `finished` took the push.
    }
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        // Finished, or dropped unfinished (its task aborted): a hole for the next run then.
        self.fence.settling.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate for Fence {
    fn admission(&self) -> Admission {
        Fence::admission(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fence_holds_once_its_renewal_is_too_old_and_shut_is_for_good() {
        let fence = Fence::new(Duration::from_secs(2), u64::MAX);
        assert_eq!(fence.admission(), Admission::Go);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            fence.admission(),
            Admission::Hold,
            "a frozen run finds itself held"
        );
        assert_eq!(fence.hold_cause(), HoldCause::Lease);
        fence.renewed(Instant::now(), Duration::from_secs(2));
        assert_eq!(fence.admission(), Admission::Go);
        fence.shut(Shut::Cancelled);
        fence.shut(Shut::Lost);
        assert_eq!(fence.admission(), Admission::Shut);
        assert_eq!(
            fence.shut_by(),
            Some(Shut::Cancelled),
            "the first reason stays"
        );
        fence.renewed(Instant::now(), Duration::from_secs(2));
        assert_eq!(fence.admission(), Admission::Shut);
        assert!(!fence.admit(&CancellationToken::new()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_push_goes_on_after_the_next_renewal() {
        let fence = std::sync::Arc::new(Fence::new(Duration::from_secs(1), u64::MAX));
        tokio::time::advance(Duration::from_secs(2)).await;
        let waiting = tokio::spawn({
            let fence = fence.clone();
            async move { fence.admit(&CancellationToken::new()).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        fence.renewed(Instant::now(), Duration::from_secs(1));
        assert!(waiting.await.unwrap());
        assert_eq!(Fence::always_open().admission(), Admission::Go);
    }

    #[test]
    fn new_pushes_hold_while_too_many_finished_ones_wait_for_a_stored_checkpoint() {
        let fence = Fence::new(Duration::from_secs(60), 2);
        for _ in 0..3 {
            fence.finished();
        }
        assert_eq!(fence.hand_out(), Admission::Hold, "3 unsaved, 2 allowed");
        assert_eq!(fence.hold_cause(), HoldCause::Checkpoint);
        assert_eq!(
            fence.admission(),
            Admission::Go,
            "a push handed out already may still try again"
        );
        fence.stored(1);
        assert_eq!(fence.hand_out(), Admission::Go);
        fence.stored(0);
        assert_eq!(fence.hand_out(), Admission::Go, "a store never moves back");
        assert_eq!(Fence::always_open().hand_out(), Admission::Go);
    }

    #[test]
    fn a_push_settling_after_giving_its_permits_back_counts_as_unsaved() {
        let fence = Fence::new(Duration::from_secs(60), 2);
        fence.settling().finished();
        fence.settling().finished();
        let settling = fence.settling();
        assert_eq!(
            fence.hand_out(),
            Admission::Hold,
            "2 unsaved and 1 settling"
        );
        settling.finished();
        assert_eq!(fence.hand_out(), Admission::Hold, "3 unsaved");
        fence.stored(3);
        let aborted = fence.settling();
        assert_eq!(fence.hand_out(), Admission::Go);
        drop(aborted);
        assert_eq!(
            fence.finished_so_far(),
            3,
            "an unfinished push is a hole, not progress"
        );
    }

    #[test]
    fn a_store_counted_after_the_hand_out_read_its_finished_pushes_is_nothing_unsaved() {
        // The keeper reads the count, more pushes finish, it stores: a hand-out that read the
        // count before them sees more stored than finished (a CI run panicked on it).
        let fence = Fence::new(Duration::from_secs(2), 4);
        fence.stored(10);
        assert_eq!(fence.hand_out(), Admission::Go);
    }
}

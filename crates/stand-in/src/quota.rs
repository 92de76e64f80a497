//! FCM's per-project quota (`--fcm-quota-per-minute`): sends accepted in the last sixty seconds,
//! a sliding window counted in tenths of a second. Tests shorten the window
//! (`fcm_quota_window`), keeping the count per window. A send past it gets FCM's 429
//! `QUOTA_EXCEEDED` (see `fcm`) and is not counted, as Google counts only what it accepts. The
//! window slides rather than resetting on the minute, so a sender paced for one minute-aligned
//! window gains nothing by bursting at the boundary.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SLOT: Duration = Duration::from_millis(100);

pub(crate) struct Quota {
    /// Sends accepted per window.
    per_window: u64,
    /// Slots per window.
    span: u64,
    started: Instant,
    /// (slot number, sends accepted in it), oldest first, and their sum.
    slots: Mutex<(VecDeque<(u64, u64)>, u64)>,
}

impl Quota {
    /// `per_window` sends in any `window` (a minute, as Google counts); `0` means no quota.
    pub(crate) fn new(per_window: u64, window: Duration) -> Self {
        Self {
            per_window,
            span: (window.as_millis() / SLOT.as_millis()).max(1) as u64,
            started: Instant::now(),
            slots: Mutex::new((VecDeque::new(), 0)),
        }
    }

    /// Counts a send if the window has room for it; `false` when it is over quota.
    pub(crate) fn admit(&self) -> bool {
        if self.per_window == 0 {
            return true;
        }
        let slot = (self.started.elapsed().as_millis() / SLOT.as_millis()) as u64;
        let span = self.span;
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (slots, total) = &mut *guard;
        while slots.front().is_some_and(|(s, _)| s + span <= slot) {
            if let Some((_, n)) = slots.pop_front() {
                *total -= n;
            }
        }
        if *total >= self.per_window {
            return false;
        }
        *total += 1;
        match slots.back_mut() {
            Some((s, n)) if *s == slot => *n += 1,
            _ => slots.push_back((slot, 1)),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_admits_its_sends_a_minute_and_no_more() {
        let quota = Quota::new(5, Duration::from_secs(60));
        assert!((0..5).all(|_| quota.admit()));
        assert!(!quota.admit());
        assert!(Quota::new(0, Duration::from_secs(60)).admit());
    }
}

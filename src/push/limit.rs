//! The process's limit of pushes in flight, changeable while it runs (Gaurun's
//! `PUT /config/pushers?max=N`): permits are added to the global semaphore at once, and taken
//! out as pushes in flight give theirs back, so a smaller limit never cuts a push short.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, Semaphore};

/// The global semaphore with the limit it was last set to.
#[derive(Debug)]
pub(crate) struct PushLimit {
    permits: Arc<Semaphore>,
    max: AtomicUsize,
    /// One change at a time, so two changes cannot interleave their arithmetic.
    changing: Mutex<()>,
}

impl PushLimit {
    pub(crate) fn new(permits: Arc<Semaphore>, max: usize) -> Self {
        Self {
            permits,
            max: AtomicUsize::new(max),
            changing: Mutex::new(()),
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Pushes holding a permit now (while a smaller limit waits for permits back, it may read
    /// a little high).
    pub(crate) fn in_flight(&self) -> usize {
        self.max().saturating_sub(self.permits.available_permits())
    }

    /// Sets the limit to `max` (at least 1): more room at once, less as pushes finish.
    pub(crate) async fn set(&self, max: usize) {
        let max = max.max(1);
        let _one = self.changing.lock().await;
        let old = self.max.swap(max, Ordering::Relaxed);
        if max > old {
            self.permits.add_permits(max - old);
            return;
        }
        let mut excess = old - max;
        excess -= self.permits.forget_permits(excess);
        if excess > 0 {
            // The rest are held by pushes in flight: taken out as they come back.
            let permits = Arc::clone(&self.permits);
            tokio::spawn(async move {
                if let Ok(held) = permits.acquire_many_owned(excess as u32).await {
                    held.forget();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_grows_at_once_and_shrinks_as_pushes_finish() {
        let permits = Arc::new(Semaphore::new(4));
        let limit = PushLimit::new(Arc::clone(&permits), 4);
        let held = Arc::clone(&permits).acquire_many_owned(3).await.unwrap();
        assert_eq!(limit.in_flight(), 3);
        limit.set(10).await;
        assert_eq!((limit.max(), permits.available_permits()), (10, 7));
        limit.set(2).await;
        assert_eq!(
            permits.available_permits(),
            0,
            "no room beyond the three in flight"
        );
        drop(held);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(permits.available_permits(), 2);
        assert_eq!((limit.max(), limit.in_flight()), (2, 0));
    }
}

//! Each app's provider share of the process's push permits, and when a share gives way.
//!
//! A share keeps one provider from taking every slot: a stalled FCM holds at most its share, and
//! APNs still sends. But a share held while nothing else wants the slots only slows the event
//! down (10,000 FCM devices at 200 ms went through 750 slots of 1,000). So the default share
//! (three quarters of the global limit) gives way while no other app or provider has a lane
//! that may ask for permits: a push beyond it takes a global permit alone. A configured share
//! (`fcm.concurrency`) is the operator's limit and never gives way.
//!
//! Lanes say they may ask before any of them starts ([`Shares::asking`]), so two lanes of one
//! event never race for the first slots; a lane stops asking once it has handed out its last
//! device. Pushes that went beyond a share keep their global permit until they are done: when
//! another provider starts asking, it gets its slots back as they finish (within one push's
//! time, or its timeout when the provider hangs).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::apps::{AppId, Apps};
use crate::device::{PerProvider, Provider};

/// One app's share for one provider.
#[derive(Debug)]
pub(crate) struct Share {
    permits: Arc<Semaphore>,
    /// The default share gives way; a configured one does not.
    gives_way: bool,
    /// Lanes that may still ask for this app and provider's permits.
    asking: AtomicUsize,
}

impl Share {
    /// A share of `limit` permits; `configured` ones never give way.
    pub(crate) fn new(limit: usize, configured: bool) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            gives_way: !configured,
            asking: AtomicUsize::new(0),
        }
    }
}

/// Every app's provider shares, and who is asking for permits now.
#[derive(Debug)]
pub(crate) struct Shares {
    shares: Apps<PerProvider<Share>>,
    /// The sum of every share's `asking`.
    asking: AtomicUsize,
    /// Told when a lane stops asking: a push waiting within its share may go beyond it now.
    eased: Notify,
}

/// A push's slot within its share, or `None` where the share gave way.
pub(crate) type ShareSlot = Option<OwnedSemaphorePermit>;

impl Shares {
    pub(crate) fn new(shares: Apps<PerProvider<Share>>) -> Self {
        Self {
            shares,
            asking: AtomicUsize::new(0),
            eased: Notify::new(),
        }
    }

    /// An app the shares do not know (none: both come from the settings) shares the default
    /// app's, rather than going unlimited.
    fn share(&self, app: AppId, provider: Provider) -> &Share {
        &self.shares.get(app).unwrap_or(&self.shares[AppId::DEFAULT])[provider]
    }

    /// Marks `pairs` as asking until the guard drops.
    pub(crate) fn asking(
        self: &Arc<Self>,
        pairs: impl IntoIterator<Item = (AppId, Provider)>,
    ) -> Asking {
        let pairs: Vec<_> = pairs.into_iter().collect();
        for &(app, provider) in &pairs {
            self.share(app, provider)
                .asking
                .fetch_add(1, Ordering::Relaxed);
        }
        self.asking.fetch_add(pairs.len(), Ordering::Relaxed);
        Asking {
            shares: Arc::clone(self),
            pairs,
        }
    }

    /// Whether a push of `app` through `provider` may go beyond its share now: the share gives
    /// way and no lane of another app or provider is asking.
    fn may_go_beyond(&self, share: &Share) -> bool {
        share.gives_way
            && self.asking.load(Ordering::Relaxed) <= share.asking.load(Ordering::Relaxed)
    }

    /// A slot within the share, or leave to go beyond it, whichever comes first.
    pub(crate) async fn slot(&self, app: AppId, provider: Provider) -> ShareSlot {
        let share = self.share(app, provider);
        loop {
            // Every push comes here: take what is free without touching `eased`, whose waiters
            // sit behind a lock every lane shares.
            if let Ok(slot) = Arc::clone(&share.permits).try_acquire_owned() {
                return Some(slot);
            }
            if self.may_go_beyond(share) {
                return None;
            }
            // About to wait: registered before looking again, so a lane that stops asking in
            // between still wakes us.
            let eased = self.eased.notified();
            tokio::pin!(eased);
            eased.as_mut().enable();
            if self.may_go_beyond(share) {
                return None;
            }
            tokio::select! {
                slot = Arc::clone(&share.permits).acquire_owned() => {
                    // The semaphore is never closed.
                    if let Ok(slot) = slot {
                        return Some(slot);
                    }
                }
                _ = eased => {}
            }
        }
    }
}

/// A lane's word that it may still ask for permits; it stops asking when dropped.
#[derive(Debug)]
pub(crate) struct Asking {
    shares: Arc<Shares>,
    pairs: Vec<(AppId, Provider)>,
}

impl Drop for Asking {
    fn drop(&mut self) {
        for &(app, provider) in &self.pairs {
            self.shares
                .share(app, provider)
                .asking
                .fetch_sub(1, Ordering::Relaxed);
        }
        self.shares
            .asking
            .fetch_sub(self.pairs.len(), Ordering::Relaxed);
        self.shares.eased.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::apps::AppNames;

    fn shares(limit: usize, configured: bool) -> Arc<Shares> {
        let apps = AppNames::default();
        Arc::new(Shares::new(Apps::from_fn(&apps, |_| {
            PerProvider::from_fn(|_| Share::new(limit, configured))
        })))
    }

    async fn slots(shares: &Shares, provider: Provider, n: usize) -> Vec<ShareSlot> {
        let mut slots = Vec::new();
        for _ in 0..n {
            slots.push(shares.slot(AppId::DEFAULT, provider).await);
        }
        slots
    }

    #[tokio::test]
    async fn a_default_share_gives_way_while_no_other_provider_asks() {
        let shares = shares(2, false);
        let _fcm = shares.asking([(AppId::DEFAULT, Provider::Fcm)]);
        let slots = slots(&shares, Provider::Fcm, 5).await;
        let within = slots.iter().filter(|s| s.is_some()).count();
        assert_eq!(within, 2, "the share's own slots first, then beyond it");
    }

    #[tokio::test]
    async fn a_share_holds_while_another_provider_asks_and_gives_way_when_it_stops() {
        let shares = shares(2, false);
        let _fcm = shares.asking([(AppId::DEFAULT, Provider::Fcm)]);
        let apns = shares.asking([(AppId::DEFAULT, Provider::Apns)]);
        let _held = slots(&shares, Provider::Fcm, 2).await;
        let waiting = {
            let shares = Arc::clone(&shares);
            tokio::spawn(async move { shares.slot(AppId::DEFAULT, Provider::Fcm).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "APNs asks: FCM keeps to its share");
        drop(apns);
        let slot = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting push was woken")
            .unwrap();
        assert!(slot.is_none(), "it went beyond the share");
    }

    #[tokio::test]
    async fn a_configured_share_never_gives_way() {
        let shares = shares(2, true);
        let _fcm = shares.asking([(AppId::DEFAULT, Provider::Fcm)]);
        let _held = slots(&shares, Provider::Fcm, 2).await;
        let third = tokio::time::timeout(
            Duration::from_millis(50),
            shares.slot(AppId::DEFAULT, Provider::Fcm),
        )
        .await;
        assert!(
            third.is_err(),
            "the third push waits for a slot of the share"
        );
    }
}

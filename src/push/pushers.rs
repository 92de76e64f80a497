//! The pushers an event can go through: one per provider as the settings configure it, and the
//! dry-run pusher, with the choice a send mode makes between them. The worker and `notifier send`
//! both ask [`Pushers::for_mode`], so a mode means the same everywhere.

use std::sync::Arc;

use super::Pusher;
use crate::audience::{PerProvider, Provider};
use crate::config::SendMode;

/// One pusher per provider; `None` where the provider is not configured.
pub type ProviderPushers = PerProvider<Option<Arc<dyn Pusher>>>;

/// The pushers an event can go through.
#[derive(Clone)]
pub struct Pushers {
    /// Each provider in the configured mode (FCM live or validate-only, APNs live); `None` when
    /// not configured.
    pub live: ProviderPushers,
    /// Used in dry-run mode, for events that ask for a dry run, and for providers without a
    /// validate mode in validate runs.
    pub dry_run: Arc<dyn Pusher>,
}

impl Pushers {
    pub fn new(live: ProviderPushers, dry_run: Arc<dyn Pusher>) -> Self {
        Self { live, dry_run }
    }

    /// Dry run only: what runs outside production.
    pub fn dry_run(pusher: Arc<dyn Pusher>) -> Self {
        Self::new(PerProvider::default(), pusher)
    }

    /// The pusher each provider's pushes go through in `mode`.
    pub fn for_mode(&self, mode: SendMode) -> ProviderPushers {
        PerProvider::from_fn(|provider| match mode {
            SendMode::DryRun => Some(Arc::clone(&self.dry_run)),
            SendMode::Validate if !validates(provider) => Some(Arc::clone(&self.dry_run)),
            SendMode::Validate | SendMode::Live => self.live[provider].clone(),
        })
    }
}

/// Whether the provider can check a push without delivering it (FCM's `validate_only`); the
/// others are dry-run in validate mode.
fn validates(provider: Provider) -> bool {
    match provider {
        Provider::Fcm => true,
        Provider::Apns => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::dry_run::DryRunPusher;

    #[test]
    fn each_mode_picks_its_pushers() {
        let (fcm, apns, dry): (Arc<dyn Pusher>, Arc<dyn Pusher>, Arc<dyn Pusher>) = (
            Arc::new(DryRunPusher),
            Arc::new(DryRunPusher),
            Arc::new(DryRunPusher),
        );
        let pushers = Pushers::new(
            PerProvider {
                fcm: Some(Arc::clone(&fcm)),
                apns: Some(Arc::clone(&apns)),
            },
            Arc::clone(&dry),
        );
        let is = |p: &Option<Arc<dyn Pusher>>, want: &Arc<dyn Pusher>| {
            p.as_ref().is_some_and(|p| Arc::ptr_eq(p, want))
        };
        let dry_run = pushers.for_mode(SendMode::DryRun);
        assert!(is(&dry_run.fcm, &dry) && is(&dry_run.apns, &dry));
        let validate = pushers.for_mode(SendMode::Validate);
        assert!(is(&validate.fcm, &fcm) && is(&validate.apns, &dry));
        let live = pushers.for_mode(SendMode::Live);
        assert!(is(&live.fcm, &fcm) && is(&live.apns, &apns));
        let unconfigured = Pushers::dry_run(Arc::clone(&dry)).for_mode(SendMode::Live);
        assert!(unconfigured.fcm.is_none() && unconfigured.apns.is_none());
    }
}

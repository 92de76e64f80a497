//! The pushers an event can go through: one per provider and app as the settings configure
//! them, and the dry-run pusher, with the choice a send mode makes between them. The worker,
//! `notifier send` and the HTTP API all ask [`Pushers::for_app`] (or [`Pushers::for_apps`]), so a
//! mode means the same everywhere.

use std::sync::Arc;

use super::Pusher;
use crate::apps::{AppNames, Apps, DEFAULT_APP};
use crate::audience::{PerProvider, Provider};

/// How pushes leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Log what would be sent; open no connection to any provider.
    DryRun,
    /// Ask FCM to validate without delivering (`validate_only`), encrypt and sign Web Push
    /// without sending; APNs pushes are dry-run.
    Validate,
    /// Deliver through every configured provider.
    Live,
}

impl SendMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SendMode::DryRun => "dry-run",
            SendMode::Validate => "validate",
            SendMode::Live => "live",
        }
    }
}

/// One pusher per provider; `None` where the provider is not configured.
pub(crate) type ProviderPushers = PerProvider<Option<Arc<dyn Pusher>>>;

/// The pushers an event can go through.
#[derive(Clone)]
pub struct Pushers {
    /// The default app's providers in the configured mode (FCM and Web Push live or
    /// validate-only, APNs live); `None` when not configured.
    pub live: ProviderPushers,
    /// The same for each `[apps.NAME]` app, by name.
    pub apps: Vec<(String, ProviderPushers)>,
    /// Used in dry-run mode, for events that ask for a dry run, and for providers without a
    /// validate mode in validate runs.
    pub dry_run: Arc<dyn Pusher>,
}

impl Pushers {
    pub fn new(live: ProviderPushers, dry_run: Arc<dyn Pusher>) -> Self {
        Self {
            live,
            apps: Vec::new(),
            dry_run,
        }
    }

    /// Adds (or replaces) the pushers of the app `name`.
    pub fn with_app(mut self, name: &str, live: ProviderPushers) -> Self {
        self.apps.retain(|(n, _)| n != name);
        self.apps.push((name.to_string(), live));
        self
    }

    /// The configured pushers of app `name` (`default` is the top-level one); `None` for an app
    /// this process does not serve.
    pub fn of_app(&self, name: &str) -> Option<&ProviderPushers> {
        if name == DEFAULT_APP {
            return Some(&self.live);
        }
        self.apps.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// The pushers each provider's pushes of app `name` go through in `mode`; `None` for an app
    /// this process does not serve.
    pub fn for_app(&self, name: &str, mode: SendMode) -> Option<ProviderPushers> {
        self.of_app(name).map(|live| self.in_mode(live, mode))
    }

    /// [`Pushers::for_app`] for every app of `names`; an app without pushers here gets none
    /// (its devices are skipped as not configured) except in a dry run.
    pub fn for_apps(&self, names: &AppNames, mode: SendMode) -> Apps<ProviderPushers> {
        let none = PerProvider::default();
        Apps::from_fn(names, |app| {
            self.in_mode(self.of_app(names.name(app)).unwrap_or(&none), mode)
        })
    }

    /// Dry run only: what runs outside production.
    pub fn dry_run(pusher: Arc<dyn Pusher>) -> Self {
        Self::new(PerProvider::default(), pusher)
    }

    /// The pusher each provider's pushes of the default app go through in `mode`.
    pub fn for_mode(&self, mode: SendMode) -> ProviderPushers {
        self.in_mode(&self.live, mode)
    }

    fn in_mode(&self, live: &ProviderPushers, mode: SendMode) -> ProviderPushers {
        PerProvider::from_fn(|provider| match mode {
            SendMode::DryRun => Some(Arc::clone(&self.dry_run)),
            SendMode::Validate if !validates(provider) => Some(Arc::clone(&self.dry_run)),
            SendMode::Validate | SendMode::Live => live[provider].clone(),
        })
    }
}

/// Whether the provider can check a push without delivering it (FCM's `validate_only`; Web
/// Push encrypts and signs, and sends nothing); the others are dry-run in validate mode.
fn validates(provider: Provider) -> bool {
    match provider {
        Provider::Fcm | Provider::WebPush => true,
        Provider::Apns => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::dry_run::DryRunPusher;

    #[test]
    fn each_mode_picks_its_pushers() {
        let pusher = || -> Arc<dyn Pusher> { Arc::new(DryRunPusher) };
        let (fcm, apns, webpush, dry) = (pusher(), pusher(), pusher(), pusher());
        let pushers = Pushers::new(
            PerProvider {
                fcm: Some(Arc::clone(&fcm)),
                apns: Some(Arc::clone(&apns)),
                webpush: Some(Arc::clone(&webpush)),
            },
            Arc::clone(&dry),
        );
        let is = |p: &Option<Arc<dyn Pusher>>, want: &Arc<dyn Pusher>| {
            p.as_ref().is_some_and(|p| Arc::ptr_eq(p, want))
        };
        let dry_run = pushers.for_mode(SendMode::DryRun);
        assert!(dry_run.iter().all(|(_, p)| is(p, &dry)));
        let validate = pushers.for_mode(SendMode::Validate);
        assert!(is(&validate.fcm, &fcm) && is(&validate.apns, &dry));
        assert!(is(&validate.webpush, &webpush), "Web Push validates itself");
        let live = pushers.for_mode(SendMode::Live);
        assert!(is(&live.fcm, &fcm) && is(&live.apns, &apns) && is(&live.webpush, &webpush));
        let unconfigured = Pushers::dry_run(Arc::clone(&dry)).for_mode(SendMode::Live);
        assert!(unconfigured.iter().all(|(_, p)| p.is_none()));
    }

    #[test]
    fn each_app_has_its_own_pushers_found_by_name() {
        use crate::apps::{AppName, AppNames};
        let (fcm, lite_fcm, dry): (Arc<dyn Pusher>, Arc<dyn Pusher>, Arc<dyn Pusher>) = (
            Arc::new(DryRunPusher),
            Arc::new(DryRunPusher),
            Arc::new(DryRunPusher),
        );
        let only_fcm = |p: &Arc<dyn Pusher>| PerProvider {
            fcm: Some(Arc::clone(p)),
            apns: None,
            webpush: None,
        };
        let pushers =
            Pushers::new(only_fcm(&fcm), Arc::clone(&dry)).with_app("lite", only_fcm(&lite_fcm));
        let is = |p: &Option<Arc<dyn Pusher>>, want: &Arc<dyn Pusher>| {
            p.as_ref().is_some_and(|p| Arc::ptr_eq(p, want))
        };
        assert!(is(
            &pushers.for_app("lite", SendMode::Live).unwrap().fcm,
            &lite_fcm
        ));
        assert!(is(
            &pushers.for_app("default", SendMode::Live).unwrap().fcm,
            &fcm
        ));
        assert!(pushers.for_app("gone", SendMode::Live).is_none());
        let names = AppNames::new(["lite", "beta"].map(|n| AppName::parse(n).unwrap()));
        let all = pushers.for_apps(&names, SendMode::Live);
        let lite = names.resolve(Some("lite")).unwrap();
        let beta = names.resolve(Some("beta")).unwrap();
        assert!(is(&all[lite].fcm, &lite_fcm) && all[beta].fcm.is_none());
        let dry_runs = pushers.for_apps(&names, SendMode::DryRun);
        assert!(
            is(&dry_runs[beta].fcm, &dry),
            "a dry run needs no configured app"
        );
    }
}

//! `notifier send`: one push in the current send mode, through the same retry rules as a fan-out:
//! the way to try credentials on one phone, or a VAPID key on one browser's subscription.

use std::sync::Arc;

use anyhow::Context;
use tracing::Instrument;

use crate::apps::DEFAULT_APP;
use crate::audience::{Device, Platform, Provider};
use crate::config::Settings;
use crate::content::Notification;
use crate::push::dry_run::DryRunPusher;
use crate::push::retry::{RetryPolicy, deliver};
use crate::push::{MaskedToken, Push, PushOutcome, Pusher};

pub(super) async fn send(
    settings: &Settings,
    provider: &str,
    token: String,
    title: String,
    body: String,
    platform: Option<String>,
    app: Option<String>,
) -> anyhow::Result<()> {
    let provider = Provider::parse(provider).context("--provider names no provider")?;
    let platform = platform.map_or_else(|| default_platform(provider), |p| Platform::parse(&p));
    let app = app.unwrap_or_else(|| DEFAULT_APP.to_string());
    let event_id: Arc<str> = Arc::from(format!("send:{}", chrono::Utc::now().timestamp_millis()));
    let push = Push {
        event_id: Arc::clone(&event_id),
        device: Device {
            id: 0,
            user_id: None,
            provider: Some(provider),
            platform: Some(platform),
            app: settings.app_names().resolve(Some(&app)),
            token,
            locale: None,
            updated_at: None,
        },
        content: Arc::new(Notification {
            title,
            body,
            data: vec![("type".into(), "test".into())],
            collapse_id: event_id.to_string(),
            thread_id: "notifier-send".into(),
        })
        .into(),
    };
    let pusher = pusher_for(settings, &app, provider)?;
    let policy = RetryPolicy::from(&settings.retry);
    // The span names the push in its log lines, as an event's span does in `run`.
    let span = tracing::info_span!("send", event_id = %event_id);
    let done = deliver(
        &*pusher,
        &push,
        &policy,
        &crate::pacing::Pacer::unpaced(),
        &app,
        &|| false,
        &crate::push::engine::Open,
    )
    .instrument(span)
    .await
    .context("the push was withdrawn")?;
    let detail = match &done.outcome {
        PushOutcome::Delivered => String::new(),
        PushOutcome::Unregistered { reason, .. }
        | PushOutcome::Retryable { reason, .. }
        | PushOutcome::Rejected { reason } => format!(": {reason}"),
        PushOutcome::Skipped { reason } => format!(": {reason}"),
        PushOutcome::CredentialsRejected {
            reason, setting, ..
        } => {
            format!(": {reason} (check {setting})")
        }
    };
    let of_app = match app.as_str() {
        DEFAULT_APP => String::new(),
        app => format!(" of app {app}"),
    };
    println!(
        "{}{of_app} push to {} ({} mode, {} attempt(s)): {}{detail}",
        provider.as_str(),
        MaskedToken(&push.device.token),
        settings.send_mode.as_str(),
        done.attempts,
        done.outcome.label(),
    );
    anyhow::ensure!(
        done.outcome == PushOutcome::Delivered,
        "the push was not delivered"
    );
    Ok(())
}

/// The platform a device of `provider` has when `--platform` does not say: a browser for Web Push.
fn default_platform(provider: Provider) -> Platform {
    match provider {
        Provider::WebPush => Platform::Web,
        Provider::Fcm | Provider::Apns => Platform::Android,
    }
}

/// The pusher the send mode picks for `provider` of `app`: APNs has no validate mode, so it
/// dry-runs.
fn pusher_for(
    settings: &Settings,
    app: &str,
    provider: Provider,
) -> anyhow::Result<Arc<dyn Pusher>> {
    let pushers = crate::startup::configured_pushers(settings, Arc::new(DryRunPusher))?;
    let Some(in_mode) = pushers.for_app(app, settings.send_mode) else {
        anyhow::bail!("--app {app}: no [apps.{app}] section configures such an app");
    };
    in_mode[provider]
        .clone()
        .with_context(|| match (app, provider) {
            (DEFAULT_APP, Provider::Fcm) => {
                "FCM is not configured: set GOOGLE_APPLICATION_CREDENTIALS".to_string()
            }
            (DEFAULT_APP, Provider::Apns) => {
                "APNs is not configured: set APNS_KEY_PATH".to_string()
            }
            (DEFAULT_APP, Provider::WebPush) => {
                "Web Push is not configured: set WEBPUSH_VAPID_PRIVATE_KEY_PATH".to_string()
            }
            (app, provider) => format!("app {app} has no [apps.{app}.{provider}] section"),
        })
}

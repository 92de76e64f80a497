//! `notifier send`: one push in the current send mode, through the same retry rules as a fan-out:
//! the way to try credentials on one phone.

use std::sync::Arc;

use anyhow::Context;
use tracing::Instrument;

use crate::audience::{Device, Platform, Provider};
use crate::config::Settings;
use crate::content::Notification;
use crate::push::dry_run::DryRunPusher;
use crate::push::retry::{RetryPolicy, deliver};
use crate::push::{MaskedToken, Push, PushOutcome, Pusher, Pushers};

pub(super) async fn send(
    settings: &Settings,
    provider: &str,
    token: String,
    title: String,
    body: String,
    platform: String,
) -> anyhow::Result<()> {
    let provider = Provider::parse(provider).context("--provider is fcm or apns")?;
    let event_id: Arc<str> = Arc::from(format!("send:{}", chrono::Utc::now().timestamp_millis()));
    let push = Push {
        event_id: Arc::clone(&event_id),
        device: Device {
            id: 0,
            user_id: None,
            provider: Some(provider),
            platform: Some(Platform::parse(&platform)),
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
    let pusher = pusher_for(settings, provider)?;
    let policy = RetryPolicy::from(&settings.retry);
    // The span names the push in its log lines, as an event's span does in `run`.
    let span = tracing::info_span!("send", event_id = %event_id);
    let done = deliver(
        &*pusher,
        &push,
        &policy,
        &crate::pacing::Pacer::unpaced(),
        &|| false,
    )
    .instrument(span)
    .await;
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
    println!(
        "{} push to {} ({} mode, {} attempt(s)): {}{detail}",
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

/// The pusher the send mode picks for `provider`: APNs has no validate mode, so it dry-runs.
fn pusher_for(settings: &Settings, provider: Provider) -> anyhow::Result<Arc<dyn Pusher>> {
    let pushers = Pushers::new(crate::push::providers(settings)?, Arc::new(DryRunPusher));
    pushers.for_mode(settings.send_mode)[provider]
        .clone()
        .with_context(|| match provider {
            Provider::Fcm => "FCM is not configured: set GOOGLE_APPLICATION_CREDENTIALS",
            Provider::Apns => "APNs is not configured: set APNS_KEY_PATH",
        })
}

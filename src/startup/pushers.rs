//! Building the live pushers from the settings: which providers a send mode needs, the HTTP/2
//! connections each one gets, and the transport that carries them (TLS roots, proxy). This is
//! start-up wiring: it reads the whole `Settings`, so that the pushers need only their own
//! sections. A new provider's pusher is built here from its section.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ApnsSettings, AppProviders, FcmSettings, SendMode, Settings, WebPushSettings};
use crate::push::{ProviderPushers, Pusher, Pushers, apns, fcm, http2, webpush};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Fcm(#[from] fcm::FcmError),
    #[error(transparent)]
    ApnsKey(#[from] apns::KeyError),
    #[error("APNs connections")]
    ApnsClient(#[source] http2::SetupError),
    #[error(transparent)]
    WebPush(#[from] webpush::WebPushError),
    /// One of the `[apps.NAME]` apps: the name says which section to fix.
    #[error("app {app} ([apps.{app}]): {source}")]
    App {
        app: String,
        #[source]
        source: Box<ProviderError>,
    },
}

/// Builds the default app's pushers the send mode needs: none for a dry run (no key is read, no
/// connection made), FCM and Web Push validate-only for `validate`, every provider for `live`,
/// each only if configured.
pub fn providers(settings: &Settings) -> Result<ProviderPushers, ProviderError> {
    let apps = settings.app_providers();
    app_pushers(settings, &apps[0])
}

/// Every app's pushers (see [`providers`]), with `dry_run` for the dry runs.
pub fn configured_pushers(
    settings: &Settings,
    dry_run: Arc<dyn Pusher>,
) -> Result<Pushers, ProviderError> {
    let apps = settings.app_providers();
    let mut pushers = Pushers::new(app_pushers(settings, &apps[0])?, dry_run);
    for app in &apps[1..] {
        let live = app_pushers(settings, app).map_err(|e| ProviderError::App {
            app: app.name.to_string(),
            source: Box::new(e),
        })?;
        pushers = pushers.with_app(app.name, live);
    }
    Ok(pushers)
}

/// One app's pushers: each of its providers the send mode needs, with its own connections.
fn app_pushers(
    settings: &Settings,
    app: &AppProviders<'_>,
) -> Result<ProviderPushers, ProviderError> {
    let mode = settings.send_mode;
    let fcm = match app.fcm {
        Some(fcm) if mode != SendMode::DryRun => {
            Some(
                Arc::new(fcm_pusher(settings, fcm, mode == SendMode::Validate)?) as Arc<dyn Pusher>,
            )
        }
        _ => None,
    };
    let apns = match app.apns {
        Some(a) if mode == SendMode::Live => {
            let in_flight = settings.service.provider_peak(a.concurrency);
            let transport = apns_transport(settings, a, connections_for(in_flight, 0))?;
            Some(Arc::new(apns::ApnsPusher::new(Arc::new(transport), a)) as Arc<dyn Pusher>)
        }
        _ => None,
    };
    let webpush = match app.webpush {
        Some(w) if mode != SendMode::DryRun => Some(Arc::new(webpush_pusher(
            settings,
            w,
            mode == SendMode::Validate,
        )?) as Arc<dyn Pusher>),
        _ => None,
    };
    Ok(ProviderPushers { fcm, apns, webpush })
}

/// The Web Push pusher of a `[webpush]` section: its VAPID key read now, the connections to each
/// push service made the first time a push goes there, as FCM's are (`validate_only`: encrypted
/// and signed, never sent).
pub(crate) fn webpush_pusher(
    settings: &Settings,
    w: &WebPushSettings,
    validate_only: bool,
) -> Result<webpush::WebPushPusher, webpush::WebPushError> {
    let in_flight = settings.service.provider_peak(w.concurrency);
    let connections = connections_for(in_flight, w.connections);
    let (settings, timeout) = (settings.clone(), w.request_timeout_secs);
    let dial: webpush::Dial =
        Box::new(move |origin| http2_client(&settings, origin, connections, timeout));
    webpush::WebPushPusher::load(w, dial, validate_only)
}

/// The FCM pusher from the service account an FCM section names.
pub(crate) fn fcm_pusher(
    settings: &Settings,
    s: &FcmSettings,
    validate_only: bool,
) -> Result<fcm::FcmPusher, fcm::FcmError> {
    let timeout = Duration::from_secs(s.request_timeout_secs);
    let tokens =
        fcm::ServiceAccountTokens::from_file(std::path::Path::new(&s.credentials), timeout)?;
    let project = match s.project_id.trim() {
        "" => tokens
            .project_id()
            .map(str::to_string)
            .ok_or(fcm::FcmError::NoProject)?,
        id => id.to_string(),
    };
    // One HTTP/2 connection carries about 100 streams at Google: enough connections for the
    // pushes FCM may have in flight, and no more (providers dislike connection churn).
    let in_flight = settings.service.provider_peak(s.concurrency);
    let client = http2_client(
        settings,
        &s.endpoint,
        connections_for(in_flight, s.connections),
        s.request_timeout_secs,
    )?;
    fcm::FcmPusher::new(client, &project, Arc::new(tokens), s, validate_only)
}

/// APNs through the same HTTP/2 client as FCM, `connections` of them: to Apple's production or
/// sandbox host, or to `APNS_ENDPOINT`; closed after `apns.pool_idle_timeout_secs` unused.
pub fn apns_transport(
    settings: &Settings,
    a: &ApnsSettings,
    connections: usize,
) -> Result<apns::HttpTransport, ProviderError> {
    let token = apns::ProviderToken::load(a)?;
    let client = http2_client(
        settings,
        apns::endpoint(a),
        connections,
        a.request_timeout_secs,
    )
    .map_err(ProviderError::ApnsClient)?
    .with_idle_close(Duration::from_secs(a.pool_idle_timeout_secs));
    Ok(apns::HttpTransport::new(Arc::new(client), Arc::new(token)))
}

/// HTTP/2 connections for `in_flight` pushes: about 100 streams each (Google's and Apple's front
/// ends, and the push services'), and at least one per runtime worker thread, at most 16 on auto; `configured` wins when
/// set. A connection's frames are all read and written by its one task, on one thread at a time:
/// fewer connections than threads would leave threads with no connection work to take.
fn connections_for(in_flight: usize, configured: usize) -> usize {
    let threads = tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers());
    match configured {
        0 => in_flight.div_ceil(100).max(threads).clamp(1, 16),
        n => n,
    }
}

/// The HTTP/2 connections to a provider's endpoint: TLS with the platform's roots plus
/// `NOTIFIER_EXTRA_CA_FILE`, through `HTTPS_PROXY` unless `NO_PROXY` exempts the host (or, on a
/// plain `http://` stand-in, HTTP/2 with prior knowledge, directly).
pub(crate) fn http2_client(
    settings: &Settings,
    endpoint: &str,
    connections: usize,
    request_timeout_secs: u64,
) -> Result<http2::Http2Client, http2::SetupError> {
    let client = http2::Http2Client::new(
        endpoint,
        connections,
        settings.extra_ca_file.as_deref(),
        Duration::from_secs(request_timeout_secs),
    )?;
    let proxy = http2::Proxy::from_vars(
        settings.https_proxy.as_deref(),
        settings.no_proxy.as_deref(),
        client.host(),
    )?;
    Ok(client.with_proxy(proxy))
}

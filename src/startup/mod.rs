//! Start-up wiring, written once: `notifier run` and the integration tests both build the worker
//! here, with the status listener, the database, the claim store and the pushers.
//!
//! [`Application::build`] starts the status listener first, so probes are answered ("alive, not
//! ready") through a long start; [`Application::run_until_stopped`] runs the worker, then closes
//! what it opened. What a test needs different (its own database, recording pushers) comes in
//! through [`Overrides`]; everything else follows the settings, as in production.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::info;

use crate::api::{Backlog, Console, EventStore, PushStats, Services};
use crate::apps::{AppNames, Apps};
use crate::audience::PerProvider;
use crate::config::env::{NOTIFIER_API_ADDR, NOTIFIER_HTTP_ADDR};
use crate::config::{InputMode, SendMode, Settings, redact_url};
use crate::database::Database;
use crate::pacing::Pacer;
use crate::push::Pushers;
use crate::push::dry_run::DryRunPusher;
use crate::status::WorkerSlot;
use crate::work::Claims;
use crate::work::stream::StreamReader;
use crate::worker::{Streams, Worker};

mod pushers;

pub use pushers::{apns_transport, configured_pushers, providers};
pub(crate) use pushers::{http2_client, webpush_pusher};

/// What the caller provides instead of what the settings describe.
#[derive(Default)]
pub struct Overrides {
    /// A database connected already; the application leaves it open when it stops.
    pub database: Option<Database>,
    /// Pushers to use instead of the providers the settings configure.
    pub pushers: Option<Pushers>,
    /// Apply the database migrations before starting.
    pub migrate: bool,
}

/// A worker ready to run, its status listener (and the API's, when configured) already serving.
pub struct Application {
    worker: Arc<Worker>,
    status: Listener,
    api: Option<Listener>,
    /// The job stream and (on replicas serving the API) the `POST /push` backlog.
    streams: Streams,
    /// Connected here rather than handed in, so closed here.
    owns_database: bool,
}

/// A listener's task; dropping it (a failed start) stops the listener.
struct Listener {
    addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
    stop: DropGuard,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {setting} {addr}: {source}")]
struct BindError {
    setting: &'static str,
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds a listener, so that a taken port fails start-up naming the setting.
async fn bind(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        setting,
        addr,
        source,
    })
}

impl Listener {
    async fn status(addr: SocketAddr, slot: WorkerSlot, apps: &AppNames) -> anyhow::Result<Self> {
        // Before any metric is touched, so that every handle records into it.
        let metrics = crate::telemetry::install_metrics()?;
        // Every app's push series at 0 from the start, so `increase()` sees the first push.
        for app in apps.ids() {
            crate::push::metrics::PushMetrics::for_app(apps.name(app));
        }
        let listener = bind(NOTIFIER_HTTP_ADDR, addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::status::serve(listener, slot, metrics, stop.clone()));
        Ok(Self {
            addr,
            task,
            stop: stop.drop_guard(),
        })
    }

    /// The HTTP API, when `NOTIFIER_API_ADDR` is set.
    async fn api(
        settings: &crate::config::ApiSettings,
        services: Services,
    ) -> anyhow::Result<Option<Self>> {
        let Some(addr) = settings.addr else {
            return Ok(None);
        };
        let listener = bind(NOTIFIER_API_ADDR, addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::api::serve(
            listener,
            settings.clone(),
            services,
            stop.clone(),
        ));
        Ok(Some(Self {
            addr,
            task,
            stop: stop.drop_guard(),
        }))
    }

    async fn shut_down(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

impl Application {
    /// Builds the service the settings describe: the status listener first (probes are answered
    /// through a long start), the database, the claims and streams in Redis, the pushers, the
    /// worker, and the API when `NOTIFIER_API_ADDR` is set.
    pub async fn build(settings: Settings, overrides: Overrides) -> anyhow::Result<Self> {
        // Probes are answered from here on; the listener outlives the drain (readiness says 503).
        let slot = WorkerSlot::default();
        let apps = settings.app_names();
        let status = Listener::status(settings.service.http_addr, Arc::clone(&slot), &apps).await?;
        let owns_database = overrides.database.is_none();
        let db = match overrides.database {
            Some(db) => db,
            None => Database::connect(&settings.database).await?,
        };
        if overrides.migrate {
            db.migrate().await?;
        }
        let claims = connect_claims(&settings).await?;
        let pushers = match overrides.pushers {
            Some(pushers) => pushers,
            None => with_dry_run(&settings)?,
        };
        announce(&settings, &db);
        let pacers = pacers(&settings)?;
        let streams = connect_streams(&settings, &claims).await?;
        let stats = Arc::new(PushStats::default());
        let mut worker = Worker::new(settings, db, pushers)?
            .with_claims(claims.clone())
            .with_replicas(pacers);
        if streams.pushes.is_some() {
            worker = worker.with_api(Arc::clone(&stats));
        }
        let worker = Arc::new(worker);
        let _ = slot.set(Arc::clone(&worker));
        let services = api_services(&worker, &claims, stats);
        let api = Listener::api(&worker.settings().api, services).await?;
        Ok(Self {
            worker,
            status,
            api,
            streams,
            owns_database,
        })
    }

    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served (the bound port when it was 0).
    pub fn status_addr(&self) -> SocketAddr {
        self.status.addr
    }

    /// Where the HTTP API is served (the bound port when it was 0); `None` when it is off.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(|l| l.addr)
    }

    /// Runs the worker until `stop`, drains, then stops the listeners.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let result = Arc::clone(&self.worker).run(stop, self.streams).await;
        if let Some(api) = self.api {
            api.shut_down().await;
        }
        self.status.shut_down().await;
        if self.owns_database {
            self.worker.database().close().await;
        }
        result
    }
}

/// The deployment's pace per app and provider, kept in Redis.
fn pacers(settings: &Settings) -> anyhow::Result<Apps<PerProvider<Pacer>>> {
    let client = crate::redis_client::open(&settings.redis)?;
    let prefix = settings.claims_prefix();
    let apps = settings.app_providers();
    // Each app's FCM project has its own quota, and each app its own APNs rate. Web Push is
    // unpaced: every origin is another push service, none publishes a quota, and their 429s are
    // retried with Retry-After.
    Ok(Apps::from_fn(&settings.app_names(), |id| {
        let app = &apps[id.index()];
        let rates = PerProvider {
            fcm: app.fcm.map_or(0.0, |f| f.quota_per_minute as f64 / 60.0),
            apns: app.apns.map_or(0.0, |a| a.rate_per_second as f64),
            webpush: 0.0,
        };
        rates.map(|p, rate| Pacer::new(client.clone(), &prefix, app.name, p.as_str(), rate))
    }))
}

/// The streams this replica reads besides its input: the job stream, and on replicas serving
/// the API the `POST /push` backlog, each in the send mode's group.
async fn connect_streams(settings: &Settings, claims: &Claims) -> anyhow::Result<Streams> {
    let (keys, group) = (claims.keys(), settings.work_group());
    let lease = settings.claims.lease();
    let reader = |key: String| {
        let client = crate::redis_client::open(&settings.redis);
        let (group, owner) = (group.clone(), claims.owner().to_string());
        async move {
            let stream = StreamReader::connect(client?, &key, &group, &owner, lease).await;
            stream.with_context(|| {
                format!(
                    "cannot reach Redis at {} (REDIS_URL) for the stream {key}",
                    redact_url(&settings.redis.url)
                )
            })
        }
    };
    let jobs = Some(reader(keys.jobs()).await?);
    let pushes = match settings.api.addr {
        Some(_) => Some(reader(keys.backlog()).await?),
        None => None,
    };
    Ok(Streams { jobs, pushes })
}

/// What the API's handlers reach: the backlog and the events of this mode's work, the push
/// limit, the counts.
fn api_services(worker: &Worker, claims: &Claims, stats: Arc<PushStats>) -> Services {
    let settings = worker.settings();
    let keys = claims.keys().clone();
    let backlog = (settings.api.addr.is_some())
        .then(|| claims.connection())
        .flatten()
        .map(|redis| Backlog::new(redis, &keys, settings.api.backlog_max));
    let stream = match settings.input.mode {
        InputMode::Stream => settings.input.stream.clone(),
        InputMode::Pubsub => settings.input.api_events(&settings.claims_prefix()).stream,
    };
    let events = claims
        .is_shared()
        .then(|| EventStore::new(claims.clone(), &stream, &settings.work_group()));
    let console = claims.is_shared().then(|| Console {
        claims: claims.clone(),
        mode: settings.send_mode,
        delivery: worker.delivery(settings.send_mode),
        apps: settings.app_names(),
        stale_ms: crate::worker::HEARTBEAT_STALE.as_millis() as u64,
    });
    Services {
        events,
        backlog,
        stats,
        limit: Some(Arc::clone(&worker.limits().push.limit)),
        apps: settings.app_names(),
        keys,
        window_secs: settings.claims.dedup_window_secs,
        console,
    }
}

/// The claim store of this deployment's work in this send mode, under a name unique to this
/// process.
pub(crate) async fn connect_claims(settings: &Settings) -> anyhow::Result<Claims> {
    Claims::connect(
        &settings.redis,
        &settings.work_prefix(),
        crate::work::claims::owner_name(),
        settings.claims.lease(),
        settings.claims.window(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot reach Redis at {} (REDIS_URL) for the claims",
            redact_url(&settings.redis.url)
        )
    })
}

fn with_dry_run(settings: &Settings) -> anyhow::Result<Pushers> {
    Ok(configured_pushers(settings, Arc::new(DryRunPusher))?)
}

fn announce(settings: &Settings, db: &Database) {
    info!(
        send_mode = settings.send_mode.as_str(),
        channel = %settings.service.channel,
        database = db.backend().name(),
        concurrency = settings.service.concurrency,
        work = %settings.work_prefix(),
        "Starting notifier."
    );
    if settings.send_mode == SendMode::DryRun {
        info!(
            "Dry run: pushes are logged, no provider is contacted (set APP_ENV=production to send)."
        );
    }
}

/// A token cancelled on SIGTERM or SIGINT, listening from this moment: a stop during start-up
/// is still a graceful one.
pub(crate) fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        cancel.cancel();
    });
    stop
}

/// Completes on SIGTERM (what containers send) or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

//! The command line: `run` (the default), `migrate`, `publish`, `demo`, `send` and `check`.

pub mod demo;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::audience::{Device, Platform, Provider};
use crate::config::{SendMode, Settings, redact_url};
use crate::content::Notification;
use crate::database::Database;
use crate::event::TalkPosted;
use crate::push::Pushers;
use crate::push::dry_run::DryRunPusher;
use crate::push::fcm::{AccessTokens, ServiceAccountTokens};
use crate::push::retry::{RetryPolicy, deliver};
use crate::push::{MaskedToken, Push, PushOutcome};
use crate::redis_client::Explained;
use crate::worker::Worker;

/// Turns talk-posted events on a Redis channel into push notifications (FCM, APNs).
///
/// Settings come from the environment (and `.env`) and the TOML file named by NOTIFIER_CONFIG
/// (default config/notifier.toml). Outside APP_ENV=production every push is a dry run.
#[derive(Debug, Parser)]
#[command(name = "notifier", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Subscribe to the channel and send a push for every event (the default command).
    Run {
        /// Apply the database migrations before subscribing.
        #[arg(long)]
        migrate: bool,
    },
    /// Apply the reference schema's migrations to DATABASE_URL.
    Migrate,
    /// Publish a talk_posted event, exactly as the PHP app would.
    Publish {
        /// The talk that was posted.
        talk_id: i64,
        /// The talk's program (looked up from the talk when omitted).
        #[arg(long)]
        program_id: Option<i64>,
        /// Idempotency key (default talk_posted:TALK_ID).
        #[arg(long)]
        event_id: Option<String>,
        /// Ask for a dry run of this event, whatever the send mode.
        #[arg(long)]
        dry_run: bool,
    },
    /// Migrate the configured database, seed a small demo data set and show how to trigger it.
    Demo,
    /// Send one push in the current send mode: the way to try credentials on one phone.
    Send {
        #[arg(long, value_parser = ["fcm", "apns"])]
        provider: String,
        /// The device token.
        #[arg(long)]
        token: String,
        #[arg(long)]
        title: String,
        #[arg(long)]
        body: String,
        /// The device's platform (an iPhone reached through FCM gets the APNs block).
        #[arg(long, default_value = "android", value_parser = ["android", "ios", "web"])]
        platform: String,
    },
    /// Load and check everything (database, Redis, FCM token, APNs key) and print the effective
    /// settings with secrets masked.
    Check,
    /// Ask the running notifier's /healthz (for a container HEALTHCHECK); exit 0 when healthy.
    Healthcheck,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    crate::telemetry::init(settings.log_format);
    match cli.command.unwrap_or(Command::Run { migrate: false }) {
        Command::Run { migrate } => run_worker(settings, migrate).await,
        Command::Migrate => {
            let db = connect(&settings).await?;
            db.migrate().await?;
            println!("Migrated {}.", redact_url(&settings.database.url));
            Ok(())
        }
        Command::Publish {
            talk_id,
            program_id,
            event_id,
            dry_run,
        } => publish(&settings, talk_id, program_id, event_id, dry_run).await,
        Command::Demo => demo(&settings).await,
        Command::Send {
            provider,
            token,
            title,
            body,
            platform,
        } => send(&settings, &provider, token, title, body, platform).await,
        Command::Check => check(&settings).await,
        Command::Healthcheck => crate::status::healthcheck(settings.service.http_addr).await,
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<Database> {
    Ok(Database::connect(&settings.database).await?)
}

async fn run_worker(settings: Settings, migrate: bool) -> anyhow::Result<()> {
    // Listen for SIGTERM from the first moment: a stop during start-up is still a graceful one.
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    // Before any metric is touched, so that every handle records into it.
    let metrics = crate::telemetry::install_metrics()?;
    let listener = crate::status::bind(settings.service.http_addr).await?;
    // Probes are answered from here on; the listener outlives the drain (readiness says 503).
    let slot = crate::status::WorkerSlot::default();
    let status_stop = CancellationToken::new();
    let status = tokio::spawn(crate::status::serve(
        listener,
        Arc::clone(&slot),
        metrics,
        status_stop.clone(),
    ));
    let start = async {
        let db = connect(&settings).await?;
        if migrate {
            db.migrate().await?;
        }
        let claims = Worker::connect_claims(&settings).await.with_context(|| {
            format!(
                "cannot reach Redis at {} (REDIS_URL) for event claims",
                redact_url(&settings.redis.url)
            )
        })?;
        anyhow::Ok((db, claims))
    };
    let started = tokio::select! {
        started = start => started,
        _ = stop.cancelled() => {
            info!("Stopped during start-up.");
            status_stop.cancel();
            return Ok(());
        }
    };
    let (db, claims) = match started {
        Ok(started) => started,
        Err(e) => {
            status_stop.cancel();
            return Err(e);
        }
    };
    let providers = crate::push::providers(&settings)?;
    let pushers = Pushers::new(providers, Arc::new(DryRunPusher));
    info!(
        send_mode = settings.send_mode.as_str(),
        channel = %settings.service.channel,
        database = db.backend().name(),
        concurrency = settings.service.concurrency,
        "Starting notifier."
    );
    if settings.send_mode == SendMode::DryRun {
        info!(
            "Dry run: pushes are logged, no provider is contacted (set APP_ENV=production to send)."
        );
    }
    let worker = Arc::new(Worker::new(settings, db, pushers)?.with_claims(claims));
    let _ = slot.set(Arc::clone(&worker));
    let result = Arc::clone(&worker).run(stop).await;
    status_stop.cancel();
    let _ = status.await;
    worker.database().close().await;
    result
}

/// Completes on SIGTERM (what containers send) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
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

async fn publish(
    settings: &Settings,
    talk_id: i64,
    program_id: Option<i64>,
    event_id: Option<String>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let event = TalkPosted {
        talk_id,
        program_id,
        event_id: event_id.unwrap_or_else(|| format!("talk_posted:{talk_id}")),
        dry_run: dry_run.then_some(true),
        published_at: Some(chrono::Utc::now()),
    };
    // Check it as the worker will, so a bad id fails here rather than in the worker's log.
    let json = event.to_json();
    TalkPosted::parse(json.as_bytes()).context("the event would be rejected")?;
    let client = crate::redis_client::open(&settings.redis)?;
    let publish = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PUBLISH")
            .arg(&settings.service.channel)
            .arg(&json)
            .query_async::<i64>(&mut conn)
            .await
    };
    let receivers = publish.await.map_err(|e| {
        anyhow::anyhow!(
            "cannot publish to Redis at {}: {}",
            redact_url(&settings.redis.url),
            Explained(&e)
        )
    })?;
    println!(
        "Published {json} on {}: {receivers} subscriber(s) received it.",
        settings.service.channel
    );
    Ok(())
}

async fn send(
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
        notification: Arc::new(Notification {
            title,
            body,
            data: vec![("type".into(), "test".into())],
            collapse_id: event_id.to_string(),
            thread_id: "notifier-send".into(),
        }),
    };
    let pushers = Pushers::new(crate::push::providers(settings)?, Arc::new(DryRunPusher));
    let pusher = pushers.for_mode(settings.send_mode)[provider]
        .clone()
        .with_context(|| match provider {
            Provider::Fcm => "FCM is not configured: set GOOGLE_APPLICATION_CREDENTIALS",
            Provider::Apns => "APNs is not configured: set APNS_KEY_PATH",
        })?;
    let policy = RetryPolicy::from(&settings.retry);
    let done = deliver(&*pusher, &push, &policy, &|| false).await;
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

async fn check(settings: &Settings) -> anyhow::Result<()> {
    println!(
        "Effective settings (secrets masked):\n{}",
        settings.describe()
    );
    let mut failures = Vec::new();
    let mut report = |what: &str, result: anyhow::Result<String>| match result {
        Ok(detail) => println!("ok      {what}: {detail}"),
        Err(e) => {
            println!("FAILED  {what}: {e:#}");
            failures.push(what.to_string());
        }
    };

    let db = async {
        let db = connect(settings).await?;
        db.ping().await?;
        crate::database::Queries::prepare(&settings.queries, db.backend())?;
        let backend = db.backend().name();
        db.close().await;
        anyhow::Ok(format!("{backend} reachable, queries prepared"))
    };
    report("database (DATABASE_URL)", db.await);

    let redis = async {
        let client = crate::redis_client::open(&settings.redis)?;
        let ping = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        let pong = tokio::time::timeout(settings.redis.timeout(), ping)
            .await
            .context("no answer in time")?
            .map_err(|e| anyhow::anyhow!("{}", Explained(&e)))?;
        anyhow::Ok(format!("{pong} from {}", redact_url(&settings.redis.url)))
    };
    report("Redis (REDIS_URL)", redis.await);

    if settings.fcm.is_configured() {
        let fcm = async {
            let timeout = std::time::Duration::from_secs(settings.fcm.request_timeout_secs);
            let tokens = ServiceAccountTokens::from_file(
                std::path::Path::new(&settings.fcm.credentials),
                timeout,
            )?;
            let project = match settings.fcm.project_id.trim() {
                "" => tokens
                    .project_id()
                    .map(str::to_string)
                    .context("no project_id: set FCM_PROJECT_ID")?,
                id => id.to_string(),
            };
            tokens.bearer().await?;
            crate::push::http2_client(
                settings,
                &settings.fcm.endpoint,
                1,
                settings.fcm.request_timeout_secs,
            )?;
            anyhow::Ok(format!(
                "access token issued for project {project}, endpoint {}",
                settings.fcm.endpoint
            ))
        };
        report("FCM (GOOGLE_APPLICATION_CREDENTIALS)", fcm.await);
    } else {
        println!("-       FCM: not configured (GOOGLE_APPLICATION_CREDENTIALS unset)");
    }
    if settings.apns.is_configured() {
        let a = &settings.apns;
        let apns = crate::push::apns_transport(settings, 1).map(|_| {
            let to = match a.endpoint.trim() {
                "" if a.sandbox => "Apple sandbox".to_string(),
                "" => "Apple production".to_string(),
                endpoint => format!("stand-in at {endpoint} (APNS_ENDPOINT)"),
            };
            format!(
                "key {} of team {} loaded, topic {}, {to}",
                a.key_id, a.team_id, a.topic
            )
        });
        report("APNs (APNS_KEY_PATH)", apns.map_err(anyhow::Error::from));
    } else {
        println!("-       APNs: not configured (APNS_KEY_PATH unset)");
    }
    anyhow::ensure!(failures.is_empty(), "check failed: {}", failures.join(", "));
    println!("All checks passed ({} mode).", settings.send_mode.as_str());
    Ok(())
}

async fn demo(settings: &Settings) -> anyhow::Result<()> {
    let db = connect(settings).await?;
    db.migrate().await?;
    let seeded = crate::cli::demo::seed(&db).await?;
    db.close().await;
    let channel = &settings.service.channel;
    println!(
        "{} {}.",
        if seeded {
            "Seeded the demo data into"
        } else {
            "The demo data is already in"
        },
        redact_url(&settings.database.url)
    );
    println!(
        "\nStart the worker (dry run):   notifier run\n\
         Then trigger talk 1 (4 devices) from a shell:\n\
         \n    redis-cli PUBLISH {channel} '{{\"talk_id\": 1}}'\n\
         \nor from PHP (phpredis):\n\
         \n    php -r '$r = new Redis(); $r->connect(\"127.0.0.1\"); $r->publish(\"{channel}\", json_encode([\"talk_id\" => 1]));'\n\
         \nor with the notifier itself:   notifier publish 1"
    );
    Ok(())
}

//! The command line: `run` (the default), `migrate`, `publish`, `demo`, `send`, `check`, `cancel`
//! and `healthcheck`. This file holds the arguments and the dispatch; each command with more to it
//! than a call has a file of its own. Command and flag names are the contract (§4): keep them.

mod cancel;
mod check;
pub mod demo;
mod publish;
mod send;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use tracing::info;

use crate::audience::Provider;
use crate::config::{Settings, redact_url};
use crate::database::Database;
use crate::startup::{Application, Overrides};

/// Turns talk-posted events on a Redis channel into push notifications (FCM, APNs, Web Push).
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
    /// Send one push in the current send mode: the way to try credentials on one phone (or one
    /// browser).
    Send {
        #[arg(long, value_parser = PossibleValuesParser::new(Provider::ALL.map(Provider::as_str)))]
        provider: String,
        /// The device token; for webpush, the subscription JSON the browser gave
        /// (`{"endpoint": "https://…", "keys": {"p256dh": "…", "auth": "…"}}`).
        #[arg(long)]
        token: String,
        #[arg(long)]
        title: String,
        #[arg(long)]
        body: String,
        /// The device's platform (an iPhone reached through FCM gets the APNs block); default:
        /// web for webpush, else android.
        #[arg(long, value_parser = ["android", "ios", "web"])]
        platform: Option<String>,
        /// The app whose credentials send it: an [apps.NAME] section (default: the top-level
        /// [fcm] and [apns]).
        #[arg(long)]
        app: Option<String>,
    },
    /// Load and check everything (database, Redis, FCM token, APNs key, VAPID key) and print the
    /// effective settings with secrets masked.
    Check,
    /// Stop an event on every replica: no replica starts another of its pushes (pushes in flight
    /// finish), its queued jobs are dropped, and it ends cancelled with the counts it reached.
    Cancel {
        /// The event to stop (its event_id).
        #[arg(required_unless_present = "idempotency_key")]
        event_id: Option<String>,
        /// Stop instead the POST /push notifications of the request that carried this
        /// Idempotency-Key.
        #[arg(long, conflicts_with = "event_id")]
        idempotency_key: Option<String>,
        /// The app whose POST /apps/NAME/push took that request (default: the default app's).
        #[arg(long, requires = "idempotency_key")]
        app: Option<String>,
    },
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
        } => publish::publish(&settings, talk_id, program_id, event_id, dry_run).await,
        Command::Demo => demo::demo(&settings).await,
        Command::Send {
            provider,
            token,
            title,
            body,
            platform,
            app,
        } => send::send(&settings, &provider, token, title, body, platform, app).await,
        Command::Check => check::check(&settings).await,
        Command::Cancel {
            event_id,
            idempotency_key,
            app,
        } => cancel::cancel(&settings, event_id, idempotency_key, app).await,
        Command::Healthcheck => crate::status::healthcheck(settings.service.http_addr).await,
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<Database> {
    Ok(Database::connect(&settings.database).await?)
}

async fn run_worker(settings: Settings, migrate: bool) -> anyhow::Result<()> {
    let stop = crate::startup::stop_on_signal();
    let overrides = Overrides {
        migrate,
        ..Overrides::default()
    };
    let app = tokio::select! {
        app = Application::build(settings, overrides) => app?,
        _ = stop.cancelled() => {
            info!("Stopped during start-up.");
            return Ok(());
        }
    };
    app.run_until_stopped(stop).await
}

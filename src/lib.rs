#![warn(unreachable_pub)]

//! notifier turns "a talk was posted" events into push notifications on every device (phone or
//! browser) whose user clipped (subscribed to) the talk's program.
//!
//! The flow, one folder or file a step, in the order work takes:
//!
//! ```text
//! input ─┐                                          (talk, templates)
//! (pubsub,├► event ─► work ─► content ──────────────┐
//!  stream)│  (parse)  (claimed: one    audience ──► fanout ──► push::{engine, fcm, apns,
//! api ────┘            owner, a lease, (streamed    (a lane per   webpush, dry_run} ──► prune
//! (Gaurun, /v1,        an epoch)        query)       provider)    (admission, pace,    (dead
//!  console)                                                        retries, the fence)  tokens)
//! ```
//!
//! # Layout
//!
//! Where work comes in:
//! - [`input`]: events from a Redis channel (`pubsub`) or stream (`stream`), one `Input`.
//! - [`api`]: the HTTP API on its own listener: Gaurun's `POST /push` (`gaurun_push`, the
//!   notification's rules in `gaurun`, read as Go read it in `gaurun_json`, mapped onto the
//!   providers' requests by `gaurun_map`), the native `/v1` routes (`events`), the console
//!   (`console`), behind bearer tokens and limits (`guard`).
//!
//! The steps:
//! - [`event`]: the event's shape and its validation; every rejection names a reason.
//! - [`work`]: every unit of work (an event, a job of a split event, a `POST /push`
//!   notification) and its one owner: claims with a lease and a fencing epoch (`claims`), what a
//!   run holds while it sends (`fence`, `keeper`), the one Redis Stream consumer (`stream`), a
//!   split event's plan and totals (`plan`, `totals`), and where each lives (`keys`).
//! - [`content`]: the talk (`talk`) and the per-locale notification that fits the payload limit.
//! - [`audience`]: the devices of an event, streamed from the database; [`device`] is what a
//!   device is (provider, platform, app) and `PerProvider`, one of something per provider;
//!   [`apps`] the apps one deployment serves (`AppName`, the `AppId` a row resolves to once, and
//!   `Apps`, one of something per app: pushers, permits, pace, counts).
//! - [`fanout`]: one lane per provider over an audience or a list of tokens (`lane`, `pages`),
//!   the tally of outcomes and pauses (`tally`), checkpoints (`checkpoint`), the report.
//! - [`push`]: the engine every push goes through (`engine`: permits, pace, retries, the run's
//!   fence on every attempt), the `Pusher` trait, typed outcomes, and one folder per provider with
//!   its settings (`fcm`, `apns`, `webpush`) plus `dry_run`; HTTP/2 goes through `h2-shards`.
//! - [`prune`]: dead tokens disabled in batches.
//! - [`pacing`]: one rate per provider shared by every replica, kept in Redis.
//!
//! Around them:
//! - [`worker`]: runs every unit (`intake` and `run` for events, `coordinator` and `jobs` for
//!   split events, `pushes` for `POST /push`, `running` and `settlement` for what all share,
//!   `heartbeat` for the console).
//! - [`startup`]: builds the running service from the settings, for `main` and the tests alike,
//!   and the pushers (`pushers`).
//! - [`config`]: the settings: file, environment (one table), validation, `notifier check`'s
//!   listing. Each component owns its own section; config only composes them.
//! - [`database`]: the pool and the configured queries, on PostgreSQL, MySQL/MariaDB or SQLite.
//! - [`redis_client`]: every Redis client, TLS included. [`redact`]: how secrets look in logs.
//! - [`telemetry`]: logs (a unit's span on every line) and metric names; [`status`]: health,
//!   readiness and `/metrics`; [`http_server`]: how both listeners serve (timeouts, a bound on
//!   connections); [`backoff`]: retry delays; [`cli`]: the command line.
//!
//! Dependencies run one way, from the wiring (cli, startup, worker, status) down to the steps, and
//! `tests/notifier/architecture.rs` fails on an import cycle or a provider reaching the database.

mod api;
mod apps;
mod audience;
mod backoff;
pub mod cli;
mod config;
mod content;
mod database;
mod device;
mod event;
mod fanout;
mod http_server;
mod input;
mod pacing;
mod prune;
mod push;
mod redact;
mod redis_client;
mod startup;
mod status;
mod telemetry;
mod work;
mod worker;

// The library's surface: what `main` and the integration tests use. Everything else is
// `pub(crate)`, so a change inside a step cannot break a caller outside the crate.
pub use apps::{AppId, AppName, AppNames, Apps, DEFAULT_APP};
pub use audience::{AppResolver, Audience, PageSink};
pub use config::{ApnsSettings, AppProviders, AppSettings, ENV_VARS, InputMode, Settings};
pub use content::Notification;
pub use database::{Backend, Database, Queries, ReadEnd};
pub use device::{Device, PerProvider, Platform, Provider};
pub use fanout::{AppReport, FanoutReport};
pub use push::apns::{
    ApnsPusher, ApnsRequest, ApnsResponse, ApnsTransport, Clock, HttpTransport, ProviderToken,
    SystemClock, TransportError,
};
pub use push::{
    ApnsPrebuilt, ApnsPushType, FcmPrebuilt, Prebuilt, Push, PushContent, PushOutcome, Pusher,
    Pushers,
};
pub use redis_client::{Explained, open as open_redis};
pub use startup::{Application, Overrides, apns_transport, configured_pushers, providers};
pub use telemetry::{LogFormat, init as init_logs};
pub use worker::{EventOutcome, Summary, Worker};

/// Makes ring the process's TLS crypto provider. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

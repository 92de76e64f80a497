#![warn(unreachable_pub)]

//! notifier turns "a talk was posted" events into push notifications on every device (phone or
//! browser) whose user clipped (subscribed to) the talk's program.
//!
//! The flow, one folder or file a step, in the order an event takes:
//!
//! ```text
//! input ──► event ──► claims ──► content ──┐
//! (pub/sub  (parse,   (one run    (talk,    ├──► fanout ──► push::{fcm, apns, webpush,  ──► prune
//!  or a     validate)  a deploy-   templates)│   (a lane     dry_run} (one Pusher per     (dead
//!  stream)             ment)     audience ──┘    per          provider, push::retry)      tokens)
//!                                (streamed       provider)
//!                                 query)
//! ```
//!
//! # Layout
//!
//! The steps:
//! - [`input`]: where events come in (`pubsub`, `stream`), and the Redis connection they share.
//! - [`event`]: the event's shape and its validation; every rejection names a reason.
//! - [`claims`]: exactly one run of an event per deployment: claim, lease, checkpoint, keeper.
//! - [`content`]: the talk (`talk`) and the per-locale notification that fits the payload limit.
//! - [`audience`]: the devices of an event, streamed from the database; [`device`] is what a
//!   device is (provider, platform, app) and `PerProvider`, one of something per provider;
//!   [`apps`] the apps one deployment serves (`AppName`, the `AppId` a row resolves to once, and
//!   `Apps`, one of something per app: pushers, permits, pace, counts).
//! - [`fanout`]: one lane per provider under bounded concurrency (`lane`), the tally of
//!   outcomes and pauses (`tally`), checkpoints (`checkpoint`) and page reads (`pages`).
//! - [`push`]: the `Pusher` trait, typed outcomes, retries, and one folder per provider
//!   (`fcm`, `apns`, `webpush`) plus `dry_run`; HTTP/2 goes through the `h2-shards` crate.
//! - [`prune`]: dead tokens disabled in batches.
//! - [`jobs`] and [`pacing`]: one large event cut into jobs every replica of the deployment takes
//!   from a Redis Stream, and one rate per provider shared by all of them, kept in Redis.
//!
//! Around them:
//! - [`worker`]: runs each event through the steps (`intake`, `run`, `outcome`).
//! - [`app`]: builds the running service from the settings, for `main` and the tests alike.
//! - [`config`]: the settings: file, environment (one table), validation, `notifier check`'s
//!   listing. Each component owns its own section; config only composes them.
//! - [`database`]: the pool and the configured queries, on PostgreSQL, MySQL/MariaDB or SQLite.
//! - [`redis_client`]: every Redis client, TLS included. [`redact`]: how secrets look in logs.
//! - [`api`]: the HTTP API on its own listener: Gaurun's `POST /push` (`gaurun`, mapped onto
//!   the providers' requests by `gaurun_map`) behind bearer tokens and limits (`guard`).
//! - [`telemetry`]: logs (an event's span on every line) and metric names; [`status`]: health,
//!   readiness and `/metrics`; [`backoff`]: retry delays; [`cli`]: the command line.
//!
//! Dependencies run one way, from the wiring (cli, app, worker, status) down to the steps, and
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

//! notifier turns "a talk was posted" events on a Redis channel into push notifications on every
//! device whose user clipped (subscribed to) the talk's program.
//!
//! The flow, one module a step:
//!
//! ```text
//! subscriber ─► event ─► audience ─┐
//!  (Redis)     (parse)   (database)├─► fanout ─► push::{fcm, apns, dry_run}
//!                        content ──┘  (lanes,    (one Pusher per provider,
//!                       (templates)    bounded)   push::retry by their rules)
//!                                        └──► prune (dead tokens, batched)
//! ```
//!
//! [`worker`] ties the steps together for each event; [`settings`], [`database`] and
//! [`telemetry`] serve them all, and [`cli`] is the command line.

pub mod app;
pub mod audience;
pub mod backoff;
pub mod claims;
pub mod cli;
pub mod config;
pub mod content;
pub mod database;
pub mod event;
pub mod fanout;
pub mod input;
pub mod jobs;
pub mod pacing;
pub mod prune;
pub mod push;
pub mod redact;
pub mod redis_client;
pub mod status;
pub mod telemetry;
pub mod worker;

/// Makes ring the process's TLS crypto provider. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

//! notifier turns "a talk was posted" events on a Redis channel into push notifications on every
//! device whose user clipped (subscribed to) the talk's program.
//!
//! The flow, one module a step:
//!
//! ```text
//! subscriber ─► event ─► audience ─┐
//!  (Redis)     (parse)   (database)├─► fanout ─► push::{dry_run, …}
//!                        content ──┘  (bounded)  (one Pusher per provider)
//!                       (templates)
//! ```
//!
//! [`worker`] ties the steps together for each event; [`settings`], [`database`] and
//! [`telemetry`] serve them all, and [`cli`] is the command line.

pub mod audience;
pub mod backoff;
pub mod cli;
pub mod content;
pub mod database;
pub mod demo;
pub mod event;
pub mod fanout;
pub mod push;
pub mod settings;
pub mod subscriber;
pub mod telemetry;
pub mod worker;

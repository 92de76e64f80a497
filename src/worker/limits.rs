//! The limits every running event shares: pushes in flight (all providers, and per provider),
//! audience reads open at once, how long a failed page read is retried, and the drain.
//!
//! Sized once from the settings when the worker is made; the numbers live in the settings, the
//! reasoning for their defaults in the README's performance notes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::warn;

use crate::apps::Apps;
use crate::audience::{PerProvider, Provider};
use crate::config::Settings;
use crate::database::audience_reads;
use crate::fanout::FanoutLimits;
use crate::push::{PushLimit, PushLimits, Share, Shares};

pub(super) fn fanout_limits(settings: &Settings) -> FanoutLimits {
    let service = &settings.service;
    let apps = settings.app_providers();
    let permits = Arc::new(Semaphore::new(service.concurrency));
    let push = PushLimits {
        limit: Arc::new(PushLimit::new(Arc::clone(&permits), service.concurrency)),
        permits,
        // Each app's providers have their own share (as configured in its section), so a slow
        // app or provider never takes another's slots beyond the global limit they all share.
        shares: Arc::new(Shares::new(Apps::from_fn(&settings.app_names(), |id| {
            let app = &apps[id.index()];
            let share =
                |configured: usize| Share::new(service.provider_limit(configured), configured > 0);
            PerProvider {
                fcm: share(app.fcm.map_or(0, |f| f.concurrency)),
                apns: share(app.apns.map_or(0, |a| a.concurrency)),
                webpush: share(app.webpush.map_or(0, |w| w.concurrency)),
            }
        }))),
        drain_timeout: service.drain_timeout(),
    };
    FanoutLimits {
        push,
        audience_reads: Arc::new(Semaphore::new(reads_budget(settings))),
        retry_pages_for: Duration::from_secs(settings.database.retry_for_secs),
    }
}

/// Audience reads open at once; a WARN when the pool is too small for every running event's
/// lanes to read at once.
fn reads_budget(settings: &Settings) -> usize {
    let reads = audience_reads(settings.database.max_connections);
    let lanes = Provider::ALL.len() * settings.service.max_concurrent_events;
    if reads < lanes {
        warn!(
            max_connections = settings.database.max_connections,
            max_concurrent_events = settings.service.max_concurrent_events,
            audience_reads = reads,
            "database.max_connections leaves room for {reads} audience reads at once, fewer than the {lanes} lanes of service.max_concurrent_events events: some lanes will wait their turn. Set it to {} to avoid that.",
            lanes + crate::database::SHORT_STATEMENT_CONNECTIONS as usize
        );
    }
    reads
}

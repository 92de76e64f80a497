//! Delivery of what `POST /push` accepted: every replica of the deployment runs a consumer of the
//! backlog stream (`backlog`) in one consumer group, so each entry (one Gaurun notification) is
//! sent by one replica; a dead replica's entries are taken over with `XAUTOCLAIM` once idle
//! longer than the claim lease, as jobs are (`jobs::JobQueue`, whose reading this reuses).
//!
//! Each token goes through the events' delivery engine: the send mode's pushers, the retry
//! policy, the deployment's pace, the same concurrency limits (the provider's, then the global
//! one) and push metrics. Exactly once per token: the indexes of the tokens settled are kept in a
//! set beside the entry (`{prefix}api:push:done:{entry}`), a replica that takes the entry over
//! skips them, and the entry is acknowledged only once every token is settled. A push in flight
//! when its replica died is sent again, as an event's in-flight pushes are.
//!
//! Dead tokens are not pruned (the caller owns them): they are logged, masked, and counted in
//! `notifier_api_dead_tokens_total`. A rejection of our credentials pauses the provider for the
//! rest of the notification, as for the rest of an event.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::StreamId;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use super::backlog::Accepted;
use super::gaurun_map;
use super::stat::PushStats;
use crate::apps::AppId;
use crate::device::{Device, Platform, Provider};
use crate::fanout::{Delivery, FanoutLimits, skipped};
use crate::jobs::{JobError, JobQueue};
use crate::push::{MaskedToken, Prebuilt, Push, PushContent, PushOutcome, Pusher};
use crate::redis_client::Explained;
use crate::telemetry::API_DEAD_TOKENS;

/// Entries (notifications) sent at once by one replica; their tokens share the push limits.
const ENTRIES_AT_ONCE: usize = 16;
/// How long one read waits for new entries.
const BLOCK: Duration = Duration::from_secs(2);

/// What every entry's delivery shares.
pub(crate) struct Sender {
    redis: ConnectionManager,
    /// The backlog's queue, for finishing and touching entries (reads go through the loop's).
    queue: JobQueue,
    done_prefix: String,
    delivery: Delivery,
    limits: FanoutLimits,
    stats: Arc<PushStats>,
    /// How long a done-set outlives a crash: the claims' dedup window.
    window: Duration,
    lease: Duration,
}

/// The backlog's consumer on this replica.
pub(crate) struct Consumer {
    queue: JobQueue,
    sender: Arc<Sender>,
}

impl Consumer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn connect(
        client: redis::Client,
        claims_prefix: &str,
        consumer: &str,
        lease: Duration,
        window: Duration,
        delivery: Delivery,
        limits: FanoutLimits,
        stats: Arc<PushStats>,
    ) -> Result<Self, JobError> {
        let key = super::backlog::key(claims_prefix);
        let queue = JobQueue::on_stream(client.clone(), key, consumer, lease).await?;
        let redis = client.get_connection_manager().await?;
        let sender = Sender {
            redis,
            queue: queue.clone(),
            done_prefix: format!("{claims_prefix}api:push:done:"),
            delivery,
            limits,
            stats,
            window,
            lease,
        };
        Ok(Self {
            queue,
            sender: Arc::new(sender),
        })
    }

    /// Sends entries until `stop`; entries unfinished then stay pending for a takeover.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let running = TaskTracker::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(ENTRIES_AT_ONCE));
        loop {
            let free = slots.available_permits();
            let read = tokio::select! {
                _ = stop.cancelled() => break,
                read = self.queue.next_entries(BLOCK, free.max(1)) => read,
            };
            let entries = match read {
                Ok(entries) => entries,
                Err(e) => {
                    warn!(error = %e, "The API's push backlog cannot be read; trying again.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for (entry, taken_over) in entries {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                if taken_over {
                    info!(entry = %entry.id, "An API push left by another replica is taken over.");
                }
                let (sender, stop) = (Arc::clone(&self.sender), stop.clone());
                running.spawn(async move {
                    sender.send_entry(entry, &stop).await;
                    drop(slot);
                });
            }
        }
        running.close();
        let drain = self.sender.limits.drain_timeout;
        if tokio::time::timeout(drain, running.wait()).await.is_err() {
            warn!("API pushes still in flight at the drain deadline are left to a takeover.");
        }
    }
}

impl Sender {
    /// Sends every token of one entry not settled yet, then finishes the entry.
    async fn send_entry(self: Arc<Self>, entry: StreamId, stop: &CancellationToken) {
        let id = entry.id.clone();
        let built = Accepted::from_entry(&entry).and_then(|a| {
            let prebuilt = gaurun_map::prebuilt(&a.notification, a.provider, a.accepted_at)
                .map_err(|e| e.to_string())?;
            Ok((a, prebuilt))
        });
        let (accepted, prebuilt) = match built {
            Ok(built) => built,
            Err(reason) => {
                warn!(entry = %id, %reason, "An API push entry cannot be read; it is dropped.");
                self.finish(&id).await;
                return;
            }
        };
        let done_key = format!("{}{id}", self.done_prefix);
        let done: HashSet<usize> = match redis::AsyncCommands::smembers(
            &mut self.redis.clone(),
            &done_key,
        )
        .await
        {
            Ok(done) => done,
            Err(e) => {
                // Left pending: read again once Redis answers, by whoever takes it over.
                warn!(entry = %id, error = %Explained(&e), "An API push's progress cannot be read; it is left for later.");
                return;
            }
        };
        let keeper = tokio::spawn(Arc::clone(&self).keep_fresh(id.clone()));
        // Every line about the entry's tokens names the caller's `identifier`, as Gaurun's log
        // did, so a caller can find which of its requests a dead token came in.
        let span =
            info_span!("api_push", entry = %id, identifier = %accepted.notification.identifier);
        let settled = self
            .send_tokens(&id, &accepted, Arc::new(prebuilt), &done, &done_key, stop)
            .instrument(span)
            .await;
        keeper.abort();
        if settled {
            self.finish(&id).await;
            let _: redis::RedisResult<()> =
                redis::AsyncCommands::del(&mut self.redis.clone(), &done_key).await;
        }
    }

    /// True when every token is settled; false after a stop left some unsent.
    async fn send_tokens(
        self: &Arc<Self>,
        id: &str,
        accepted: &Accepted,
        prebuilt: Arc<Prebuilt>,
        done: &HashSet<usize>,
        done_key: &str,
        stop: &CancellationToken,
    ) -> bool {
        let provider = accepted.provider;
        let event_id: Arc<str> = Arc::from(format!("api:{id}"));
        // The app was configured when the request came in; a restart since may have dropped it.
        let app = self.delivery.apps.resolve(Some(&accepted.app));
        let paused = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let mut stopped = false;
        let pending =
            (accepted.notification.token.iter().enumerate()).filter(|(i, _)| !done.contains(i));
        for (index, token) in pending {
            let push = Push {
                event_id: Arc::clone(&event_id),
                device: device(app, provider, token),
                content: PushContent::Prebuilt(Arc::clone(&prebuilt)),
            };
            let Some(app) = app else {
                let outcome = skipped(
                    provider,
                    &format!("app {:?} is not configured", accepted.app),
                );
                self.settle(AppId::DEFAULT, provider, &push, outcome, index, done_key)
                    .await;
                continue;
            };
            let Some(pusher) = self.delivery.pushers[app][provider].clone() else {
                let outcome = skipped(provider, "not configured");
                self.settle(app, provider, &push, outcome, index, done_key)
                    .await;
                continue;
            };
            let permits = tokio::select! {
                biased;
                _ = stop.cancelled() => { stopped = true; break }
                permits = self.permits(app, provider) => permits,
            };
            let Some(permits) = permits else { break };
            let (sender, paused, done_key) =
                (Arc::clone(self), Arc::clone(&paused), done_key.to_string());
            tasks.spawn(
                async move {
                    sender
                        .push(
                            app, provider, pusher, push, permits, &paused, index, &done_key,
                        )
                        .await;
                }
                .in_current_span(),
            );
        }
        let drained = async { while tasks.join_next().await.is_some() {} };
        if stopped {
            if tokio::time::timeout(self.limits.drain_timeout, drained)
                .await
                .is_err()
            {
                tasks.abort_all();
            }
            return false;
        }
        drained.await;
        true
    }

    /// The provider's permit, then the global one, as a fan-out lane takes them.
    async fn permits(
        &self,
        app: AppId,
        provider: Provider,
    ) -> Option<(
        tokio::sync::OwnedSemaphorePermit,
        tokio::sync::OwnedSemaphorePermit,
    )> {
        let own = Arc::clone(&self.limits.provider_permits[app][provider])
            .acquire_owned()
            .await
            .ok()?;
        let global = Arc::clone(&self.limits.permits)
            .acquire_owned()
            .await
            .ok()?;
        Some((own, global))
    }

    #[allow(clippy::too_many_arguments)]
    async fn push(
        &self,
        app: AppId,
        provider: Provider,
        pusher: Arc<dyn Pusher>,
        push: Push,
        permits: (
            tokio::sync::OwnedSemaphorePermit,
            tokio::sync::OwnedSemaphorePermit,
        ),
        paused: &AtomicBool,
        index: usize,
        done_key: &str,
    ) {
        let is_paused = || paused.load(Ordering::Relaxed);
        let done = (self.delivery)
            .send((app, provider), &*pusher, &push, &is_paused)
            .await;
        drop(permits);
        if let PushOutcome::CredentialsRejected {
            reason, setting, ..
        } = &done.outcome
            && !paused.swap(true, Ordering::Relaxed)
        {
            error!(provider = provider.as_str(), %reason, setting,
                "The provider rejected our credentials; the rest of this API notification is not sent. Check {setting}.");
        }
        self.settle(app, provider, &push, done.outcome, index, done_key)
            .await;
    }

    /// Counts the outcome, logs what the caller must know, and marks the token done.
    async fn settle(
        &self,
        app: AppId,
        provider: Provider,
        push: &Push,
        outcome: PushOutcome,
        index: usize,
        done_key: &str,
    ) {
        self.delivery.metrics[app].outcome(provider, outcome.kind());
        self.stats
            .count(provider, matches!(outcome, PushOutcome::Delivered));
        let token = MaskedToken(&push.device.token);
        match &outcome {
            PushOutcome::Delivered | PushOutcome::CredentialsRejected { .. } => {}
            PushOutcome::Unregistered { reason, .. } => {
                let app = self.delivery.apps.name(app).to_string();
                metrics::counter!(API_DEAD_TOKENS, "app" => app, "provider" => provider.as_str())
                    .increment(1);
                warn!(event_id = %push.event_id, %token, %reason,
                    "A token of POST /push is dead; it is the caller's to remove.");
            }
            PushOutcome::Rejected { reason } | PushOutcome::Retryable { reason, .. } => {
                warn!(event_id = %push.event_id, %token, %reason, outcome = outcome.label(),
                    "A push of POST /push failed.");
            }
            PushOutcome::Skipped { reason } => {
                warn!(event_id = %push.event_id, %token, %reason, "A push of POST /push was skipped.");
            }
        }
        let marked: redis::RedisResult<()> = redis::pipe()
            .sadd(done_key, index)
            .ignore()
            .expire(done_key, self.window.as_secs() as i64)
            .ignore()
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(e) = marked {
            warn!(event_id = %push.event_id, %token, error = %Explained(&e),
                "A sent API push cannot be marked done; a takeover may send it again.");
        }
    }

    /// Keeps the entry with this replica while it is sent (see `JobQueue::touch`).
    async fn keep_fresh(self: Arc<Self>, id: String) {
        let every = (self.lease / 3).max(Duration::from_millis(200));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.queue.touch(&id).await {
                warn!(entry = %id, error = %e, "An API push's entry cannot be kept fresh.");
            }
        }
    }

    async fn finish(&self, id: &str) {
        if let Err(e) = self.queue.finish(id).await {
            warn!(entry = %id, error = %e, "A sent API push cannot be acknowledged; it will be read again, its tokens skipped.");
        }
    }
}

/// A device for a Gaurun token: no row behind it; its id, a hash of the token, picks the
/// HTTP/2 connection as a device id does.
fn device(app: Option<AppId>, provider: Provider, token: &str) -> Device {
    let id = token
        .bytes()
        .fold(0i64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    Device {
        id,
        user_id: None,
        provider: Some(provider),
        platform: Some(match provider {
            Provider::Apns => Platform::Ios,
            Provider::Fcm => Platform::Android,
        }),
        app,
        token: token.to_string(),
        locale: None,
        updated_at: None,
    }
}

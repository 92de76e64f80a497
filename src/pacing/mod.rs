//! Pacing shared by every replica of a deployment (contract §8): one rate per app and provider,
//! kept in Redis under the deployment's claims prefix (`{prefix}pace:fcm` for the default app,
//! `{prefix}pace:fcm:NAME` for another: each app's FCM project has its own quota), so that the sends of all
//! replicas together stay under the provider's quota (`FCM_QUOTA_PER_MINUTE`,
//! `APNS_RATE_PER_SECOND`).
//!
//! A push asks its provider's [`Pacer`] for a permit before it is sent. Permits come from a local
//! pool refilled from Redis a batch at a time (at most [`BATCH_SPAN`] of the rate), so a push costs
//! a lock, not a round trip. The pace is smooth: Redis lets at most [`BURST`] of unused budget
//! accumulate, and a pooled permit not used within [`HOLD`] is dropped, so in any window the
//! deployment sends at most the window's share plus about one second's worth.
//!
//! A `QUOTA_EXCEEDED` answer slows the shared rate ([`Pacer::quota_exceeded`]; how much and how it
//! recovers is in `shared`). When Redis does not answer within [`REDIS_WAIT`], the replica fails
//! open to the same rate on its own (a WARN says so) and asks Redis again after [`LOCAL_SPELL`]:
//! sending stops for no outage, and a deployment of N replicas then sends at most N times the
//! rate until Redis is back. Waits and the rate now are metrics (names below; `describe_metrics`
//! gives their HELP lines).

mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, counter, describe_counter, describe_gauge};
use metrics::{describe_histogram, gauge, histogram};
use tokio::sync::Mutex;
use tracing::{info, warn};

use shared::{LocalRate, Take};

/// Seconds a push waited for a permit (only pushes that waited), by provider.
pub(crate) const PACING_WAIT_SECONDS: &str = "notifier_pacing_wait_seconds";
/// The deployment's rate now, in sends a second, by provider (below the configured one after a
/// `QUOTA_EXCEEDED`).
pub(crate) const PACING_RATE: &str = "notifier_pacing_rate";
/// Slow-downs of the shared rate this replica caused, by provider.
pub(crate) const PACING_SLOWDOWNS: &str = "notifier_pacing_slowdowns_total";

/// Unused budget Redis lets accumulate while nobody sends.
pub(crate) const BURST: Duration = Duration::from_millis(500);
/// A batch of permits is at most this much of the rate.
pub(crate) const BATCH_SPAN: Duration = Duration::from_millis(50);
/// Pooled permits older than this are dropped rather than sent late in a burst.
pub(crate) const HOLD: Duration = Duration::from_millis(500);
/// The longest a take waits for Redis before this replica paces alone.
pub(crate) const REDIS_WAIT: Duration = Duration::from_secs(1);
/// How long a replica paces alone after Redis failed to answer, before asking it again.
pub(crate) const LOCAL_SPELL: Duration = Duration::from_secs(5);
/// The most permits one batch takes, however high the rate.
const MAX_BATCH: u32 = 256;

/// HELP lines for the pacing metrics; for the telemetry set-up to call with the others.
pub(crate) fn describe_metrics() {
    describe_histogram!(
        PACING_WAIT_SECONDS,
        "Time a push waited for a pacing permit."
    );
    describe_gauge!(PACING_RATE, "The deployment's pace now, sends per second.");
    describe_counter!(
        PACING_SLOWDOWNS,
        "Slow-downs of the shared pace after QUOTA_EXCEEDED."
    );
}

/// One provider's pace. Cheap to clone; an unpaced one (rate 0) lets every push through at once.
#[derive(Clone)]
pub(crate) struct Pacer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    provider: &'static str,
    key: String,
    /// Configured sends a second for the whole deployment.
    rate: f64,
    batch: u32,
    client: redis::Client,
    state: Mutex<State>,
    /// Takes from Redis (for tests: batches keep them far below the pushes).
    refills: AtomicU64,
    wait: Histogram,
    rate_now: Gauge,
    slowdowns: Counter,
    /// The rate now (f64 bits) and the provider's QUOTA_EXCEEDED answers this replica met: what
    /// its heartbeat tells the console.
    rate_bits: AtomicU64,
    quota_answers: AtomicU64,
}

/// What a replica knows of one provider's pace.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct PaceNow {
    /// Sends a second configured for the deployment.
    pub configured: f64,
    /// The deployment's pace now (below the configured one after a slow-down).
    pub now: f64,
    /// QUOTA_EXCEEDED answers (429) this replica met since it started.
    pub quota_answers: u64,
}

struct State {
    /// Permits in hand, and when they were taken.
    permits: u32,
    taken_at: Instant,
    redis: Option<redis::aio::ConnectionManager>,
    /// Set while pacing alone: until when.
    local_until: Option<Instant>,
    local: LocalRate,
}

impl Pacer {
    /// A pacer that never waits.
    pub(crate) fn unpaced() -> Self {
        Self { inner: None }
    }

    /// `rate` sends a second for the deployment (0 = unpaced), under `{prefix}pace:{provider}`
    /// for the default app and `{prefix}pace:{provider}:{app}` for another.
    pub(crate) fn new(
        client: redis::Client,
        prefix: &str,
        app: &str,
        provider: &'static str,
        rate: f64,
    ) -> Self {
        if rate <= 0.0 || !rate.is_finite() {
            return Self::unpaced();
        }
        let batch = (rate * BATCH_SPAN.as_secs_f64())
            .floor()
            .clamp(1.0, f64::from(MAX_BATCH));
        let label = app.to_string();
        let rate_now = gauge!(PACING_RATE, "app" => label.clone(), "provider" => provider);
        rate_now.set(rate);
        Self {
            inner: Some(Arc::new(Inner {
                provider,
                key: match app {
                    crate::apps::DEFAULT_APP => format!("{prefix}pace:{provider}"),
                    app => format!("{prefix}pace:{provider}:{app}"),
                },
                rate,
                batch: batch as u32,
                client,
                state: Mutex::new(State {
                    permits: 0,
                    taken_at: Instant::now(),
                    redis: None,
                    local_until: None,
                    local: LocalRate::new(Instant::now()),
                }),
                refills: AtomicU64::new(0),
                wait: histogram!(PACING_WAIT_SECONDS, "app" => label.clone(), "provider" => provider),
                rate_now,
                slowdowns: counter!(PACING_SLOWDOWNS, "app" => label, "provider" => provider),
                rate_bits: AtomicU64::new(rate.to_bits()),
                quota_answers: AtomicU64::new(0),
            })),
        }
    }

    /// Waits for one permit to send. Pushes wait in turn (the lock is fair).
    pub(crate) async fn acquire(&self) {
        if let Some(inner) = &self.inner {
            // Boxed: the wait (the lock, a Redis round trip, a sleep) is 800 bytes of state, and
            // inline it sat in every push's task, paced or not (2 KiB each, allocated and copied
            // per push); a paced push is held to the quota's rate, where a box costs nothing.
            Box::pin(Self::paced(inner)).await;
        }
    }

    async fn paced(inner: &Inner) {
        let started = Instant::now();
        let mut state = inner.state.lock().await;
        loop {
            if state.permits > 0 && state.taken_at.elapsed() < HOLD {
                state.permits -= 1;
                break;
            }
            match inner.take(&mut state).await {
                Take::Granted { permits, rate } => {
                    inner.set_rate(rate);
                    state.permits = permits;
                    state.taken_at = Instant::now();
                }
                Take::Wait { wait, rate } => {
                    inner.set_rate(rate);
                    tokio::time::sleep(wait.max(Duration::from_micros(100))).await;
                }
            }
        }
        drop(state);
        let waited = started.elapsed();
        if waited >= Duration::from_millis(1) {
            inner.wait.record(waited.as_secs_f64());
        }
    }

    /// The provider answered `QUOTA_EXCEEDED`: slows the deployment's rate (once per
    /// [`SLOW_DOWN_GAP`], however many pushes report it) and drops the permits in hand. Returns
    /// the new share of the configured rate when this call slowed it.
    pub(crate) async fn quota_exceeded(&self) -> Option<f64> {
        let inner = self.inner.as_ref()?;
        inner.quota_answers.fetch_add(1, Ordering::Relaxed);
        let mut state = inner.state.lock().await;
        state.permits = 0;
        let slowed = match inner.shared(&mut state).await {
            Some(redis) => {
                let call = shared::slow_down(redis, &inner.key);
                match tokio::time::timeout(REDIS_WAIT, call).await {
                    Ok(Ok(slowed)) => slowed,
                    _ => state.local.slow_down(Instant::now()),
                }
            }
            None => state.local.slow_down(Instant::now()),
        };
        if let Some(factor) = slowed {
            inner.slowdowns.increment(1);
            inner.set_rate(inner.rate * factor);
            info!(
                provider = inner.provider,
                rate = inner.rate * factor,
                "The provider answered QUOTA_EXCEEDED: the deployment's pace is slowed to {:.0}% of the configured rate.",
                factor * 100.0
            );
        }
        slowed
    }

    /// The pace as this replica knows it; `None` unpaced.
    pub(crate) fn now(&self) -> Option<PaceNow> {
        let inner = self.inner.as_ref()?;
        Some(PaceNow {
            configured: inner.rate,
            now: f64::from_bits(inner.rate_bits.load(Ordering::Relaxed)),
            quota_answers: inner.quota_answers.load(Ordering::Relaxed),
        })
    }

    /// Takes from Redis so far.
    #[cfg(test)]
    pub(crate) fn refills(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.refills.load(Ordering::Relaxed))
    }
}

impl Inner {
    fn set_rate(&self, rate: f64) {
        self.rate_now.set(rate);
        self.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// A batch from the shared rate, or from the local one while Redis is away.
    async fn take(&self, state: &mut State) -> Take {
        self.refills.fetch_add(1, Ordering::Relaxed);
        if let Some(redis) = self.shared(state).await {
            let call = shared::take(redis, &self.key, self.rate, self.batch, BURST);
            match tokio::time::timeout(REDIS_WAIT, call).await {
                Ok(Ok(take)) => {
                    if state.local_until.take().is_some() {
                        info!(
                            provider = self.provider,
                            "Pacing is shared through Redis again."
                        );
                    }
                    return take;
                }
                Ok(Err(e)) => self.go_local(state, &e),
                Err(_) => self.go_local(state, &"no answer within a second"),
            }
        }
        state
            .local
            .take(Instant::now(), self.rate, self.batch, BURST)
    }

    /// The Redis connection, unless this replica is pacing alone for now.
    async fn shared<'s>(
        &self,
        state: &'s mut State,
    ) -> Option<&'s mut redis::aio::ConnectionManager> {
        if state
            .local_until
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        if state.redis.is_none() {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_WAIT))
                .set_response_timeout(Some(REDIS_WAIT))
                .set_number_of_retries(1);
            let connect = self.client.get_connection_manager_with_config(config);
            match tokio::time::timeout(REDIS_WAIT, connect).await {
                Ok(Ok(redis)) => state.redis = Some(redis),
                Ok(Err(e)) => self.go_local(state, &e),
                Err(_) => self.go_local(state, &"no connection within a second"),
            }
        }
        state.redis.as_mut()
    }

    fn go_local(&self, state: &mut State, why: &dyn std::fmt::Display) {
        if state.local_until.is_none() {
            warn!(
                provider = self.provider,
                error = %why,
                "Redis did not answer the pacer: this replica paces {} alone at the deployment's rate until it does.",
                self.provider
            );
        }
        state.local_until = Some(Instant::now() + LOCAL_SPELL);
    }
}

#[cfg(test)]
mod tests;

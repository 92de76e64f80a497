//! Event claims in Redis: what makes one event reach each device once, however many replicas
//! subscribe, however often it is published, and whoever crashes.
//!
//! Claims belong to one deployment (the replicas reading one input): every event has a hash
//! `notifier:{channel:talk_posted}:event:{event_id}` (the prefix comes from
//! `Settings::claims_prefix`): its state (`running`, `done`, `failed`), its
//! owner and lease, the raw event, and the fan-out checkpoint. A replica processes an event only
//! after claiming it; it renews the lease while the fan-out runs and marks the event `done` at the
//! end, kept for the dedup window. A duplicate publish finds the claim and is skipped. If the owner
//! dies, its lease runs out and the event — listed in the active set — is taken over by whoever
//! scans next, which resumes from the checkpoint. Every change is a Lua script reading Redis's own
//! clock, so replicas never compare their local clocks.
//!
//! This file holds the store and its scripts; [`keeper`] holds what a running event does with
//! its claim (renewing, checkpointing, retrying while Redis is away).

mod keeper;

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

/// Built once: a `Script` hashes its source, and renewals and checkpoints run many times an event.
/// Each script names its keys and arguments in its opening comment (`lua/*.lua`).
static CLAIM_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/claim.lua")));
static TAKE_OVER_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/take_over.lua")));
static RENEW_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/renew.lua")));
static CHECKPOINT_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/checkpoint.lua")));
static FINISH_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/finish.lua")));
static RELEASE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/release.lua")));

pub(crate) use keeper::{Keeper, retry_redis};

/// An event's claim record, whose `state` field is `running`, `done` or `failed`; read by the
/// API's event status too.
pub(crate) fn event_key(prefix: &str, event_id: &str) -> String {
    format!("{prefix}event:{event_id}")
}

/// Every event ever claimed and not finished, by claim time.
fn active(prefix: &str) -> String {
    format!("{prefix}events:active")
}

/// What claiming an event gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// New: this replica processes it from the start.
    Claimed,
    /// Abandoned by a dead owner: this replica resumes it from the checkpoint (JSON, may be empty).
    Resumed { checkpoint: String, attempts: u32 },
    /// Another replica is processing it now.
    Busy,
    /// Already processed (or given up) within the dedup window.
    Done,
}

/// An abandoned event taken over by a scan.
#[derive(Debug, Clone)]
pub(crate) struct TakenOver {
    pub event_id: String,
    pub payload: String,
    pub checkpoint: String,
    pub attempts: u32,
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    Renewed,
    /// Another replica owns the event now: stop sending.
    Lost,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Not a `source`: the message already tells the cause (`Explained`), and a chain printed
    /// with `{:#}` would repeat it.
    #[error("{}", crate::redis_client::Explained(.0))]
    Redis(redis::RedisError),
    #[error(transparent)]
    Settings(#[from] crate::redis_client::RedisConfigError),
    /// Redis held the call past the point where the lease could be trusted.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl From<redis::RedisError> for ClaimError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

/// The claim store. Without Redis ([`Claims::unshared`]) it remembers nothing: every event is
/// claimed fresh and every write succeeds, for a worker that drives events directly (tests) and
/// so has no other replica to agree with.
#[derive(Clone)]
pub(crate) struct Claims {
    redis: Option<ConnectionManager>,
    prefix: String,
    owner: String,
    lease: Duration,
    window: Duration,
}

impl Claims {
    pub(crate) async fn connect(
        redis: &crate::config::RedisSettings,
        prefix: &str,
        owner: String,
        lease: Duration,
        window: Duration,
    ) -> Result<Self, ClaimError> {
        let client = crate::redis_client::open(redis)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let redis = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            redis: Some(redis),
            prefix: prefix.to_string(),
            owner,
            lease,
            window,
        })
    }

    /// The store that remembers nothing (see [`Claims`]).
    pub(crate) fn unshared(owner: String, lease: Duration) -> Self {
        Self {
            redis: None,
            prefix: String::new(),
            owner,
            lease,
            window: Duration::ZERO,
        }
    }

    /// Whether claims are kept in Redis, shared with other replicas: only then is there a lease
    /// to keep, a checkpoint to store, or an abandoned event to look for.
    pub(crate) fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    fn key(&self, event_id: &str) -> String {
        event_key(&self.prefix, event_id)
    }

    /// The connection, for other short commands (stream acknowledgements).
    pub(crate) fn connection(&self) -> Option<ConnectionManager> {
        self.redis.clone()
    }

    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// The keys and arguments CLAIM and RENEW share: the event's claim, the active set, this
    /// run's owner and lease, the dedup window, and the event itself.
    fn leasing(
        &self,
        script: &'static Script,
        event_id: &str,
        payload: &str,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.key(event_id))
            .key(active(&self.prefix))
            .arg(&self.owner)
            .arg(self.lease.as_millis() as u64)
            .arg(self.window.as_secs())
            .arg(payload)
            .arg(event_id);
        invocation
    }

    pub(crate) async fn claim(&self, event_id: &str, payload: &str) -> Result<Claim, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Claim::Claimed);
        };
        let (state, checkpoint, attempts): (String, String, u32) = self
            .leasing(&CLAIM_SCRIPT, event_id, payload)
            .invoke_async(&mut redis)
            .await?;
        Ok(match state.as_str() {
            "claimed" => Claim::Claimed,
            "resumed" => Claim::Resumed {
                checkpoint,
                attempts,
            },
            "busy" => Claim::Busy,
            _ => Claim::Done,
        })
    }

    pub(crate) async fn renew(
        &self,
        event_id: &str,
        payload: &str,
        checkpoint: &str,
    ) -> Result<Renewal, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Renewal::Renewed);
        };
        let renewed: i64 = self
            .leasing(&RENEW_SCRIPT, event_id, payload)
            .arg(checkpoint)
            .invoke_async(&mut redis)
            .await?;
        Ok(if renewed == 1 {
            Renewal::Renewed
        } else {
            Renewal::Lost
        })
    }

    /// Stores the checkpoint. A claim Redis lost (restarted without persistence) is written
    /// again, owned by us: we are still the ones sending.
    pub(crate) async fn checkpoint(
        &self,
        event_id: &str,
        payload: &str,
        checkpoint: &str,
    ) -> Result<Renewal, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Renewal::Renewed);
        };
        let written: i64 = CHECKPOINT_SCRIPT
            .key(self.key(event_id))
            .arg(&self.owner)
            .arg(checkpoint)
            .invoke_async(&mut redis)
            .await?;
        match written {
            1 => Ok(Renewal::Renewed),
            -1 => self.renew(event_id, payload, checkpoint).await,
            _ => Ok(Renewal::Lost),
        }
    }

    /// Marks the event done (or failed) with its `counts` (the API's event status reads them
    /// as `c:<name>`), kept for the dedup window.
    pub(crate) async fn finish(
        &self,
        event_id: &str,
        failed: bool,
        counts: &[(&str, u64)],
    ) -> Result<bool, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(true);
        };
        let mut invocation = FINISH_SCRIPT.prepare_invoke();
        invocation
            .key(self.key(event_id))
            .key(active(&self.prefix))
            .arg(&self.owner)
            .arg(if failed { "failed" } else { "done" })
            .arg(self.window.as_secs())
            .arg(event_id);
        for (name, count) in counts {
            invocation.arg(*name).arg(*count);
        }
        let done: i64 = invocation.invoke_async(&mut redis).await?;
        Ok(done == 1)
    }

    /// Gives the event up unfinished: another replica (or this one, later) resumes it.
    pub(crate) async fn release(&self, event_id: &str) -> Result<(), ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(());
        };
        let _: i64 = RELEASE_SCRIPT
            .key(self.key(event_id))
            .arg(&self.owner)
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }
}

impl Claims {
    /// The same store under an owner name of its own: every run of an event gets one, so that a
    /// run taken over — even by its own process — finds out at its next renewal.
    pub(crate) fn for_run(&self) -> Self {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            owner: format!("{}#{n}", self.base_owner()),
            ..self.clone()
        }
    }

    fn base_owner(&self) -> &str {
        self.owner.split('#').next().unwrap_or(&self.owner)
    }

    /// The ids of the events being processed (or abandoned).
    pub(crate) async fn active(&self) -> Result<Vec<String>, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Vec::new());
        };
        Ok(redis::cmd("ZRANGE")
            .arg(active(&self.prefix))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await?)
    }

    /// Takes over one active event if its lease ran out.
    pub(crate) async fn take_over(&self, event_id: &str) -> Result<Option<TakenOver>, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(None);
        };
        let got: Vec<redis::Value> = TAKE_OVER_SCRIPT
            .key(self.key(event_id))
            .key(active(&self.prefix))
            .arg(&self.owner)
            .arg(self.lease.as_millis() as u64)
            .arg(event_id)
            .invoke_async(&mut redis)
            .await?;
        let [payload, checkpoint, attempts] = &got[..] else {
            return Ok(None);
        };
        let text =
            |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).unwrap_or_default();
        Ok(Some(TakenOver {
            event_id: event_id.to_string(),
            payload: text(payload),
            checkpoint: text(checkpoint),
            attempts: redis::from_redis_value::<u32>(attempts.clone()).unwrap_or(1),
        }))
    }
}

/// A name for this process, unique among replicas.
pub(crate) fn owner_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "notifier".into());
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}

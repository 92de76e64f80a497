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

use std::time::Duration;

use std::sync::LazyLock;

use redis::Script;

/// Built once: a `Script` hashes its source, and renewals and checkpoints run many times an event.
static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM));
static TAKE_OVER_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_OVER));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW));
static CHECKPOINT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CHECKPOINT));
static FINISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
use redis::aio::ConnectionManager;

/// Every event ever claimed and not finished, by claim time.
fn active(prefix: &str) -> String {
    format!("{prefix}events:active")
}

/// What claiming an event gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
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
pub struct TakenOver {
    pub event_id: String,
    pub payload: String,
    pub checkpoint: String,
    pub attempts: u32,
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
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
}

impl From<redis::RedisError> for ClaimError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

/// The claim store.
#[derive(Clone)]
pub struct Claims {
    redis: ConnectionManager,
    prefix: String,
    owner: String,
    lease: Duration,
    window: Duration,
}

/// `claim(key, active; owner, lease_ms, window_s, payload, event_id)`
const CLAIM: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  -- No expiry while running: a long event must not lose its claim. FINISH sets the window.
  redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]),
    'payload', ARGV[4], 'attempts', 1, 'checkpoint', '')
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  return {'claimed', '', 1}
end
if state ~= 'running' then return {'done', '', 0} end
if tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') > now then return {'busy', '', 0} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]))
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {'resumed', redis.call('HGET', KEYS[1], 'checkpoint') or '', attempts}
"#;

/// `take_over(key, active; owner, lease_ms, event_id)`: only a running event whose lease ran out.
const TAKE_OVER: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state ~= 'running' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {}
end
if tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') > now then return {} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]))
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {redis.call('HGET', KEYS[1], 'payload') or '', redis.call('HGET', KEYS[1], 'checkpoint') or '', attempts}
"#;

/// `renew(key, active; owner, lease_ms, window_s, payload, event_id, checkpoint)`. A missing hash
/// (Redis restarted without persistence) is written again, owned by us: we are still sending.
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]),
    'payload', ARGV[4], 'attempts', 1, 'checkpoint', ARGV[6])
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  return 1
end
if owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[2]))
return 1
"#;

/// `checkpoint(key; owner, checkpoint)`: 1 written, 0 owned by another, -1 no claim at all
/// (Redis lost it: the caller renews, which writes it again).
const CHECKPOINT: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return -1 end
if owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[2])
return 1
"#;

/// `finish(key, active; owner, state, window_s, event_id)`
const FINISH: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'owner', ARGV[1])
redis.call('HDEL', KEYS[1], 'payload', 'checkpoint', 'lease_until')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
return 1
"#;

/// `release(key; owner)`: the lease ends now, so another replica can resume at once.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', 0)
return 1
"#;

impl Claims {
    pub async fn connect(
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
            redis,
            prefix: prefix.to_string(),
            owner,
            lease,
            window,
        })
    }

    fn key(&self, event_id: &str) -> String {
        format!("{}event:{event_id}", self.prefix)
    }

    /// The connection, for other short commands (stream acknowledgements).
    pub fn connection(&self) -> ConnectionManager {
        self.redis.clone()
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn lease(&self) -> Duration {
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

    pub async fn claim(&self, event_id: &str, payload: &str) -> Result<Claim, ClaimError> {
        let (state, checkpoint, attempts): (String, String, u32) = self
            .leasing(&CLAIM_SCRIPT, event_id, payload)
            .invoke_async(&mut self.redis.clone())
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

    pub async fn renew(
        &self,
        event_id: &str,
        payload: &str,
        checkpoint: &str,
    ) -> Result<Renewal, ClaimError> {
        let renewed: i64 = self
            .leasing(&RENEW_SCRIPT, event_id, payload)
            .arg(checkpoint)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(if renewed == 1 {
            Renewal::Renewed
        } else {
            Renewal::Lost
        })
    }

    /// Stores the checkpoint. A claim Redis lost (restarted without persistence) is written
    /// again, owned by us: we are still the ones sending.
    pub async fn checkpoint(
        &self,
        event_id: &str,
        payload: &str,
        checkpoint: &str,
    ) -> Result<Renewal, ClaimError> {
        let written: i64 = CHECKPOINT_SCRIPT
            .key(self.key(event_id))
            .arg(&self.owner)
            .arg(checkpoint)
            .invoke_async(&mut self.redis.clone())
            .await?;
        match written {
            1 => Ok(Renewal::Renewed),
            -1 => self.renew(event_id, payload, checkpoint).await,
            _ => Ok(Renewal::Lost),
        }
    }

    /// Marks the event done (or failed), kept for the dedup window.
    pub async fn finish(&self, event_id: &str, failed: bool) -> Result<bool, ClaimError> {
        let done: i64 = FINISH_SCRIPT
            .key(self.key(event_id))
            .key(active(&self.prefix))
            .arg(&self.owner)
            .arg(if failed { "failed" } else { "done" })
            .arg(self.window.as_secs())
            .arg(event_id)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(done == 1)
    }

    /// Gives the event up unfinished: another replica (or this one, later) resumes it.
    pub async fn release(&self, event_id: &str) -> Result<(), ClaimError> {
        let _: i64 = RELEASE_SCRIPT
            .key(self.key(event_id))
            .arg(&self.owner)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}

impl Claims {
    /// The same store under an owner name of its own: every run of an event gets one, so that a
    /// run taken over — even by its own process — finds out at its next renewal.
    pub fn for_run(&self) -> Self {
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
    pub async fn active(&self) -> Result<Vec<String>, ClaimError> {
        Ok(redis::cmd("ZRANGE")
            .arg(active(&self.prefix))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis.clone())
            .await?)
    }

    /// Takes over one active event if its lease ran out.
    pub async fn take_over(&self, event_id: &str) -> Result<Option<TakenOver>, ClaimError> {
        let got: Vec<redis::Value> = TAKE_OVER_SCRIPT
            .key(self.key(event_id))
            .key(active(&self.prefix))
            .arg(&self.owner)
            .arg(self.lease.as_millis() as u64)
            .arg(event_id)
            .invoke_async(&mut self.redis.clone())
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
pub fn owner_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "notifier".into());
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}

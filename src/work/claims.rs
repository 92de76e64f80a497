//! The claim store: one hash per unit of work (`keys`), changed only by the Lua scripts in
//! `lua/`, which read Redis's own clock.
//!
//! A claim names its owner (one name per run) and an epoch, raised each time another run takes
//! the unit: the [`Held`] a run gets carries both, and every write of its progress (checkpoint,
//! release, finish, the job's totals, the stream acknowledgement) is refused once another run
//! holds the unit. Without Redis ([`Claims::unshared`]) the store remembers nothing: every unit
//! is claimed fresh and every write succeeds, for a worker that drives events directly (tests).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::keys::WorkKeys;

/// Built once: a `Script` hashes its source, and renewals and checkpoints run many times a unit.
/// Each script names its keys and arguments in its opening comment.
macro_rules! script {
    ($name:ident, $file:literal) => {
        static $name: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!($file)));
    };
}
script!(CLAIM, "lua/claim.lua");
script!(RENEW, "lua/renew.lua");
script!(CHECKPOINT, "lua/checkpoint.lua");
script!(RELEASE, "lua/release.lua");
script!(FINISH, "lua/finish.lua");
script!(FINISH_JOB, "lua/finish_job.lua");
script!(TAKE_OVER, "lua/take_over.lua");
script!(CANCEL, "lua/cancel.lua");
script!(CANCEL_PUSHES, "lua/cancel_pushes.lua");

/// How many events the console's recent list keeps.
const RECENT_EVENTS: usize = 200;
/// How long the totals of a split event that never finishes are kept.
pub(crate) const UNFINISHED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Counts by name (`recipients`, `sent`, …, and per app `app:NAME:sent`), as stored with a claim.
pub(crate) type Counts = Vec<(String, u64)>;

/// What a run holds: the unit's claim, under this run's owner name and epoch. Every write the
/// run makes carries both, and is refused once another run holds the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub key: String,
    /// Its member in the active set, or empty for units that come back through a stream.
    pub member: String,
    pub owner: String,
    pub epoch: u64,
    /// The event a job belongs to: a cancel of the event reaches the job's run through it.
    pub parent: Option<String>,
}

/// A claim's state a run may end it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    Done,
    Failed,
    Cancelled,
}

impl Finished {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Finished::Done => "done",
            Finished::Failed => "failed",
            Finished::Cancelled => "cancelled",
        }
    }
}

/// Where an earlier run of a unit stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resume {
    /// The fan-out checkpoint (JSON; empty: none written).
    pub checkpoint: String,
    pub attempts: u32,
    /// Runs that ended in a failure (resumes after a stop do not count).
    pub failures: u32,
    pub counts: Counts,
}

/// What claiming a unit gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Ours: new (no `resume`), or taken from a run whose lease ran out.
    Run { held: Held, resume: Option<Resume> },
    /// Another run holds it now.
    Busy,
    /// Finished (or cancelled) within the dedup window.
    Done,
    /// Ours, to be finished as cancelled with the counts it reached.
    Cancel { held: Held, counts: Counts },
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    Renewed,
    /// Redis had lost the claim (restarted without persistence); it is written again as ours.
    Recreated,
    /// The unit (or its event) is being cancelled: send nothing more, finish as cancelled.
    Cancelled,
    /// Another run holds the unit now: stop sending.
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
    #[error("Redis answered a claim script with {0:?}")]
    Reply(String),
}

impl From<redis::RedisError> for ClaimError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

/// The claim store of one deployment's work in one send mode.
#[derive(Clone)]
pub(crate) struct Claims {
    redis: Option<ConnectionManager>,
    keys: WorkKeys,
    /// This process, unique among replicas; each run's owner name adds a number.
    owner: String,
    lease: Duration,
    window: Duration,
}

impl Claims {
    pub(crate) async fn connect(
        redis: &crate::redis_client::RedisSettings,
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
            keys: WorkKeys::new(prefix),
            owner,
            lease,
            window,
        })
    }

    /// The store that remembers nothing (see the module's paragraph).
    pub(crate) fn unshared(owner: String, lease: Duration) -> Self {
        Self {
            redis: None,
            keys: WorkKeys::new(""),
            owner,
            lease,
            window: Duration::ZERO,
        }
    }

    /// Whether claims are kept in Redis, shared with other replicas: only then is there a lease
    /// to keep, a checkpoint to store, or an abandoned unit to look for.
    pub(crate) fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    pub(crate) fn keys(&self) -> &WorkKeys {
        &self.keys
    }

    /// The connection, for other short commands (stream acknowledgements, statuses).
    pub(crate) fn connection(&self) -> Option<ConnectionManager> {
        self.redis.clone()
    }

    /// This process's name among the replicas (the stream consumer's name too).
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// A name for one run: a run taken over, even by its own process, is told apart.
    fn run_owner(&self) -> String {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        format!("{}#{}", self.owner, RUNS.fetch_add(1, Ordering::Relaxed))
    }

    /// Claims the unit at `key` for a new run. `member` lists it for scans (empty: it comes back
    /// through a stream instead); `parent` is a job's event, whose cancel the job obeys.
    pub(crate) async fn claim(
        &self,
        key: &str,
        member: &str,
        payload: &str,
        parent: Option<&str>,
    ) -> Result<Claim, ClaimError> {
        let owner = self.run_owner();
        let held = |epoch| Held {
            key: key.to_string(),
            member: member.to_string(),
            owner: owner.clone(),
            epoch,
            parent: parent.map(str::to_string),
        };
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Claim::Run {
                held: held(1),
                resume: None,
            });
        };
        let mut call = CLAIM.prepare_invoke();
        call.key(key)
            .key(self.keys.active())
            .key(self.keys.recent());
        if let Some(parent) = parent {
            call.key(parent);
        }
        call.arg(&owner)
            .arg(self.lease.as_millis() as u64)
            .arg(self.window.as_secs())
            .arg(payload)
            .arg(member)
            .arg(RECENT_EVENTS);
        let reply: Vec<String> = call.invoke_async(&mut redis).await?;
        let [verdict, epoch, checkpoint, attempts, failures, counts @ ..] = &reply[..] else {
            return Err(ClaimError::Reply(reply.join(" ")));
        };
        let epoch = epoch.parse().unwrap_or(0);
        let resume = Resume {
            checkpoint: checkpoint.clone(),
            attempts: attempts.parse().unwrap_or(1),
            failures: failures.parse().unwrap_or(0),
            counts: pairs(counts),
        };
        Ok(match verdict.as_str() {
            "claimed" => Claim::Run {
                held: held(epoch),
                resume: None,
            },
            "resumed" => Claim::Run {
                held: held(epoch),
                resume: Some(resume),
            },
            "busy" => Claim::Busy,
            "cancel" => Claim::Cancel {
                held: held(epoch),
                counts: resume.counts,
            },
            _ => Claim::Done,
        })
    }

    /// Extends the lease of the run holding `held` and stores `checkpoint`; a lost claim is
    /// written again with `payload` and `checkpoint`.
    pub(crate) async fn renew(
        &self,
        held: &Held,
        payload: &str,
        checkpoint: &str,
    ) -> Result<Renewal, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Renewal::Renewed);
        };
        let mut call = RENEW.prepare_invoke();
        call.key(&held.key).key(self.keys.active());
        if let Some(parent) = &held.parent {
            call.key(parent);
        }
        call.arg(&held.owner)
            .arg(held.epoch)
            .arg(self.lease.as_millis() as u64)
            .arg(payload)
            .arg(&held.member)
            .arg(checkpoint);
        let reply: String = call.invoke_async(&mut redis).await?;
        Ok(match reply.as_str() {
            "renewed" => Renewal::Renewed,
            "recreated" => Renewal::Recreated,
            "cancelled" => Renewal::Cancelled,
            _ => Renewal::Lost,
        })
    }

    /// Stores the checkpoint and the counts so far; a claim Redis lost is written again.
    pub(crate) async fn checkpoint(
        &self,
        held: &Held,
        payload: &str,
        checkpoint: &str,
        counts: &Counts,
    ) -> Result<Renewal, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Renewal::Renewed);
        };
        let mut call = CHECKPOINT.prepare_invoke();
        call.key(&held.key)
            .arg(&held.owner)
            .arg(held.epoch)
            .arg(checkpoint);
        push_counts(&mut call, counts);
        let written: i64 = call.invoke_async(&mut redis).await?;
        match written {
            1 => Ok(Renewal::Renewed),
            -1 => self.renew(held, payload, checkpoint).await,
            _ => Ok(Renewal::Lost),
        }
    }

    /// Gives the unit up unfinished, with its checkpoint: another run resumes it at once. A
    /// `failed` run counts against `claims.max_attempts`. False when another run holds it.
    pub(crate) async fn release(
        &self,
        held: &Held,
        failed: bool,
        checkpoint: &str,
        counts: &Counts,
    ) -> Result<bool, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(true);
        };
        let mut call = RELEASE.prepare_invoke();
        call.key(&held.key)
            .arg(&held.owner)
            .arg(held.epoch)
            .arg(if failed { "1" } else { "0" })
            .arg(checkpoint);
        push_counts(&mut call, counts);
        let released: i64 = call.invoke_async(&mut redis).await?;
        Ok(released == 1)
    }
}

fn push_counts(call: &mut redis::ScriptInvocation<'_>, counts: &Counts) {
    for (name, count) in counts {
        call.arg(name).arg(*count);
    }
}

/// `name, value, …` as the scripts reply, into counts.
pub(crate) fn pairs(flat: &[String]) -> Counts {
    flat.chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].parse().unwrap_or(0)))
        .collect()
}

/// A name for this process, unique among replicas.
pub(crate) fn owner_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "notifier".into());
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}

mod settle;
mod takeover;

pub(crate) use takeover::{Cancelling, TakenOver};

#[cfg(test)]
mod tests;

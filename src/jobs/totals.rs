//! An event's totals over all its jobs, kept in the hash `{prefix}event:{event_id}:jobs`: each job
//! adds its counts once (`HINCRBY`, guarded by a `j:<n>` field, so a job run twice after a
//! takeover counts once), and the splitter writes how many jobs there are once it has added the
//! last. Whichever of those calls finds every job counted gets the totals, and exactly one caller
//! does (`finished` is set once): that replica writes the event's one `Event processed.` line.
//!
//! The hash expires after the dedup window once finished, and after a week if an event is never
//! finished (its splitter and every replica gone for good).

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::JobError;

/// How long the totals of an unfinished event are kept.
const UNFINISHED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Shared by both scripts: `{'complete', name, value, …}` for the one call that finds every job
/// counted, `{'pending'}` for every other.
const COMPLETE: &str = r#"
local function complete(key, window)
  local jobs = tonumber(redis.call('HGET', key, 'jobs') or '-1')
  local done = tonumber(redis.call('HGET', key, 'done') or '0')
  if jobs < 0 or done < jobs then return {'pending'} end
  if redis.call('HSETNX', key, 'finished', 1) == 0 then return {'pending'} end
  redis.call('EXPIRE', key, window)
  local out = {'complete'}
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 't:' then
      table.insert(out, string.sub(all[i], 3))
      table.insert(out, all[i + 1])
    end
  end
  return out
end
"#;

/// `record(key; job, window_s, unfinished_ttl_s, name, value, …)`
static RECORD_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{COMPLETE}
if redis.call('HSETNX', KEYS[1], 'j:' .. ARGV[1], 1) == 1 then
  for i = 4, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], 't:' .. ARGV[i], ARGV[i + 1]) end
  redis.call('HINCRBY', KEYS[1], 'done', 1)
  if redis.call('HEXISTS', KEYS[1], 'finished') == 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
end
return complete(KEYS[1], ARGV[2])
"#
    ))
});

/// `split_done(key; jobs, window_s, unfinished_ttl_s)`
static SPLIT_DONE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{COMPLETE}
redis.call('HSET', KEYS[1], 'jobs', ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'finished') == 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return complete(KEYS[1], ARGV[2])
"#
    ))
});

/// What adding to an event's totals found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Completion {
    /// Jobs remain (or another caller completed the event).
    Pending,
    /// This call completed the event: its totals, by name.
    Complete(BTreeMap<String, u64>),
}

#[derive(Clone)]
pub(crate) struct JobTotals {
    redis: ConnectionManager,
    prefix: String,
    /// The dedup window: how long a finished event's totals are kept.
    window: Duration,
}

/// The hash of an event's totals: `t:<name>` counts so far, `finished` once every job is in.
pub(crate) fn totals_key(prefix: &str, event_id: &str) -> String {
    format!("{prefix}event:{event_id}:jobs")
}

impl JobTotals {
    pub(crate) fn new(redis: ConnectionManager, prefix: &str, window: Duration) -> Self {
        Self {
            redis,
            prefix: prefix.to_string(),
            window,
        }
    }

    fn key(&self, event_id: &str) -> String {
        totals_key(&self.prefix, event_id)
    }

    /// Adds job `number`'s counts to the event's totals (once, however often called).
    pub(crate) async fn record(
        &self,
        event_id: &str,
        number: u32,
        counts: &[(&str, u64)],
    ) -> Result<Completion, JobError> {
        let mut invocation = RECORD_SCRIPT.prepare_invoke();
        invocation
            .key(self.key(event_id))
            .arg(number)
            .arg(self.window.as_secs())
            .arg(UNFINISHED_TTL.as_secs());
        for (name, value) in counts {
            invocation.arg(*name).arg(*value);
        }
        completion(invocation.invoke_async(&mut self.redis.clone()).await?)
    }

    /// The splitter added all `jobs` jobs of the event.
    pub(crate) async fn split_done(
        &self,
        event_id: &str,
        jobs: u32,
    ) -> Result<Completion, JobError> {
        let reply = SPLIT_DONE_SCRIPT
            .key(self.key(event_id))
            .arg(jobs)
            .arg(self.window.as_secs())
            .arg(UNFINISHED_TTL.as_secs())
            .invoke_async(&mut self.redis.clone())
            .await?;
        completion(reply)
    }
}

fn completion(reply: Vec<String>) -> Result<Completion, JobError> {
    let Some((state, pairs)) = reply.split_first() else {
        return Ok(Completion::Pending);
    };
    if state != "complete" {
        return Ok(Completion::Pending);
    }
    let totals = pairs
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].parse().unwrap_or(0)))
        .collect();
    Ok(Completion::Complete(totals))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn totals() -> JobTotals {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        let redis = client.get_connection_manager().await.unwrap();
        let prefix = format!("test:jobs:{:016x}:", fastrand::u64(..));
        JobTotals::new(redis, &prefix, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn the_last_job_counted_completes_the_event_once() {
        let t = totals().await;
        let counts = |sent| [("sent", sent), ("failed", 1)];
        assert_eq!(
            t.record("e", 0, &counts(10)).await.unwrap(),
            Completion::Pending
        );
        // A job counted again after a takeover adds nothing.
        assert_eq!(
            t.record("e", 0, &counts(10)).await.unwrap(),
            Completion::Pending
        );
        assert_eq!(t.split_done("e", 2).await.unwrap(), Completion::Pending);
        let Completion::Complete(done) = t.record("e", 1, &counts(5)).await.unwrap() else {
            panic!("the second of two jobs completes the event");
        };
        assert_eq!(
            done,
            BTreeMap::from([("failed".into(), 2), ("sent".into(), 15)])
        );
        assert_eq!(
            t.record("e", 1, &counts(5)).await.unwrap(),
            Completion::Pending
        );
        assert_eq!(t.split_done("e", 2).await.unwrap(), Completion::Pending);
    }

    #[tokio::test]
    async fn jobs_done_before_the_split_ends_complete_it_at_the_split() {
        let t = totals().await;
        assert_eq!(
            t.record("e", 0, &[("sent", 3)]).await.unwrap(),
            Completion::Pending
        );
        let done = t.split_done("e", 1).await.unwrap();
        assert_eq!(
            done,
            Completion::Complete(BTreeMap::from([("sent".into(), 3)]))
        );
    }
}

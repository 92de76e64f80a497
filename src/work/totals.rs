//! A split event's totals over all its jobs, in the hash `totals:{event_id}` (`keys`): `jobs`
//! (how many, written with the plan), `done` (how many finished), `j:<n>` for each finished job
//! (so a job finished twice after a takeover counts once) and `t:<name>` the counts added up.
//! Jobs add to it as they finish (`lua/finish_job.lua`); the event's owner reads it to tell when
//! the event is complete, the status route to show the counts so far.

use std::collections::HashMap;

use redis::aio::ConnectionManager;

use super::claims::Counts;

/// What the totals hash holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// How many jobs the plan has; `None` before it is stored (or once Redis lost it).
    pub jobs: Option<u32>,
    /// The jobs finished, by number.
    pub finished: Vec<u32>,
    /// The counts added up, by name.
    pub counts: Counts,
}

impl Totals {
    pub(crate) fn from_hash(hash: &HashMap<String, String>) -> Self {
        let mut finished: Vec<u32> = hash
            .keys()
            .filter_map(|k| k.strip_prefix("j:")?.parse().ok())
            .collect();
        finished.sort_unstable();
        let mut counts: Counts = hash
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("t:")?.to_string(), v.parse().ok()?)))
            .collect();
        counts.sort();
        Self {
            jobs: hash.get("jobs").and_then(|j| j.parse().ok()),
            finished,
            counts,
        }
    }

    /// Reads the totals at `key`.
    pub(crate) async fn read(redis: &ConnectionManager, key: &str) -> redis::RedisResult<Self> {
        let hash: HashMap<String, String> =
            redis::AsyncCommands::hgetall(&mut redis.clone(), key).await?;
        Ok(Self::from_hash(&hash))
    }

    /// Every job of the plan has finished.
    pub(crate) fn complete(&self) -> bool {
        self.jobs
            .is_some_and(|jobs| self.finished.len() as u32 >= jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_tell_which_jobs_finished_and_their_counts() {
        let hash: HashMap<String, String> = [
            ("jobs", "3"),
            ("done", "2"),
            ("j:0", "1"),
            ("j:2", "1"),
            ("t:sent", "15"),
            ("t:app:lite:sent", "4"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let totals = Totals::from_hash(&hash);
        assert_eq!(totals.jobs, Some(3));
        assert_eq!(totals.finished, [0, 2]);
        assert_eq!(
            totals.counts,
            [("app:lite:sent".to_string(), 4), ("sent".to_string(), 15)]
        );
        assert!(!totals.complete());
        assert!(!Totals::default().complete(), "no plan: not complete");
    }
}

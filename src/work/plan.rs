//! A split event's plan: its audience cut into jobs of about `NOTIFIER_JOB_SIZE` devices by
//! device-id range, cut once and stored before any job is queued.
//!
//! The cuts are found without reading the audience: each is one boundary probe, "the id of the
//! N-th device after this one", which the database answers from the audience query wrapped as
//! `SELECT device_id FROM (<audience>) ORDER BY device_id LIMIT 1 OFFSET N-1`. The rows stay in
//! the database; one id comes back a job. A device the query returns twice (through a join) is
//! counted twice, so a job is *about* the size asked for.
//!
//! Every cut is found first, then `lua/plan.lua` stores the plan, tells the event's totals how many
//! jobs there are and adds one stream entry per job, in one step. So a split that fails part-way
//! queued nothing, and a redo (after a crash, a takeover, or Redis losing the jobs) finds the
//! stored plan and keeps its cut points: devices never move between jobs however the audience
//! changed meanwhile. What a job's entry carries ([`Job`]) is here too.

use std::sync::LazyLock;

use redis::Script;

use super::claims::{ClaimError, Claims, Counts, Held, UNFINISHED_TTL};
use super::stream::Entry;
use crate::database::DatabaseError;

mod probe;

pub(crate) use probe::AudienceBoundaries;

/// The devices of one job: `after < device id <= upto`, with no upper end for the last job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct JobRange {
    pub after: i64,
    pub upto: Option<i64>,
}

/// Finds where jobs end.
pub(crate) trait Boundaries: Send + Sync {
    /// The id of the `n`-th device after `after` (`n` ≥ 1), or `None` when fewer remain.
    fn nth_after(
        &self,
        after: i64,
        n: u64,
    ) -> impl Future<Output = Result<Option<i64>, DatabaseError>> + Send;
}

/// The ranges of an event's jobs, in order, one probe each.
pub(crate) struct Ranges<'b, B> {
    boundaries: &'b B,
    size: u64,
    after: i64,
    next: u32,
    ended: bool,
}

impl<'b, B: Boundaries> Ranges<'b, B> {
    /// From the start of the audience.
    pub(crate) fn new(boundaries: &'b B, size: u64) -> Self {
        Self::resume(boundaries, size, 0, 0)
    }

    /// After job `next - 1`, which ended at `after`.
    pub(crate) fn resume(boundaries: &'b B, size: u64, next: u32, after: i64) -> Self {
        Self {
            boundaries,
            size: size.max(1),
            after,
            next,
            ended: false,
        }
    }

    /// The next job's number and range; `None` once the last (open-ended) one was given.
    pub(crate) async fn next(&mut self) -> Result<Option<(u32, JobRange)>, DatabaseError> {
        if self.ended {
            return Ok(None);
        }
        let upto = self.boundaries.nth_after(self.after, self.size).await?;
        // The last job is open-ended, so devices added while the event runs are not lost,
        // and a job ending exactly at the audience's end leaves no empty one after it.
        let upto = match upto {
            Some(upto) => {
                let beyond = self.boundaries.nth_after(upto, 1).await?;
                beyond.map(|_| upto)
            }
            None => None,
        };
        let range = JobRange {
            after: self.after,
            upto,
        };
        let number = self.next;
        self.next += 1;
        match upto {
            Some(upto) => self.after = upto,
            None => self.ended = true,
        }
        Ok(Some((number, range)))
    }
}

/// A split event's jobs, in device-id order: job `n` is `ranges[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub ranges: Vec<JobRange>,
}

impl Plan {
    /// Every cut of the audience, one probe a job; `None` when it fits in one job.
    pub(crate) async fn cut<B: Boundaries>(
        boundaries: &B,
        size: u64,
    ) -> Result<Option<Self>, DatabaseError> {
        if boundaries.nth_after(0, size + 1).await?.is_none() {
            return Ok(None);
        }
        let mut cuts = Ranges::new(boundaries, size);
        let mut ranges = Vec::new();
        while let Some((_, range)) = cuts.next().await? {
            ranges.push(range);
        }
        Ok(Some(Self { ranges }))
    }

    /// `after:upto,…`, the last `upto` empty: as `lua/plan.lua` stores it.
    fn encode(&self) -> String {
        let range = |r: &JobRange| match r.upto {
            Some(upto) => format!("{}:{upto}", r.after),
            None => format!("{}:", r.after),
        };
        self.ranges.iter().map(range).collect::<Vec<_>>().join(",")
    }

    fn decode(text: &str) -> Option<Self> {
        let range = |part: &str| {
            let (after, upto) = part.split_once(':')?;
            let upto = match upto {
                "" => None,
                upto => Some(upto.parse().ok()?),
            };
            Some(JobRange {
                after: after.parse().ok()?,
                upto,
            })
        };
        let ranges = text.split(',').map(range).collect::<Option<Vec<_>>>()?;
        Some(Self { ranges })
    }

    pub(crate) fn jobs(&self) -> u32 {
        self.ranges.len() as u32
    }
}

/// What storing a plan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// This plan, stored now with its jobs queued.
    Planned(Plan),
    /// A plan stored before (a redo): its cut points stand, and its jobs were queued then.
    Existing(Plan),
    /// Another run holds the event now.
    Lost,
}

static PLAN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/plan.lua")));

/// What Redis lost with a plan, kept by the event's owner to put back: the jobs it saw finished
/// and their totals (those jobs are not queued again).
#[derive(Debug, Clone, Default)]
pub(crate) struct Finished {
    pub jobs: Vec<u32>,
    pub totals: Counts,
}

impl Claims {
    /// The plan stored for the event, if one was.
    pub(crate) async fn stored_plan(&self, event_id: &str) -> Result<Option<Plan>, ClaimError> {
        let Some(mut redis) = self.connection() else {
            return Ok(None);
        };
        let text: Option<String> =
            redis::AsyncCommands::hget(&mut redis, self.keys().plan(event_id), "ranges").await?;
        Ok(text.as_deref().and_then(Plan::decode))
    }

    /// Stores `plan` for the event whose claim `held` is, and queues its jobs, unless a plan is
    /// stored already (see the module's paragraph). `finished` restores what Redis lost.
    pub(crate) async fn store_plan(
        &self,
        held: &Held,
        (event_id, payload): (&str, &str),
        plan: &Plan,
        finished: &Finished,
    ) -> Result<Stored, ClaimError> {
        let Some(mut redis) = self.connection() else {
            return Ok(Stored::Planned(plan.clone()));
        };
        let keys = self.keys();
        let done: Vec<String> = finished.jobs.iter().map(u32::to_string).collect();
        let mut call = PLAN.prepare_invoke();
        call.key(keys.plan(event_id))
            .key(keys.totals(event_id))
            .key(keys.jobs())
            .key(&held.key)
            .arg(&held.owner)
            .arg(held.epoch)
            .arg(plan.encode())
            .arg(UNFINISHED_TTL.as_secs())
            .arg(event_id)
            .arg(payload)
            .arg(done.join(","));
        for (name, count) in &finished.totals {
            call.arg(name).arg(*count);
        }
        let reply: Vec<String> = call.invoke_async(&mut redis).await?;
        let stored = |text: &str| {
            Plan::decode(text).ok_or_else(|| ClaimError::Reply(format!("a plan of {text:?}")))
        };
        match &reply[..] {
            [verdict, text] if verdict == "planned" => Ok(Stored::Planned(stored(text)?)),
            [verdict, text] if verdict == "existing" => Ok(Stored::Existing(stored(text)?)),
            [verdict] if verdict == "lost" => Ok(Stored::Lost),
            other => Err(ClaimError::Reply(other.join(" "))),
        }
    }
}

/// One job of a split event, as its stream entry carries it: the devices with
/// `after < id <= upto` (no upper end for the last job), and the event, so that any replica can
/// run the job alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub event_id: String,
    /// 0, 1, 2… in device-id order.
    pub number: u32,
    pub range: JobRange,
    pub payload: String,
}

impl Job {
    /// The job in a stream entry (as `lua/plan.lua` writes it); `None` for an entry that is not one.
    pub(crate) fn from_entry(entry: &Entry) -> Option<Self> {
        let upto = entry.text("upto")?;
        Some(Self {
            event_id: entry.text("event_id")?,
            number: entry.text("job")?.parse().ok()?,
            range: JobRange {
                after: entry.text("after")?.parse().ok()?,
                upto: if upto.is_empty() {
                    None
                } else {
                    Some(upto.parse().ok()?)
                },
            },
            payload: entry.text("event")?,
        })
    }
}

/// A job's entry fields, for tests that queue jobs by hand.
#[cfg(test)]
pub(crate) fn job_fields(job: &Job) -> std::collections::HashMap<String, redis::Value> {
    let upto = job.range.upto.map(|u| u.to_string()).unwrap_or_default();
    [
        ("event_id", job.event_id.clone()),
        ("job", job.number.to_string()),
        ("after", job.range.after.to_string()),
        ("upto", upto),
        ("event", job.payload.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), redis::Value::BulkString(v.into_bytes())))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An audience of these ids.
    struct Ids(Vec<i64>);

    impl Boundaries for Ids {
        async fn nth_after(&self, after: i64, n: u64) -> Result<Option<i64>, DatabaseError> {
            Ok(self
                .0
                .iter()
                .filter(|&&id| id > after)
                .nth(n as usize - 1)
                .copied())
        }
    }

    async fn all(ids: &Ids, size: u64) -> Vec<(u32, JobRange)> {
        let mut ranges = Ranges::new(ids, size);
        let mut out = Vec::new();
        while let Some(job) = ranges.next().await.unwrap() {
            out.push(job);
        }
        out
    }

    fn range(after: i64, upto: Option<i64>) -> JobRange {
        JobRange { after, upto }
    }

    #[tokio::test]
    async fn an_audience_is_cut_into_ranges_of_the_job_size_the_last_open() {
        let ids = Ids((1..=10).map(|i| i * 10).collect());
        assert_eq!(
            all(&ids, 4).await,
            vec![
                (0, range(0, Some(40))),
                (1, range(40, Some(80))),
                (2, range(80, None))
            ]
        );
        // Exactly two jobs' worth: no empty third.
        assert_eq!(
            all(&ids, 5).await,
            vec![(0, range(0, Some(50))), (1, range(50, None))]
        );
        assert_eq!(all(&Ids(vec![]), 5).await, vec![(0, range(0, None))]);
    }

    #[tokio::test]
    async fn a_plan_cuts_every_job_and_survives_being_stored() {
        let ids = Ids((1..=10).collect());
        assert_eq!(Plan::cut(&ids, 10).await.unwrap(), None, "one job: no plan");
        let plan = Plan::cut(&ids, 4).await.unwrap().unwrap();
        assert_eq!(
            plan.ranges,
            [range(0, Some(4)), range(4, Some(8)), range(8, None)]
        );
        assert_eq!(plan.encode(), "0:4,4:8,8:");
        assert_eq!(Plan::decode(&plan.encode()), Some(plan));
        assert_eq!(Plan::decode("0:x"), None);
    }

    #[test]
    fn a_job_survives_its_stream_entry() {
        for upto in [Some(2000), None] {
            let job = Job {
                event_id: "e-1".into(),
                number: 3,
                range: JobRange { after: 1000, upto },
                payload: r#"{"talk_id":1}"#.into(),
            };
            let entry = Entry {
                id: "1-0".into(),
                fields: job_fields(&job),
                taken_over: false,
            };
            assert_eq!(Job::from_entry(&entry), Some(job));
        }
        let junk = Entry {
            id: "1-0".into(),
            fields: std::collections::HashMap::new(),
            taken_over: false,
        };
        assert_eq!(Job::from_entry(&junk), None);
    }
}

//! One event across many replicas (contract §8): an audience larger than `NOTIFIER_JOB_SIZE` is
//! cut into jobs by device-id range, the jobs go on the deployment's Redis Stream, and every
//! replica takes them through one consumer group.
//!
//! - `split`: the ranges, found by boundary probes (the id of the N-th device after a point)
//!   so the audience is never read whole to cut it;
//! - `queue`: the job stream (`{prefix}jobs`, group `notifier`): adding, reading (abandoned
//!   entries first, with `XAUTOCLAIM`'s cursor loop), and removing only acknowledged entries;
//! - `totals`: each job's counts added up in Redis, and the one caller that completes the event.
//!
//! A job runs under its own claim, `{event_id}#j{n}` in the event claims (lease, checkpoint,
//! takeover), so a redelivered entry finds its job running or done and each device is pushed
//! once. What a job carries, and its claim id, are here.

mod queue;
mod split;
mod totals;

use std::collections::HashMap;

pub(crate) use queue::{Delivered, JobQueue};
pub(crate) use split::{AudienceBoundaries, Boundaries, JobRange, Ranges};
pub(crate) use totals::{Completion, JobTotals, totals_key};

/// The field names of a job's stream entry.
const EVENT_ID: &str = "event_id";
const NUMBER: &str = "job";
const AFTER: &str = "after";
const UPTO: &str = "upto";
const EVENT: &str = "event";

/// One job of an event: the devices with `after < id <= upto` (no upper end for the last job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub event_id: String,
    /// 0, 1, 2… in device-id order.
    pub number: u32,
    pub range: JobRange,
    /// The event as published, so that any replica can run the job alone.
    pub payload: String,
}

impl Job {
    /// The job's id in the event claims.
    pub(crate) fn claim_id(&self) -> String {
        claim_id(&self.event_id, self.number)
    }

    fn fields(&self) -> [(&'static str, String); 5] {
        [
            (EVENT_ID, self.event_id.clone()),
            (NUMBER, self.number.to_string()),
            (AFTER, self.range.after.to_string()),
            (
                UPTO,
                self.range.upto.map(|u| u.to_string()).unwrap_or_default(),
            ),
            (EVENT, self.payload.clone()),
        ]
    }

    /// The job in a stream entry's fields; `None` for an entry that is not one.
    fn from_fields(fields: &HashMap<String, redis::Value>) -> Option<Self> {
        let text = |name: &str| -> Option<String> {
            redis::from_redis_value_ref::<String>(fields.get(name)?).ok()
        };
        let upto = text(UPTO)?;
        Some(Self {
            event_id: text(EVENT_ID)?,
            number: text(NUMBER)?.parse().ok()?,
            range: JobRange {
                after: text(AFTER)?.parse().ok()?,
                upto: if upto.is_empty() {
                    None
                } else {
                    Some(upto.parse().ok()?)
                },
            },
            payload: text(EVENT)?,
        })
    }
}

/// Job `number` of `event_id`, as the event claims know it.
pub(crate) fn claim_id(event_id: &str, number: u32) -> String {
    format!("{event_id}#j{number}")
}

/// Whether a claim is a job's: those are resumed through the job stream, not as events.
pub(crate) fn is_job_claim(claim_id: &str) -> bool {
    claim_id
        .rsplit_once("#j")
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Why an event could not be cut into jobs.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("the audience query cannot be wrapped for job boundaries: {0}")]
    Query(#[source] crate::database::QueryError),
    #[error("probing the audience for job boundaries failed")]
    Database(#[source] crate::database::DatabaseError),
    #[error("adding the event's jobs failed")]
    Jobs(#[source] JobError),
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Not a `source`: the message already tells the cause (`Explained`).
    #[error("{}", crate::redis_client::Explained(.0))]
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for JobError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_survives_its_stream_entry() {
        for upto in [Some(2000), None] {
            let job = Job {
                event_id: "e-1".into(),
                number: 3,
                range: JobRange { after: 1000, upto },
                payload: r#"{"talk_id":1}"#.into(),
            };
            let fields = job
                .fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), redis::Value::BulkString(v.into_bytes())))
                .collect();
            assert_eq!(Job::from_fields(&fields), Some(job.clone()));
            assert_eq!(job.claim_id(), "e-1#j3");
            assert!(is_job_claim(&job.claim_id()));
        }
        assert_eq!(Job::from_fields(&HashMap::new()), None);
        assert!(!is_job_claim("e-1") && !is_job_claim("e#jx") && !is_job_claim("e#j"));
    }
}

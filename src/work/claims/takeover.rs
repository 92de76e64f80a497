//! What other replicas and operators do to a unit: a scan lists the units running and takes
//! over those whose owner's lease ran out ([`Claims::take_over`]), and a cancel stops an event and
//! every run of it ([`Claims::cancel`]).

use super::{CANCEL, CANCEL_PUSHES, ClaimError, Claims, Held, Resume, TAKE_OVER, pairs};

/// A listed unit taken over by a scan.
#[derive(Debug, Clone)]
pub(crate) struct TakenOver {
    pub held: Held,
    pub payload: String,
    pub resume: Resume,
    /// The unit is being cancelled: finish it as cancelled, send nothing.
    pub cancelling: bool,
}

/// What a cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancelling {
    /// Its runs stop at their next renewal; it ends `cancelled`.
    Started,
    /// Being cancelled already.
    Already,
    /// Cancelled (a queued event is at once).
    Cancelled,
    /// Finished before the cancel came.
    TooLate,
    Unknown,
}

impl Claims {
    /// The members of the units being run (or abandoned), for a scan.
    pub(crate) async fn active(&self) -> Result<Vec<String>, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Vec::new());
        };
        Ok(redis::cmd("ZRANGE")
            .arg(self.keys.active())
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await?)
    }

    /// Takes over the listed unit `member` if its owner's lease ran out.
    pub(crate) async fn take_over(&self, member: &str) -> Result<Option<TakenOver>, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(None);
        };
        let key = format!("{}{member}", self.keys.prefix());
        let owner = self.run_owner();
        let reply: Vec<String> = TAKE_OVER
            .key(&key)
            .key(self.keys.active())
            .arg(&owner)
            .arg(self.lease.as_millis() as u64)
            .arg(member)
            .invoke_async(&mut redis)
            .await?;
        let [
            state,
            epoch,
            payload,
            checkpoint,
            attempts,
            failures,
            counts @ ..,
        ] = &reply[..]
        else {
            return Ok(None);
        };
        Ok(Some(TakenOver {
            held: Held {
                key,
                member: member.to_string(),
                owner,
                epoch: epoch.parse().unwrap_or(0),
                parent: None,
            },
            payload: payload.clone(),
            resume: Resume {
                checkpoint: checkpoint.clone(),
                attempts: attempts.parse().unwrap_or(1),
                failures: failures.parse().unwrap_or(0),
                counts: pairs(counts),
            },
            cancelling: state == "cancelling",
        }))
    }

    /// Stops an event (`DELETE /v1/events/{id}`, `notifier cancel`): see `lua/cancel.lua`.
    pub(crate) async fn cancel(
        &self,
        event_id: &str,
        group: &str,
    ) -> Result<Cancelling, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Cancelling::Unknown);
        };
        let k = &self.keys;
        let state: String = CANCEL
            .key(k.event(event_id))
            .key(k.plan(event_id))
            .key(k.totals(event_id))
            .key(k.jobs())
            .key(k.queued(event_id))
            .arg(self.window.as_secs())
            .arg(group)
            .arg(k.job_prefix())
            .arg(event_id)
            .invoke_async(&mut redis)
            .await?;
        Ok(match state.as_str() {
            "cancelling" => Cancelling::Started,
            "cancelled" => Cancelling::Cancelled,
            "done" => Cancelling::TooLate,
            "unknown" => Cancelling::Unknown,
            _ => Cancelling::Already,
        })
    }

    /// Stops the `POST /push` notifications a request queued, found through the list its
    /// `Idempotency-Key` kept (`entries`): see `lua/cancel_pushes.lua`. `None` when the key
    /// names no request within the dedup window.
    pub(crate) async fn cancel_pushes(
        &self,
        entries: &str,
        group: &str,
    ) -> Result<Option<PushesCancelled>, ClaimError> {
        let Some(mut redis) = self.connection() else {
            return Ok(None);
        };
        let keys = self.keys();
        let reply: Vec<u64> = CANCEL_PUSHES
            .key(entries)
            .key(keys.backlog())
            .arg(self.window().as_secs())
            .arg(group)
            .arg(keys.push(""))
            .invoke_async(&mut redis)
            .await?;
        Ok(match reply[..] {
            [settled, stopping, done] => Some(PushesCancelled {
                settled,
                stopping,
                done,
            }),
            _ => None,
        })
    }
}

/// What a cancel of a request's `POST /push` notifications found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PushesCancelled {
    /// Cancelled before any replica started them (or before).
    pub settled: u64,
    /// Being sent: their runs stop at their next renewal.
    pub stopping: u64,
    /// Sent already.
    pub done: u64,
}

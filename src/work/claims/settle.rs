//! How a run's claim ends: [`Claims::finish`] records the unit's end (`done`, `failed`,
//! `cancelled`) with its counts and acknowledges the stream entry that carried it, and
//! [`Claims::finish_job`] does the same for a job while adding its counts to its event's totals,
//! each in one fenced step.

use super::{
    ClaimError, Claims, Counts, FINISH, FINISH_JOB, Finished, Held, UNFINISHED_TTL, push_counts,
};

impl Claims {
    /// Records the unit's end with its counts, kept for the dedup window; `entry` (a stream, its
    /// group and the entry that carried the unit) is acknowledged and deleted in the same step.
    /// Returns the end recorded: `state`, except that a unit being cancelled that would end done
    /// ends cancelled (see `lua/finish.lua`); `None` when another run holds the unit.
    pub(crate) async fn finish(
        &self,
        held: &Held,
        state: Finished,
        counts: &Counts,
        entry: Option<(&str, &str, &str)>,
    ) -> Result<Option<Finished>, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(Some(state));
        };
        let mut call = FINISH.prepare_invoke();
        call.key(&held.key).key(self.keys.active());
        let (group, id) = match entry {
            Some((stream, group, id)) => {
                call.key(stream);
                (group, id)
            }
            None => ("", ""),
        };
        call.arg(&held.owner)
            .arg(held.epoch)
            .arg(state.as_str())
            .arg(self.window.as_secs())
            .arg(&held.member)
            .arg(group)
            .arg(id);
        push_counts(&mut call, counts);
        let recorded: String = call.invoke_async(&mut redis).await?;
        Ok(match recorded.as_str() {
            "" => None,
            "cancelled" => Some(Finished::Cancelled),
            _ => Some(state),
        })
    }

    /// A job's end: its claim, its counts added once to the event's totals, and its entry in the
    /// job stream acknowledged and deleted, in one step. False when another run holds the job.
    pub(crate) async fn finish_job(
        &self,
        held: &Held,
        state: Finished,
        (event_id, number): (&str, u32),
        (group, entry): (&str, &str),
        counts: &Counts,
    ) -> Result<bool, ClaimError> {
        let Some(mut redis) = self.redis.clone() else {
            return Ok(true);
        };
        let mut call = FINISH_JOB.prepare_invoke();
        call.key(&held.key)
            .key(self.keys.totals(event_id))
            .key(self.keys.jobs())
            .arg(&held.owner)
            .arg(held.epoch)
            .arg(state.as_str())
            .arg(self.window.as_secs())
            .arg(number)
            .arg(group)
            .arg(entry)
            .arg(UNFINISHED_TTL.as_secs());
        push_counts(&mut call, counts);
        let done: i64 = call.invoke_async(&mut redis).await?;
        Ok(done == 1)
    }
}

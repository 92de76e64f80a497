//! What becomes of a unit's claim once its run ends, decided from the run's result and its
//! fence alone: the table test below holds every ending to its settlement, and the stream
//! acknowledgement follows the outcome the run reports (`EventOutcome::settled`).

use super::outcome::EventError;
use crate::fanout::FanoutReport;
use crate::work::fence::Shut;

/// What becomes of a unit's claim once its run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settlement {
    /// Finished, or nothing to send (an unknown talk): marked done for the dedup window.
    Done,
    /// Failed `claims.max_attempts` times: marked failed, never tried again.
    GivenUp,
    /// Stopped by a cancel: marked cancelled with what it reached.
    Cancelled,
    /// Unfinished (stopped, or failed with attempts left): the checkpoint is stored and the lease
    /// released, so that another run resumes at once. A failure counts against the attempts.
    Resume { failed: bool },
    /// Another run holds the unit now: nothing of this run's is written.
    Lost,
}

impl Settlement {
    /// `failures` is how many earlier runs failed.
    pub(super) fn of(
        result: &Result<FanoutReport, EventError>,
        shut: Option<Shut>,
        failures: u32,
        max_attempts: u32,
    ) -> Self {
        match (shut, result) {
            (Some(Shut::Lost), _) => Settlement::Lost,
            (Some(Shut::Cancelled), _) => Settlement::Cancelled,
            (None, Ok(report)) if report.interrupted => Settlement::Resume { failed: false },
            (None, Ok(_)) => Settlement::Done,
            (None, Err(e)) if e.is_unknown_talk() => Settlement::Done,
            (None, Err(_)) if failures + 1 >= max_attempts => Settlement::GivenUp,
            (None, Err(_)) => Settlement::Resume { failed: true },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::content::TalkError;
    use crate::fanout::FanoutReport;
    use crate::work::ClaimError;

    /// (case, result, why the fence shut, failures so far, settlement)
    type Row = (
        &'static str,
        Result<FanoutReport, EventError>,
        Option<Shut>,
        u32,
        Settlement,
    );

    #[test]
    fn each_ending_settles_the_claim_as_its_result_and_its_fence_say() {
        use Settlement::{Cancelled, Done, GivenUp, Lost, Resume};
        let complete = || Ok(FanoutReport::default());
        let interrupted = || {
            Ok(FanoutReport {
                interrupted: true,
                ..FanoutReport::default()
            })
        };
        let unknown = || Err(EventError::Talk(TalkError::Unknown { talk_id: 1 }));
        let timeout = || {
            Err(EventError::Claim(ClaimError::Timeout(Duration::from_secs(
                1,
            ))))
        };
        let max = 3;
        let table: [Row; 8] = [
            ("done", complete(), None, 0, Done),
            (
                "interrupted",
                interrupted(),
                None,
                0,
                Resume { failed: false },
            ),
            (
                "failed, attempts left",
                timeout(),
                None,
                1,
                Resume { failed: true },
            ),
            ("failed at max", timeout(), None, 2, GivenUp),
            ("unknown talk", unknown(), None, 0, Done),
            (
                "cancelled mid-way",
                interrupted(),
                Some(Shut::Cancelled),
                0,
                Cancelled,
            ),
            ("taken over", interrupted(), Some(Shut::Lost), 0, Lost),
            (
                "restarts do not count",
                interrupted(),
                None,
                2,
                Resume { failed: false },
            ),
        ];
        for (case, result, shut, failures, settlement) in table {
            assert_eq!(
                Settlement::of(&result, shut, failures, max),
                settlement,
                "{case}"
            );
        }
    }
}

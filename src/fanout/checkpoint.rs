//! Where a fan-out stands, as stored with the unit's claim ([`Checkpoint`]) and as it moves
//! ([`Progress`]): which devices each lane handed out and which of those have finished, so a run
//! that takes the unit over resumes without sending a finished push again, and the counts so far
//! (by outcome, and failures by reason), which the unit's status and the console read.
//!
//! The checkpoint's JSON shape (`{"fcm": {"upto", "holes"}, "apns": …, "webpush": …}`) is read
//! back by the next release: change it only with a reader for the old one (a lane missing from
//! it, as `webpush` is from checkpoints written before Web Push, starts from the beginning).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::audience::{PerProvider, Provider};
use crate::push::OutcomeKind;
use crate::work::Counts;
use crate::work::keeper::Checkpointing;

/// Where one provider's lane stood when a checkpoint was written: every device with an id up to
/// `upto` was handed out and has finished, except the `holes` (handed out, not finished).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LaneCheckpoint {
    pub upto: i64,
    pub holes: Vec<i64>,
}

impl LaneCheckpoint {
    /// Where the audience is read from on resume: the first hole, or just after `upto`.
    pub(crate) fn read_after(&self) -> i64 {
        self.holes.iter().min().map_or(self.upto, |first| first - 1)
    }

    /// Whether a device finished before the checkpoint (and must not be sent again).
    pub(crate) fn finished(&self, device_id: i64) -> bool {
        device_id <= self.upto && !self.holes.contains(&device_id)
    }
}

/// The fan-out's progress as stored with the event claim, one lane per provider.
///
/// Any push that finishes after a checkpoint was written was either a hole then or handed out
/// since, so a crash repeats the pushes in flight (at most the concurrency) and those finished
/// since the last stored write. One is written every `min(page size, concurrency / 5)` finished
/// pushes, with no per-push round trip to Redis, and the run's fence holds new pushes while two
/// such steps wait to be stored.
pub(crate) type Checkpoint = PerProvider<LaneCheckpoint>;

#[derive(Default)]
struct LaneProgress {
    upto: i64,
    in_flight: BTreeSet<i64>,
}

/// Live progress of one fan-out: what the checkpoint is made from, and the counts progress lines
/// and the unit's status show.
pub(crate) struct Progress {
    /// Devices read from the audience, pushes settled, and lanes done reading.
    read: AtomicU64,
    settled: AtomicU64,
    lanes_read: AtomicUsize,
    /// Lanes the fan-out runs (one per provider of its sources).
    lane_count: AtomicUsize,
    resume: Checkpoint,
    lanes: PerProvider<Mutex<LaneProgress>>,
    finished_since_write: AtomicUsize,
    write_every: usize,
    /// Signalled when enough pushes finished since the last checkpoint.
    due: Notify,
    /// Final outcomes so far: sent, failed, pruned, skipped.
    outcomes: [AtomicU64; 4],
    /// Failures by reason code (`UNAVAILABLE`, `BadDeviceToken`…): touched only by failures.
    reasons: Mutex<BTreeMap<String, u64>>,
    /// What a credentials rejection paused (`fcm`, `lite/apns`…): touched once per pause.
    paused: Mutex<Vec<String>>,
}

/// The counts a unit's claim keeps, in the order of the status.
const OUTCOMES: [&str; 4] = ["sent", "failed", "pruned", "skipped"];
/// Distinct failure reasons kept per unit at most; beyond, failures are only counted.
const KEPT_REASONS: usize = 32;

impl Progress {
    pub(crate) fn new(resume: Option<Checkpoint>, write_every: usize) -> Arc<Self> {
        let resume = resume.unwrap_or_default();
        Arc::new(Self {
            read: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            lanes_read: AtomicUsize::new(0),
            lane_count: AtomicUsize::new(Provider::ALL.len()),
            lanes: PerProvider::from_fn(|p| {
                Mutex::new(LaneProgress {
                    upto: resume[p].read_after(),
                    in_flight: BTreeSet::new(),
                })
            }),
            resume,
            finished_since_write: AtomicUsize::new(0),
            write_every: write_every.max(1),
            due: Notify::new(),
            outcomes: Default::default(),
            reasons: Mutex::new(BTreeMap::new()),
            paused: Mutex::new(Vec::new()),
        })
    }

    fn lane(&self, provider: Provider) -> MutexGuard<'_, LaneProgress> {
        self.lanes[provider]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The checkpoint as of now. A resumed run that has not yet passed where the last one stood
    /// keeps that run's position and its unfinished devices beyond here, so a checkpoint never
    /// moves back.
    pub(crate) fn snapshot(&self) -> Checkpoint {
        Checkpoint::from_fn(|p| {
            let lane = self.lane(p);
            let mut holes: Vec<i64> = lane.in_flight.iter().copied().collect();
            let mut upto = lane.upto;
            let before = &self.resume[p];
            if before.upto > lane.upto {
                holes.extend(before.holes.iter().copied().filter(|h| *h > lane.upto));
                upto = before.upto;
            }
            LaneCheckpoint { upto, holes }
        })
    }

    /// Resolves when enough pushes finished since the last checkpoint that another is due.
    pub(crate) async fn checkpoint_due(&self) {
        self.due.notified().await;
    }

    /// Devices read from the audience so far, all lanes together.
    pub(crate) fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Pushes that reached their final outcome so far.
    pub(crate) fn settled(&self) -> u64 {
        self.settled.load(Ordering::Relaxed)
    }

    /// Whether every lane has read its whole audience.
    pub(crate) fn all_read(&self) -> bool {
        self.lanes_read.load(Ordering::Relaxed) >= self.lane_count.load(Ordering::Relaxed)
    }

    /// The fan-out runs `lanes` lanes: all have read their source once as many said so.
    pub(super) fn expect_lanes(&self, lanes: usize) {
        self.lane_count.store(lanes, Ordering::Relaxed);
    }

    /// Where this lane's audience starts.
    pub(crate) fn read_after(&self, provider: Provider) -> i64 {
        self.resume[provider].read_after()
    }

    /// Where the last run stood in this lane: what a resumed lane skips.
    pub(super) fn resumed_from(&self, provider: Provider) -> &LaneCheckpoint {
        &self.resume[provider]
    }

    pub(super) fn count_read(&self, devices: usize) {
        self.read.fetch_add(devices as u64, Ordering::Relaxed);
    }

    pub(super) fn count_settled(&self) {
        self.settled.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn lane_read(&self) {
        self.lanes_read.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn handed_out(&self, provider: Provider, device_id: i64) {
        let mut lane = self.lane(provider);
        lane.in_flight.insert(device_id);
        lane.upto = lane.upto.max(device_id);
    }

    /// A device settled without being handed out (skipped, or finished in an earlier run).
    pub(super) fn passed(&self, provider: Provider, device_id: i64) {
        let mut lane = self.lane(provider);
        lane.upto = lane.upto.max(device_id);
    }

    /// A push (or a device passed without one) reached its final outcome, counted as the unit's
    /// status shows it; a failure's reason code is kept too.
    pub(super) fn count_outcome(&self, counted: Counted, reason: Option<&str>) {
        self.outcomes[counted as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(code) = reason {
            let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
            if reasons.len() < KEPT_REASONS || reasons.contains_key(code) {
                *reasons.entry(code.to_string()).or_insert(0) += 1;
            }
        }
    }

    /// A credentials rejection paused `what` for the rest of the unit.
    pub(super) fn pause(&self, what: String) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        if !paused.contains(&what) {
            paused.push(what);
        }
    }

    /// The counts so far, as the unit's claim keeps them: `recipients` (every outcome), each
    /// outcome, `total` once the whole audience is read, `reason:<code>` for each failure reason
    /// and `paused:<what>` for each pause.
    pub(crate) fn counts(&self) -> Counts {
        let outcomes = self.outcomes.each_ref().map(|c| c.load(Ordering::Relaxed));
        let mut counts: Counts = vec![("recipients".into(), outcomes.iter().sum())];
        let named = OUTCOMES.iter().zip(outcomes);
        counts.extend(named.map(|(n, c)| (n.to_string(), c)));
        if self.all_read() {
            counts.push(("total".into(), self.read()));
        }
        let reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        counts.extend(reasons.iter().map(|(r, n)| (format!("reason:{r}"), *n)));
        let paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        counts.extend(paused.iter().map(|p| (format!("paused:{p}"), 1)));
        counts
    }

    pub(super) fn finished(&self, provider: Provider, device_id: i64) {
        self.lane(provider).in_flight.remove(&device_id);
        if self.finished_since_write.fetch_add(1, Ordering::Relaxed) + 1 >= self.write_every {
            self.finished_since_write.store(0, Ordering::Relaxed);
            self.due.notify_one();
        }
    }
}

/// How an outcome counts in a unit's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Sent = 0,
    Failed = 1,
    Pruned = 2,
    Skipped = 3,
}

impl Counted {
    /// How a provider's outcome counts, before what the tally makes of it (a dead token is
    /// pruned or, where nothing is written, failed).
    pub(crate) fn of(kind: OutcomeKind) -> Self {
        match kind {
            OutcomeKind::Delivered => Counted::Sent,
            OutcomeKind::Skipped => Counted::Skipped,
            _ => Counted::Failed,
        }
    }
}

impl Checkpointing for Progress {
    fn checkpoint(&self) -> String {
        serde_json::to_string(&self.snapshot()).unwrap_or_default()
    }

    fn counts(&self) -> Counts {
        Progress::counts(self)
    }

    async fn due(&self) {
        self.checkpoint_due().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_stored_by_this_release_and_the_one_before_web_push_stay_readable() {
        // As `serde_json::to_string(&progress.snapshot())` wrote them into event claims.
        let stored = r#"{"fcm":{"upto":90000,"holes":[1200,5000]},"apns":{"upto":7,"holes":[]},"webpush":{"upto":12,"holes":[9]}}"#;
        let checkpoint: Checkpoint = serde_json::from_str(stored).unwrap();
        assert_eq!(
            checkpoint,
            Checkpoint {
                fcm: LaneCheckpoint {
                    upto: 90_000,
                    holes: vec![1_200, 5_000]
                },
                apns: LaneCheckpoint {
                    upto: 7,
                    holes: vec![]
                },
                webpush: LaneCheckpoint {
                    upto: 12,
                    holes: vec![9]
                },
            }
        );
        assert_eq!(serde_json::to_string(&checkpoint).unwrap(), stored);
        // Before Web Push: no such lane, so a resumed run reads every web device from the start
        // (the run that wrote it sent none).
        let before = r#"{"fcm":{"upto":90000,"holes":[1200,5000]},"apns":{"upto":7,"holes":[]}}"#;
        let checkpoint: Checkpoint = serde_json::from_str(before).unwrap();
        assert_eq!(checkpoint.apns.upto, 7);
        assert_eq!(checkpoint.webpush, LaneCheckpoint::default());
        assert_eq!(checkpoint.webpush.read_after(), 0);
    }

    #[test]
    fn a_checkpoint_lists_in_flight_pushes_as_holes() {
        let progress = Progress::new(None, 1000);
        for id in [1, 2, 3] {
            progress.handed_out(Provider::Fcm, id);
        }
        progress.finished(Provider::Fcm, 1);
        progress.finished(Provider::Fcm, 3);
        progress.passed(Provider::Apns, 7);
        let c = progress.snapshot();
        assert_eq!(
            c.fcm,
            LaneCheckpoint {
                upto: 3,
                holes: vec![2]
            }
        );
        assert_eq!(
            c.apns,
            LaneCheckpoint {
                upto: 7,
                holes: vec![]
            }
        );
        assert_eq!(c.fcm.read_after(), 1);
        assert!(c.fcm.finished(3) && !c.fcm.finished(2) && !c.fcm.finished(4));
    }

    #[test]
    fn a_resumed_run_never_moves_the_checkpoint_back() {
        // The last run stood at 90,000 with device 1,200 still in flight.
        let before = Checkpoint {
            fcm: LaneCheckpoint {
                upto: 90_000,
                holes: vec![1_200, 5_000],
            },
            ..Checkpoint::default()
        };
        let progress = Progress::new(Some(before), 1000);
        assert_eq!(progress.read_after(Provider::Fcm), 1_199);
        // The resumed run re-sends 1,200 and has not reached 5,000 yet.
        progress.handed_out(Provider::Fcm, 1_200);
        progress.finished(Provider::Fcm, 1_200);
        progress.passed(Provider::Fcm, 4_999);
        let c = progress.snapshot();
        assert_eq!(
            c.fcm,
            LaneCheckpoint {
                upto: 90_000,
                holes: vec![5_000]
            }
        );
        // Past the old position, its own progress counts.
        progress.handed_out(Provider::Fcm, 5_000);
        progress.finished(Provider::Fcm, 5_000);
        progress.handed_out(Provider::Fcm, 90_001);
        assert_eq!(
            progress.snapshot().fcm,
            LaneCheckpoint {
                upto: 90_001,
                holes: vec![90_001]
            }
        );
    }
}

//! Where a fan-out stands, as stored with the event claim ([`Checkpoint`]) and as it moves
//! ([`Progress`]): which devices each lane handed out and which of those have finished, so a run
//! that takes the event over resumes without sending a finished push again.
//!
//! The checkpoint's JSON shape (`{"fcm": {"upto", "holes"}, "apns": …}`) is read back by the next
//! release: change it only with a reader for the old one.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::audience::{PerProvider, Provider};

/// Where one provider's lane stood when a checkpoint was written: every device with an id up to
/// `upto` was handed out and has finished, except the `holes` (handed out, not finished).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCheckpoint {
    pub upto: i64,
    pub holes: Vec<i64>,
}

impl LaneCheckpoint {
    /// Where the audience is read from on resume: the first hole, or just after `upto`.
    pub fn read_after(&self) -> i64 {
        self.holes.iter().min().map_or(self.upto, |first| first - 1)
    }

    /// Whether a device finished before the checkpoint (and must not be sent again).
    pub fn finished(&self, device_id: i64) -> bool {
        device_id <= self.upto && !self.holes.contains(&device_id)
    }
}

/// The fan-out's progress as stored with the event claim, one lane per provider.
///
/// Any push that finishes after a checkpoint was written was either a hole then or handed out
/// since, so a crash repeats the pushes in flight (at most a provider's share, three quarters of the
/// concurrency) and those finished since the last write. Writing every `min(page size,
/// concurrency / 5)` finished pushes keeps the sum under the concurrency limit, with no per-push
/// round trip to Redis.
pub type Checkpoint = PerProvider<LaneCheckpoint>;

#[derive(Default)]
struct LaneProgress {
    upto: i64,
    in_flight: BTreeSet<i64>,
}

/// Live progress of one fan-out: what the checkpoint is made from, the counts progress lines
/// show, and the hold the claim keeper puts on handing out pushes.
pub struct Progress {
    /// Devices read from the audience, pushes settled, and lanes done reading.
    read: AtomicU64,
    settled: AtomicU64,
    lanes_read: AtomicUsize,
    resume: Checkpoint,
    lanes: PerProvider<Mutex<LaneProgress>>,
    finished_since_write: AtomicUsize,
    write_every: usize,
    /// Signalled when enough pushes finished since the last checkpoint.
    due: Notify,
    /// While true, no new push is handed out (the claim cannot be renewed, say Redis is down).
    hold: watch::Sender<bool>,
}

impl Progress {
    pub fn new(resume: Option<Checkpoint>, write_every: usize) -> Arc<Self> {
        let resume = resume.unwrap_or_default();
        Arc::new(Self {
            read: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            lanes_read: AtomicUsize::new(0),
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
            hold: watch::Sender::new(false),
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
    pub fn snapshot(&self) -> Checkpoint {
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
    pub async fn checkpoint_due(&self) {
        self.due.notified().await;
    }

    pub fn set_hold(&self, hold: bool) {
        self.hold
            .send_if_modified(|h| std::mem::replace(h, hold) != hold);
    }

    /// Follows the hold: a lane waits on it before handing out a push.
    pub(super) fn watch_hold(&self) -> watch::Receiver<bool> {
        self.hold.subscribe()
    }

    /// Devices read from the audience so far, all lanes together.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Pushes that reached their final outcome so far.
    pub fn settled(&self) -> u64 {
        self.settled.load(Ordering::Relaxed)
    }

    /// Whether every lane has read its whole audience.
    pub fn all_read(&self) -> bool {
        self.lanes_read.load(Ordering::Relaxed) >= Provider::ALL.len()
    }

    /// Where this lane's audience starts.
    pub fn read_after(&self, provider: Provider) -> i64 {
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

    pub(super) fn finished(&self, provider: Provider, device_id: i64) {
        self.lane(provider).in_flight.remove(&device_id);
        if self.finished_since_write.fetch_add(1, Ordering::Relaxed) + 1 >= self.write_every {
            self.finished_since_write.store(0, Ordering::Relaxed);
            self.due.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_stored_by_the_current_release_stay_readable() {
        // As `serde_json::to_string(&progress.snapshot())` wrote them into event claims.
        let stored = r#"{"fcm":{"upto":90000,"holes":[1200,5000]},"apns":{"upto":7,"holes":[]}}"#;
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
            }
        );
        assert_eq!(serde_json::to_string(&checkpoint).unwrap(), stored);
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
            apns: LaneCheckpoint::default(),
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

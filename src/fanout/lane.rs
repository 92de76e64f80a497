//! One provider's lane of a fan-out: takes the pages its reader hands over and turns each device
//! into a push task, once the device is admitted (not finished in an earlier run, an app this
//! process serves, a pusher and a token, not paused, the run's fence open) and both its app's
//! provider permit and the global one are held. Then it waits for its pushes, or after a stop
//! (or a shut fence) gives them the drain timeout.
//!
//! This is the hot path: per device, no allocation beyond the [`Push`] and its task, and the
//! permits are taken *before* the spawn so live tasks never exceed either limit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use super::checkpoint::LaneCheckpoint;
use super::pages::{Page, read_pages};
use super::tally::Tally;
use super::{FanoutLimits, Source};
use crate::apps::{AppId, Apps};
use crate::audience::{Device, Provider};
use crate::database::DatabaseError;
use crate::push::{Admission, Asking, Permits, Push, PushLimits, PushOutcome, Pusher, skipped};

/// What becomes of a device taken from a page.
enum Admit {
    /// Settled without a push (skipped, or finished in an earlier run).
    Passed,
    /// Ready to go, its permits held.
    Send(Arc<dyn Pusher>, Permits),
    /// A stop came while the device waited, or the run may send nothing more.
    Stopped,
}

/// What a lane holds for each app: the app's pusher for the provider.
struct LaneApp {
    pusher: Option<Arc<dyn Pusher>>,
}

pub(super) struct Lane {
    provider: Provider,
    apps: Apps<LaneApp>,
    limits: PushLimits,
    /// Where the run this one resumes stood: devices finished then are not sent again.
    resume: LaneCheckpoint,
    tasks: JoinSet<()>,
    tally: Arc<Tally>,
    drain_timeout: Duration,
    stop: CancellationToken,
}

impl Lane {
    /// Sends one provider's devices: take a page, then permits first and a task per push.
    /// `asking` marks the lane's providers as wanting permits until every device is handed out.
    pub(super) async fn run(
        provider: Provider,
        source: Source,
        tally: Arc<Tally>,
        limits: FanoutLimits,
        stop: CancellationToken,
        asking: Asking,
    ) -> Result<(), DatabaseError> {
        // Capacity 1: one page waits while another is sent, and the reader may hold a third.
        let (pages_tx, mut pages) = mpsc::channel(1);
        // Outside the unit's span: sqlx enters the span current when a read starts around every
        // row it yields, twice (two nested streams), and that was about 600 instructions a push.
        // What the reader logs names the unit itself.
        let reader = tokio::spawn(read_pages(
            source,
            pages_tx,
            Arc::clone(&limits.audience_reads),
            limits.retry_pages_for,
            Arc::clone(&tally),
        ));
        let apps = Apps::from_fn(&tally.delivery.apps, |app| LaneApp {
            pusher: tally.delivery.pushers[app][provider].clone(),
        });
        let mut lane = Lane {
            provider,
            apps,
            resume: tally.progress.resumed_from(provider).clone(),
            tasks: JoinSet::new(),
            drain_timeout: limits.push.drain_timeout,
            limits: limits.push,
            tally,
            stop,
        };
        lane.warm().await;
        let failure = lane.send_pages(&mut pages).await;
        // Every device is handed out: other providers' shares may take the slots left.
        drop(asking);
        reader.abort();
        lane.finish().await;
        failure.map_or(Ok(()), Err)
    }

    /// Dials every app's connections for this provider while the first page is read. A lane
    /// that dialled on its first device started its burst late and found the other lanes had
    /// taken the slots (an event half on each provider ran a round longer at 200 ms). An app
    /// with no device in this event dials for nothing; idle connections close on their own.
    async fn warm(&self) {
        let pushers = self.apps.iter().filter_map(|(_, app)| app.pusher.as_ref());
        futures_util::future::join_all(pushers.map(|pusher| pusher.warm())).await;
    }

    /// Hands out every page until the audience ends, it fails (the error is returned), or a stop.
    async fn send_pages(&mut self, pages: &mut mpsc::Receiver<Page>) -> Option<DatabaseError> {
        loop {
            let page = tokio::select! {
                biased;
                _ = self.stop.cancelled() => {
                    self.interrupt(0);
                    return None;
                }
                page = pages.recv() => page,
            };
            let page = match page {
                Some(Ok(page)) => page,
                Some(Err(e)) => return Some(e),
                None => return None,
            };
            self.tally.count_page();
            let mut devices = page.into_iter();
            while let Some(device) = devices.next() {
                self.tally.unbuffer(1);
                match self.admit(&device).await {
                    Admit::Passed => {}
                    Admit::Send(pusher, permits) => self.spawn_push(device, pusher, permits),
                    Admit::Stopped => {
                        self.interrupt(devices.len());
                        return None;
                    }
                }
            }
        }
    }

    /// Decides what becomes of a device, waiting (for the hold to lift, for permits) as needed.
    async fn admit(&mut self, device: &Device) -> Admit {
        if self.resume.finished(device.id) {
            // Sent before the checkpoint this run resumes from.
            self.tally.progress.passed(self.provider, device.id);
            return Admit::Passed;
        }
        let Some(app) = device.app else {
            self.tally.count_unknown_app();
            self.tally.progress.passed(self.provider, device.id);
            return Admit::Passed;
        };
        let lane_app = &self.apps[app];
        let Some(pusher) = lane_app.pusher.clone().filter(|_| !device.token.is_empty()) else {
            let why = if device.token.is_empty() {
                "empty token"
            } else {
                "not configured"
            };
            return self.pass(app, device, why).await;
        };
        if self.tally.is_paused(app, self.provider, device) {
            return self.pass(app, device, "paused").await;
        }
        let fence = &self.tally.fence;
        loop {
            if fence.hand_out() != Admission::Go && !fence.admit(&self.stop).await {
                // Lost or cancelled (or a stop while the claim could not be renewed or the
                // progress stored).
                return Admit::Stopped;
            }
            let Some(permits) = self.limits.admit(app, self.provider, &self.stop).await else {
                return Admit::Stopped;
            };
            // Asked again: the wait for permits may have outlasted the claim, and the push
            // that gave its permit back is unsaved progress now.
            match fence.hand_out() {
                Admission::Go => return Admit::Send(pusher, permits),
                Admission::Shut => return Admit::Stopped,
                Admission::Hold => drop(permits),
            }
        }
    }

    /// Settles a device as skipped, without a push.
    async fn pass(&self, app: AppId, device: &Device, why: &str) -> Admit {
        let outcome = skipped(self.provider, why);
        self.tally
            .settle((app, self.provider), device, outcome, 0)
            .await;
        self.tally.progress.passed(self.provider, device.id);
        Admit::Passed
    }

    fn spawn_push(&mut self, device: Device, pusher: Arc<dyn Pusher>, permits: Permits) {
        let tally = &self.tally;
        tally.progress.handed_out(self.provider, device.id);
        let push = Push {
            event_id: Arc::clone(&tally.event_id),
            content: tally.content.for_device(&device),
            device,
        };
        // Boxed here, where it is made: the spawn then moves a pointer through tokio's layers
        // and its task cell, not the push's whole state, over a kilobyte, several times.
        let task = Box::pin(send(
            Arc::clone(tally),
            self.provider,
            pusher,
            push,
            permits,
        ));
        // Not in the unit's span: `send` enters it only where the push logs (see there).
        self.tasks.spawn(task);
        // Reap what has finished, so the set holds only live tasks.
        while let Some(done) = self.tasks.try_join_next() {
            self.tally.task_ended(done);
        }
    }

    /// The fan-out stops here: the `remaining` devices of the page are dropped unsent.
    fn interrupt(&self, remaining: usize) {
        self.tally.unbuffer(remaining);
        self.tally.interrupt();
    }

    /// Waits for the pushes handed out, unless a stop comes first; after a stop, in-flight
    /// pushes get the drain timeout, and any still running then are abandoned.
    async fn finish(mut self) {
        if !self.tally.is_interrupted() {
            tokio::select! {
                _ = join_all(&mut self.tasks, &self.tally) => {}
                // In-flight pushes get the drain below; any it abandons leave the event unfinished.
                _ = self.stop.cancelled() => {}
            }
        }
        // After a stop, in-flight pushes get the drain timeout; without one, nothing is left.
        let drained =
            tokio::time::timeout(self.drain_timeout, join_all(&mut self.tasks, &self.tally)).await;
        if drained.is_err() {
            self.abandon().await;
        }
    }

    async fn abandon(&mut self) {
        self.tasks.abort_all();
        let mut abandoned = 0;
        while let Some(done) = self.tasks.join_next().await {
            // A task may have finished (and counted itself) just before the abort.
            if matches!(&done, Err(e) if e.is_cancelled()) {
                abandoned += 1;
            } else {
                self.tally.task_ended(done);
            }
        }
        warn!(
            provider = self.provider.as_str(),
            abandoned, "Pushes still in flight at the drain deadline were abandoned."
        );
        self.tally.count_lost(abandoned);
        // Abandoned pushes stay holes in the checkpoint: the event must be resumed, not done.
        if abandoned > 0 {
            self.tally.interrupt();
        }
    }
}

async fn join_all(tasks: &mut JoinSet<()>, tally: &Tally) {
    while let Some(done) = tasks.join_next().await {
        tally.task_ended(done);
    }
}

/// One push task: delivers with retries and settles the outcome. A delivery gives the permits
/// back once it is finished, any other outcome before it settles (see the fence's `Settling`). A
/// push the fence withdrew is not settled: it stays a hole in the checkpoint, for whichever run
/// holds the unit next.
///
/// An async block rather than an async fn: an async fn's state keeps its arguments twice (rustc
/// issue 62958), and this state is every push's task, allocated and copied once per push.
#[allow(clippy::manual_async_fn)]
fn send(
    tally: Arc<Tally>,
    provider: Provider,
    pusher: Arc<dyn Pusher>,
    push: Push,
    permits: Permits,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // Admitted devices are of a served app.
        let app = push.device.app.unwrap_or(AppId::DEFAULT);
        let paused = || tally.is_paused(app, provider, &push.device);
        let fence = &*tally.fence;
        let delivery = (tally.delivery).send((app, provider), &*pusher, &push, &paused, fence);
        // The unit's span (its event_id on every line) is entered only around what may log: a
        // pusher that logs each push, and the settling of anything but a delivery.
        let done = if pusher.logs_each_push() {
            delivery.instrument(tally.span.clone()).await
        } else {
            delivery.await
        };
        let Some(done) = done else { return };
        let delivered = matches!(done.outcome, PushOutcome::Delivered);
        let settle = tally.settle((app, provider), &push.device, done.outcome, done.attempts);
        if delivered {
            // A delivery settles at once, without a line: its slots go back once it is finished,
            // so a push is in flight or finished, never neither.
            settle.await;
            tally.progress.finished(provider, push.device.id);
            fence.finished();
            drop(permits);
            return;
        }
        // Anything else may wait to settle (a dead token for a slow prune queue), and must not
        // hold the slots meanwhile: it counts as unsaved instead, so the pushes handed out in its
        // place stay within the bound of what a run cut off may repeat.
        let settling = fence.settling();
        drop(permits);
        settle.instrument(tally.span.clone()).await;
        tally.progress.finished(provider, push.device.id);
        settling.finished();
    }
}

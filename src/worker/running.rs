//! What a run holds while its unit runs, whatever the unit (an event, a job, a `POST /push`
//! notification): the fence of its claim, the keeper that renews it and stores its checkpoints,
//! the progress it stores, and the progress line. Started once the unit is claimed, ended when
//! its run settles; the timings live in `work::keeper`.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Worker;
use super::progress_log::report_progress;
use crate::fanout::{Checkpoint, Progress};
use crate::work::fence::Shut;
use crate::work::stream::Touch;
use crate::work::{Fence, Held, Keeper};

/// What a run holds while its unit runs: the fence of its claim, the keeper renewing it, the
/// progress it stores, and the progress line.
pub(super) struct Running {
    pub fence: Arc<Fence>,
    pub progress: Arc<Progress>,
    /// The unit stops when the process stops, or when another run took it over.
    pub run_stop: CancellationToken,
    /// Told when Redis had lost the claim and it was written again.
    pub recreated: Arc<Notify>,
    keeper: Option<JoinHandle<()>>,
    reporter: JoinHandle<()>,
    /// Ends the keeper and the reporter. The keeper outlives a process stop: the lease must
    /// hold through the drain.
    companions: CancellationToken,
}

impl Running {
    /// Starts keeping `held` (with `payload`, what is written again should Redis lose it), from
    /// `resume` (where an earlier run stood), keeping `touch` (the stream entry) with this replica.
    pub(super) fn start(
        worker: &Worker,
        held: Held,
        payload: String,
        resume: Option<Checkpoint>,
        touch: Option<Touch>,
        stop: &CancellationToken,
    ) -> Self {
        let settings = &worker.settings;
        let write_every = (settings.database.page_size as usize)
            .min(settings.service.concurrency / 5)
            .max(1);
        let progress = Progress::new(resume, write_every);
        let claims = &worker.claims;
        let fence = Arc::new(match claims.is_shared() {
            // Two checkpoints' worth may wait to be stored: one being written, one behind it.
            true => Fence::new(claims.lease() / 2, 2 * write_every as u64),
            false => Fence::always_open(),
        });
        let run_stop = stop.child_token();
        let companions = CancellationToken::new();
        let recreated = Arc::new(Notify::new());
        let keeper = claims.is_shared().then(|| {
            let keeper = Keeper {
                claims: claims.clone(),
                held,
                payload,
                progress: Arc::clone(&progress),
                fence: Arc::clone(&fence),
                touch,
                stop: companions.clone(),
                run_stop: run_stop.clone(),
                recreated: Arc::clone(&recreated),
            };
            tokio::spawn(keeper.run().in_current_span())
        });
        let reporter = tokio::spawn(
            report_progress(Arc::clone(&progress), companions.clone()).in_current_span(),
        );
        Self {
            fence,
            progress,
            run_stop,
            recreated,
            keeper,
            reporter,
            companions,
        }
    }

    /// Ends the keeper and the progress line; why the fence shut, if it did.
    pub(super) async fn end(self) -> Option<Shut> {
        self.companions.cancel();
        if let Some(keeper) = self.keeper {
            let _ = keeper.await;
        }
        let _ = self.reporter.await;
        self.fence.shut_by()
    }

    pub(super) fn checkpoint(&self) -> String {
        serde_json::to_string(&self.progress.snapshot()).unwrap_or_default()
    }
}

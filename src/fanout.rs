//! The fan-out of one event: devices stream in from the audience, page by page, and each becomes
//! a push task under a shared concurrency limit.
//!
//! A permit is taken *before* a task is spawned, so the number of live push tasks never exceeds
//! the limit however large the audience, and finished tasks are reaped as the loop goes, so memory
//! stays flat. The next page is read by a separate task while the current one is sent, and at
//! most a few pages are held at once. One failing push never stops the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::audience::Audience;
use crate::backoff::Backoff;
use crate::content::Rendered;
use crate::database::DatabaseError;
use crate::push::{Push, PushOutcome, Pusher};

/// Limits that apply to one fan-out.
#[derive(Debug, Clone)]
pub struct FanoutLimits {
    /// Shared by every event: pushes in flight at once across the process.
    pub permits: Arc<Semaphore>,
    /// How long a failing page read is retried before the event fails.
    pub retry_pages_for: Duration,
    /// After a stop, how long in-flight pushes may take before they are abandoned.
    pub drain_timeout: Duration,
}

/// What a fan-out did, for the event summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutReport {
    /// Devices handed to the pusher or skipped.
    pub recipients: u64,
    pub sent: u64,
    pub failed: u64,
    /// Devices whose token the provider declared dead.
    pub pruned: u64,
    pub skipped: u64,
    /// Audience pages read.
    pub pages: u64,
    /// Most devices held in memory at once, read but not yet handed to a push task.
    pub peak_buffered: usize,
    /// The fan-out was stopped (shutdown) before the whole audience was reached.
    pub interrupted: bool,
}

impl FanoutReport {
    fn record(&mut self, outcome: PushOutcome) {
        match outcome {
            PushOutcome::Sent => self.sent += 1,
            PushOutcome::Unregistered { .. } => self.pruned += 1,
            PushOutcome::Failed { .. } => self.failed += 1,
            PushOutcome::Skipped { .. } => self.skipped += 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("reading the audience failed: {source}")]
    Audience {
        #[source]
        source: DatabaseError,
        /// What was done before the failure.
        report: FanoutReport,
    },
}

/// Sends the event's notification to every device of the audience.
pub async fn fan_out(
    audience: Audience,
    event_id: Arc<str>,
    content: Arc<Rendered>,
    pusher: Arc<dyn Pusher>,
    limits: &FanoutLimits,
    stop: &CancellationToken,
) -> Result<FanoutReport, FanoutError> {
    let buffered = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    // Capacity 1: one page waits while another is sent, and the pager may hold a third.
    let (pages_tx, mut pages) = mpsc::channel(1);
    let pager = tokio::spawn(read_pages(
        audience,
        pages_tx,
        limits.retry_pages_for,
        stop.clone(),
        Arc::clone(&buffered),
        Arc::clone(&peak),
    ));

    let mut report = FanoutReport::default();
    let mut tasks = JoinSet::new();
    let mut failure = None;
    'pages: loop {
        let page = tokio::select! {
            biased;
            _ = stop.cancelled() => { report.interrupted = true; break 'pages; }
            page = pages.recv() => page,
        };
        let page = match page {
            Some(Ok(page)) => page,
            Some(Err(e)) => {
                failure = Some(e);
                break 'pages;
            }
            None => break 'pages,
        };
        report.pages += 1;
        let mut devices = page.into_iter();
        while let Some(device) = devices.next() {
            buffered.fetch_sub(1, Ordering::Relaxed);
            report.recipients += 1;
            if device.provider.is_none() || device.token.is_empty() {
                report.skipped += 1;
                continue;
            }
            let permit = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    report.recipients -= 1;
                    buffered.fetch_sub(devices.len(), Ordering::Relaxed);
                    report.interrupted = true;
                    break 'pages;
                }
                permit = Arc::clone(&limits.permits).acquire_owned() => permit,
            };
            let Ok(permit) = permit else {
                // The semaphore is never closed; if it were, nothing more could be sent.
                report.interrupted = true;
                break 'pages;
            };
            let push = Push {
                event_id: Arc::clone(&event_id),
                notification: Arc::clone(content.for_locale(device.locale.as_deref())),
                device,
            };
            let pusher = Arc::clone(&pusher);
            tasks.spawn(async move {
                let outcome = pusher.push(&push).await;
                drop(permit);
                outcome
            });
            // Reap what has finished, so the set holds only live tasks.
            while let Some(done) = tasks.try_join_next() {
                record(&mut report, done);
            }
        }
    }
    pager.abort();

    if !report.interrupted {
        // The whole audience is handed out; wait for the pushes, unless a stop comes first.
        tokio::select! {
            _ = async {
                while let Some(done) = tasks.join_next().await {
                    record(&mut report, done);
                }
            } => {}
            _ = stop.cancelled() => {}
        }
    }
    // After a stop, in-flight pushes get the drain timeout; without one, nothing is left.
    drain_within(&mut tasks, &mut report, limits.drain_timeout).await;
    report.peak_buffered = peak.load(Ordering::Relaxed);
    match failure {
        Some(source) => Err(FanoutError::Audience { source, report }),
        None => Ok(report),
    }
}

async fn drain_within(
    tasks: &mut JoinSet<PushOutcome>,
    report: &mut FanoutReport,
    within: Duration,
) {
    let drained = tokio::time::timeout(within, async {
        while let Some(done) = tasks.join_next().await {
            record(report, done);
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            abandoned = tasks.len(),
            "Pushes still in flight at the drain deadline were abandoned."
        );
        tasks.abort_all();
        report.failed += tasks.len() as u64;
        tasks.detach_all();
    }
}

fn record(report: &mut FanoutReport, done: Result<PushOutcome, tokio::task::JoinError>) {
    match done {
        Ok(outcome) => report.record(outcome),
        Err(e) => {
            error!(error = %e, "A push task panicked.");
            report.failed += 1;
        }
    }
}

/// Reads the audience page by page into `pages`, retrying a failed read with backoff.
async fn read_pages(
    mut audience: Audience,
    pages: mpsc::Sender<Result<Vec<crate::audience::Device>, DatabaseError>>,
    retry_for: Duration,
    stop: CancellationToken,
    buffered: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing_since = None;
    loop {
        let page = match audience.next_page().await {
            Ok(page) => page,
            Err(e) => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= retry_for {
                    let _ = pages.send(Err(e)).await;
                    return;
                }
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Reading the audience failed; retrying.");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        failing_since = None;
        backoff.reset();
        let Some(page) = page else { return };
        let now = buffered.fetch_add(page.len(), Ordering::Relaxed) + page.len();
        peak.fetch_max(now, Ordering::Relaxed);
        if pages.send(Ok(page)).await.is_err() {
            return;
        }
    }
}

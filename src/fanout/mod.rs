//! The fan-out of one event: one lane per provider, each streaming its own devices from the
//! audience (one query, cut into pages) and turning each into a push task.
//!
//! A lane takes a permit from its provider's semaphore and then one from the global semaphore
//! *before* spawning, so live push tasks never exceed either limit however large the audience,
//! and a provider holds at most its own share of the global slots. The lanes share nothing that
//! can block, so a slow or failing provider never holds up the other. Finished tasks are reaped
//! as a lane goes and each lane holds at most three pages (plus the one being cut), so memory
//! stays flat: while they wait, the query waits too. One failing push never stops the others.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::audience::{Audience, Device, PageSink, PerProvider, Platform, Provider};
use crate::backoff::Backoff;
use crate::content::Rendered;
use crate::database::{DatabaseError, ReadEnd};
use crate::prune::Dead;
use crate::push::retry::{RetryPolicy, deliver};
use crate::push::{MaskedToken, PauseScope, ProviderPushers, Push, PushOutcome};
use crate::telemetry::PushMetrics;

/// Limits shared by every event.
#[derive(Debug, Clone)]
pub struct FanoutLimits {
    /// Pushes in flight at once across the process.
    pub permits: Arc<Semaphore>,
    /// Pushes in flight at once per provider, each less than the global limit.
    pub provider_permits: PerProvider<Arc<Semaphore>>,
    /// Audience reads open at once, all events together. Each holds a database connection for
    /// its whole read, so there are fewer of them than pool connections: the rest stay free for
    /// the talk and prune statements, which are short, so nothing waits on a read to finish.
    pub audience_reads: Arc<Semaphore>,
    /// How long a failing audience read is retried (from where it stopped) before the event fails.
    pub retry_pages_for: Duration,
    /// After a stop, how long in-flight pushes may take before they are abandoned.
    pub drain_timeout: Duration,
}

/// How one event's pushes are sent.
#[derive(Clone)]
pub struct Delivery {
    /// The pusher for each provider; `None` where the provider is not configured.
    pub pushers: ProviderPushers,
    pub retry: RetryPolicy,
    /// Where dead tokens go to be pruned; `None` in dry and validate runs.
    pub prune: Option<mpsc::Sender<Dead>>,
}

/// What a fan-out did, for the event summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutReport {
    /// Devices that got an outcome: sent, failed, pruned or skipped.
    pub recipients: u64,
    pub sent: u64,
    pub failed: u64,
    /// Devices whose token the provider declared dead, queued for disabling.
    pub pruned: u64,
    pub skipped: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// What was paused because a provider rejected our credentials: `fcm`, `fcm:ios+web`, `apns`.
    pub paused: Vec<&'static str>,
    /// Audience pages read, all lanes together.
    pub pages: u64,
    /// Audience queries run, all lanes together: one per lane, plus one per read resumed after a
    /// failure.
    pub queries: u64,
    /// Most devices held in memory at once, read but not yet handed to a push task.
    pub peak_buffered: usize,
    /// The fan-out was stopped (shutdown) before the whole audience was reached.
    pub interrupted: bool,
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

/// Live progress of one fan-out: what the checkpoint is made from.
pub struct Progress {
    /// Devices read from the audience, pushes settled, and lanes done reading: for progress lines.
    pub read: AtomicU64,
    pub settled: AtomicU64,
    pub lanes_read: AtomicUsize,
    resume: Checkpoint,
    lanes: PerProvider<Mutex<LaneProgress>>,
    finished_since_write: AtomicUsize,
    write_every: usize,
    /// Signalled when enough pushes finished since the last checkpoint.
    pub due: Notify,
    /// While true, no new push is handed out (the claim cannot be renewed, say Redis is down).
    hold: watch::Sender<bool>,
}

impl Progress {
    pub fn new(resume: Option<Checkpoint>, write_every: usize) -> Arc<Self> {
        let resume = resume.unwrap_or_default();
        let lane = |c: &LaneCheckpoint| {
            Mutex::new(LaneProgress {
                upto: c.read_after(),
                in_flight: BTreeSet::new(),
            })
        };
        Arc::new(Self {
            read: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            lanes_read: AtomicUsize::new(0),
            lanes: PerProvider::from_fn(|p| lane(&resume[p])),
            resume,
            finished_since_write: AtomicUsize::new(0),
            write_every: write_every.max(1),
            due: Notify::new(),
            hold: watch::Sender::new(false),
        })
    }

    fn lane(&self, provider: Provider) -> std::sync::MutexGuard<'_, LaneProgress> {
        self.lanes[provider]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The checkpoint as of now. A resumed run that has not yet passed where the last one stood
    /// keeps that run's position and its unfinished devices beyond here, so a checkpoint never
    /// moves back.
    pub fn snapshot(&self) -> Checkpoint {
        let lane = |p| {
            let lane = self.lane(p);
            let mut holes: Vec<i64> = lane.in_flight.iter().copied().collect();
            let mut upto = lane.upto;
            let before = &self.resume[p];
            if before.upto > lane.upto {
                holes.extend(before.holes.iter().copied().filter(|h| *h > lane.upto));
                upto = before.upto;
            }
            LaneCheckpoint { upto, holes }
        };
        Checkpoint::from_fn(lane)
    }

    pub fn set_hold(&self, hold: bool) {
        self.hold
            .send_if_modified(|h| std::mem::replace(h, hold) != hold);
    }

    /// Where this lane's audience starts.
    pub fn read_after(&self, provider: Provider) -> i64 {
        self.resume[provider].read_after()
    }

    fn handed_out(&self, provider: Provider, device_id: i64) {
        let mut lane = self.lane(provider);
        lane.in_flight.insert(device_id);
        lane.upto = lane.upto.max(device_id);
    }

    /// A device settled without being handed out (skipped, or finished in an earlier run).
    fn passed(&self, provider: Provider, device_id: i64) {
        let mut lane = self.lane(provider);
        lane.upto = lane.upto.max(device_id);
    }

    fn finished(&self, provider: Provider, device_id: i64) {
        self.lane(provider).in_flight.remove(&device_id);
        if self.finished_since_write.fetch_add(1, Ordering::Relaxed) + 1 >= self.write_every {
            self.finished_since_write.store(0, Ordering::Relaxed);
            self.due.notify_one();
        }
    }
}

/// What a credentials rejection pauses for the rest of the event, as listed in the report.
#[derive(Clone, Copy)]
struct Pause {
    provider: Provider,
    scope: PauseScope,
}

impl Pause {
    fn label(self) -> &'static str {
        match self.scope {
            PauseScope::Provider => self.provider.as_str(),
            // Only FCM reaches Apple and web devices beside Android ones.
            PauseScope::NonAndroid => "fcm:ios+web",
        }
    }
}

/// What the tasks of one event share.
struct EventState {
    event_id: Arc<str>,
    content: Arc<Rendered>,
    delivery: Delivery,
    sent: AtomicU64,
    failed: AtomicU64,
    pruned: AtomicU64,
    skipped: AtomicU64,
    retries: AtomicU64,
    pages: AtomicU64,
    queries: AtomicU64,
    /// Indexed by [`PauseScope::index`].
    paused: PerProvider<[AtomicBool; PauseScope::ALL.len()]>,
    /// Failure reasons already logged for this event: each is logged once, then only counted.
    logged: Mutex<HashSet<String>>,
    buffered: AtomicUsize,
    peak_buffered: AtomicUsize,
    interrupted: AtomicBool,
    progress: Arc<Progress>,
}

impl EventState {
    fn flag(&self, pause: Pause) -> &AtomicBool {
        &self.paused[pause.provider][pause.scope.index()]
    }

    /// Whether pushes to this device are paused for the rest of the event.
    fn is_paused(&self, provider: Provider, device: &Device) -> bool {
        let paused =
            |scope: PauseScope| self.flag(Pause { provider, scope }).load(Ordering::Relaxed);
        paused(PauseScope::Provider)
            || (device.platform != Some(Platform::Android) && paused(PauseScope::NonAndroid))
    }

    /// Logs a reason the first time this event meets it.
    fn first_time(&self, reason: impl std::fmt::Display) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        logged.len() < 1000 && logged.insert(reason.to_string())
    }

    /// Counts a push's final outcome and acts on it.
    async fn settle(
        &self,
        provider: Provider,
        device: &Device,
        outcome: PushOutcome,
        attempts: u32,
    ) {
        self.retries
            .fetch_add(u64::from(attempts.saturating_sub(1)), Ordering::Relaxed);
        self.progress.settled.fetch_add(1, Ordering::Relaxed);
        PushMetrics::get().outcome(provider, outcome.kind());
        match outcome {
            PushOutcome::Delivered => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            PushOutcome::Unregistered { reason, since } => {
                // APNs: a token registered again after Apple saw it invalid is alive.
                if let (Some(since), Some(updated)) = (since, device.updated_at)
                    && updated >= since
                {
                    if self.first_time("re-registered") {
                        warn!(event_id = %self.event_id, token = %MaskedToken(&device.token), %reason,
                            "The provider calls a token unregistered that was registered again since; keeping it.");
                    }
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                match &self.delivery.prune {
                    Some(prune) => {
                        let dead = Dead {
                            device_id: device.id,
                            token: device.token.clone(),
                            reason,
                        };
                        let _ = prune.send(dead).await;
                        self.pruned.fetch_add(1, Ordering::Relaxed);
                        PushMetrics::get().pruned(provider);
                    }
                    // Validate runs write nothing: "pruned" would promise a change that is not made.
                    None => {
                        self.failed.fetch_add(1, Ordering::Relaxed);
                        if self.first_time(&reason) {
                            warn!(event_id = %self.event_id, %reason,
                                "The provider reports a dead token; not pruned in this send mode (further ones are counted, not logged).");
                        }
                    }
                }
            }
            PushOutcome::Retryable { reason, .. } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if self.first_time(&reason) {
                    warn!(event_id = %self.event_id, provider = provider.as_str(), %reason, attempts,
                        "A push failed after its retries (further pushes failing for this reason are counted, not logged).");
                }
            }
            PushOutcome::Rejected { reason } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if self.first_time(&reason) {
                    warn!(event_id = %self.event_id, provider = provider.as_str(), %reason, token = %MaskedToken(&device.token),
                        "The provider rejected a push; the token is kept (further pushes failing for this reason are counted, not logged).");
                }
            }
            PushOutcome::CredentialsRejected {
                reason,
                setting,
                scope,
            } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let pause = Pause { provider, scope };
                if !self.flag(pause).swap(true, Ordering::Relaxed) {
                    error!(event_id = %self.event_id, paused = pause.label(), %reason, setting,
                        "The provider rejected our credentials; these pushes are paused for the rest of this event. Check {setting}.");
                }
            }
            PushOutcome::Skipped { .. } => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn report(&self) -> FanoutReport {
        let (sent, failed, pruned, skipped) = (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.pruned.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
        );
        FanoutReport {
            recipients: sent + failed + pruned + skipped,
            sent,
            failed,
            pruned,
            skipped,
            retries: self.retries.load(Ordering::Relaxed),
            paused: Provider::ALL
                .into_iter()
                .flat_map(|provider| PauseScope::ALL.map(|scope| Pause { provider, scope }))
                .filter(|p| self.flag(*p).load(Ordering::Relaxed))
                .map(Pause::label)
                .collect(),
            pages: self.pages.load(Ordering::Relaxed),
            queries: self.queries.load(Ordering::Relaxed),
            peak_buffered: self.peak_buffered.load(Ordering::Relaxed),
            interrupted: self.interrupted.load(Ordering::Relaxed),
        }
    }
}

/// Sends the event's notification to every device of the audience: `audiences` holds one reader
/// per provider.
pub async fn fan_out(
    audiences: Vec<(Provider, Audience)>,
    event_id: Arc<str>,
    content: Arc<Rendered>,
    delivery: Delivery,
    progress: Arc<Progress>,
    limits: &FanoutLimits,
    stop: &CancellationToken,
) -> Result<FanoutReport, FanoutError> {
    let state = Arc::new(EventState {
        event_id,
        content,
        delivery,
        sent: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        pruned: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        pages: AtomicU64::new(0),
        queries: AtomicU64::new(0),
        paused: PerProvider::default(),
        logged: Mutex::new(HashSet::new()),
        buffered: AtomicUsize::new(0),
        peak_buffered: AtomicUsize::new(0),
        interrupted: AtomicBool::new(false),
        progress,
    });
    let lanes: Vec<_> = audiences
        .into_iter()
        .map(|(provider, audience)| {
            let audience = audience.resume_after(state.progress.read_after(provider));
            tokio::spawn(run_lane(
                provider,
                audience,
                Arc::clone(&state),
                limits.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut failure = None;
    for lane in lanes {
        match lane.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(e) => error!(error = %e, "A fan-out lane failed."),
        }
    }
    let report = state.report();
    match failure {
        Some(source) => Err(FanoutError::Audience { source, report }),
        None => Ok(report),
    }
}

/// Sends one provider's devices: take a page, then permits first and a task per push.
async fn run_lane(
    provider: Provider,
    audience: Audience,
    state: Arc<EventState>,
    limits: FanoutLimits,
    stop: CancellationToken,
) -> Result<(), DatabaseError> {
    // Capacity 1: one page waits while another is sent, and the reader may hold a third.
    let (pages_tx, mut pages) = mpsc::channel(1);
    let reader = tokio::spawn(read_pages(
        audience,
        pages_tx,
        Arc::clone(&limits.audience_reads),
        limits.retry_pages_for,
        Arc::clone(&state),
    ));
    let pusher = state.delivery.pushers[provider].clone();
    let provider_permits = Arc::clone(&limits.provider_permits[provider]);
    let resume = state.progress.resume[provider].clone();
    let mut hold = state.progress.hold.subscribe();
    let mut tasks = JoinSet::new();
    let mut warmed = false;
    let mut failure = None;
    'pages: loop {
        let page = tokio::select! {
            biased;
            _ = stop.cancelled() => { state.interrupted.store(true, Ordering::Relaxed); break 'pages; }
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
        state.pages.fetch_add(1, Ordering::Relaxed);
        let mut devices = page.into_iter();
        while let Some(device) = devices.next() {
            state.buffered.fetch_sub(1, Ordering::Relaxed);
            if resume.finished(device.id) {
                state.progress.passed(provider, device.id);
                continue; // sent before the checkpoint this run resumes from
            }
            let Some(pusher) = pusher.clone().filter(|_| !device.token.is_empty()) else {
                let why = if device.token.is_empty() {
                    "empty token"
                } else {
                    "not configured"
                };
                state
                    .settle(provider, &device, skipped(provider, why), 0)
                    .await;
                state.progress.passed(provider, device.id);
                continue;
            };
            if state.is_paused(provider, &device) {
                state
                    .settle(provider, &device, skipped(provider, "paused"), 0)
                    .await;
                state.progress.passed(provider, device.id);
                continue;
            }
            if *hold.borrow() {
                // The claim cannot be renewed: sending on could race a replica that takes over.
                tokio::select! {
                    _ = stop.cancelled() => {
                        state.buffered.fetch_sub(devices.len(), Ordering::Relaxed);
                        state.interrupted.store(true, Ordering::Relaxed);
                        break 'pages;
                    }
                    _ = hold.wait_for(|held| !*held) => {}
                }
            }
            if !warmed {
                warmed = true;
                pusher.warm().await;
            }
            let permits = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    state.buffered.fetch_sub(devices.len(), Ordering::Relaxed);
                    state.interrupted.store(true, Ordering::Relaxed);
                    break 'pages;
                }
                permits = async {
                    let own = Arc::clone(&provider_permits).acquire_owned().await?;
                    let global = Arc::clone(&limits.permits).acquire_owned().await?;
                    Ok::<_, tokio::sync::AcquireError>((own, global))
                } => permits,
            };
            let Ok(permits) = permits else {
                break 'pages; // the semaphores are never closed
            };
            state.progress.handed_out(provider, device.id);
            let push = Push {
                event_id: Arc::clone(&state.event_id),
                notification: Arc::clone(state.content.for_locale(device.locale.as_deref())),
                device,
            };
            let task_state = Arc::clone(&state);
            tasks.spawn(async move {
                let state = task_state;
                let paused = || state.is_paused(provider, &push.device);
                let metrics = PushMetrics::get();
                // A guard, so an aborted or panicking push still leaves the gauge.
                let in_flight = metrics.in_flight_guard(provider);
                let started = std::time::Instant::now();
                let done = deliver(&*pusher, &push, &state.delivery.retry, &paused).await;
                metrics.duration(provider, started.elapsed().as_secs_f64());
                drop(in_flight);
                // The slots go back before the bookkeeping: a slow prune queue must not hold them.
                drop(permits);
                state
                    .settle(provider, &push.device, done.outcome, done.attempts)
                    .await;
                state.progress.finished(provider, push.device.id);
            });
            // Reap what has finished, so the set holds only live tasks.
            while let Some(done) = tasks.try_join_next() {
                task_ended(&state, done);
            }
        }
    }
    reader.abort();
    if !state.interrupted.load(Ordering::Relaxed) {
        // Everything is handed out; wait for the pushes, unless a stop comes first.
        tokio::select! {
            _ = async {
                while let Some(done) = tasks.join_next().await {
                    task_ended(&state, done);
                }
            } => {}
            // In-flight pushes get the drain below; any it abandons leave the event unfinished.
            _ = stop.cancelled() => {}
        }
    }
    // After a stop, in-flight pushes get the drain timeout; without one, nothing is left.
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while let Some(done) = tasks.join_next().await {
            task_ended(&state, done);
        }
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
        let mut abandoned = 0;
        while let Some(done) = tasks.join_next().await {
            // A task may have finished (and counted itself) just before the abort.
            if matches!(&done, Err(e) if e.is_cancelled()) {
                abandoned += 1;
            } else {
                task_ended(&state, done);
            }
        }
        warn!(event_id = %state.event_id, provider = provider.as_str(), abandoned,
            "Pushes still in flight at the drain deadline were abandoned.");
        state.failed.fetch_add(abandoned, Ordering::Relaxed);
        // Abandoned pushes stay holes in the checkpoint: the event must be resumed, not done.
        if abandoned > 0 {
            state.interrupted.store(true, Ordering::Relaxed);
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn skipped(provider: Provider, why: &str) -> PushOutcome {
    PushOutcome::Skipped {
        reason: format!("{} {why}", provider.as_str()),
    }
}

fn task_ended(state: &EventState, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        error!(event_id = %state.event_id, error = %e, "A push task panicked.");
        state.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hands a lane's pages to its channel, counting what is held.
struct LaneSink<'a> {
    pages: &'a mpsc::Sender<Result<Vec<Device>, DatabaseError>>,
    state: &'a EventState,
}

impl PageSink for LaneSink<'_> {
    async fn page(&mut self, page: Vec<Device>) -> bool {
        let n = page.len();
        self.state
            .progress
            .read
            .fetch_add(n as u64, Ordering::Relaxed);
        let now = self.state.buffered.fetch_add(n, Ordering::Relaxed) + n;
        self.state.peak_buffered.fetch_max(now, Ordering::Relaxed);
        self.pages.send(Ok(page)).await.is_ok()
    }
}

/// Streams the audience into `pages`. A read that fails is resumed after the last device handed
/// on, with backoff, until it has failed for `retry_for` without progress. The lane aborts this
/// task when it stops, which closes the read's connection.
async fn read_pages(
    mut audience: Audience,
    pages: mpsc::Sender<Result<Vec<Device>, DatabaseError>>,
    reads: Arc<Semaphore>,
    retry_for: Duration,
    state: Arc<EventState>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing_since = None;
    loop {
        let before = audience.after_id();
        let Ok(slot) = reads.acquire().await else {
            return; // never closed
        };
        state.queries.fetch_add(1, Ordering::Relaxed);
        let mut sink = LaneSink {
            pages: &pages,
            state: &state,
        };
        let result = audience.stream(&mut sink).await;
        drop(slot);
        let e = match result {
            Ok(ReadEnd::Exhausted) => {
                state.progress.lanes_read.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(ReadEnd::Stopped) => return,
            Err(e) => e,
        };
        // A read cut after it made progress (a killed connection, or MariaDB's net_write_timeout
        // ending the query of a lane held up by its provider) is not a failing database.
        if audience.after_id() > before {
            failing_since = None;
            backoff.reset();
        }
        let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= retry_for {
            let _ = pages.send(Err(e)).await;
            return;
        }
        let delay = backoff.next_delay();
        warn!(error = %e, after_id = audience.after_id(), retry_in_ms = delay.as_millis() as u64,
            "Reading the audience failed; resuming after the last device read.");
        tokio::time::sleep(delay).await;
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

//! The worker's side of `POST /push`: every replica serving the API reads the backlog
//! (`{work prefix}api:push`, in the send mode's group) and runs each entry (one Gaurun
//! notification) as a unit of work like any other: claimed (`push:{entry}`), fenced, kept by its
//! keeper, its tokens sent through the same fan-out and push engine as an event's devices (one
//! lane, the token's index its device id, so the checkpoint works as for an event), and finished
//! with its entry acknowledged and deleted in one fenced step.
//!
//! An entry is read only when one of [`ENTRIES_AT_ONCE`] slots is free, and claimed at once. Dead
//! tokens are not pruned (the caller owns them): the [`Observer`] here logs each one, masked, and
//! counts it in `notifier_api_dead_tokens_total`, as it counts `/stat/app`'s figures.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use super::Worker;
use crate::api::{Accepted, PushStats};
use crate::apps::AppId;
use crate::device::{Device, Platform, Provider};
use crate::fanout::{Content, DeadTokens, Fanout, FanoutReport, Observer, Source, fan_out};
use crate::push::{MaskedToken, PushOutcome};
use crate::telemetry::{API_DEAD_TOKENS, ErrorChain};
use crate::work::claims::{Claim, Finished};
use crate::work::fence::Shut;
use crate::work::stream::{Entry, StreamHandle, StreamReader};
use crate::work::{Counts, Held, retry_redis};

/// Entries (notifications) sent at once by one replica; their tokens share the push limits.
const ENTRIES_AT_ONCE: usize = 16;
/// How long one read waits for new entries.
const BLOCK: Duration = Duration::from_secs(2);

impl Worker {
    /// Sends backlog entries until `stop`; entries unfinished then are released for a takeover.
    pub(super) async fn run_pushes(
        self: Arc<Self>,
        mut reader: StreamReader,
        running: TaskTracker,
        stop: CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(ENTRIES_AT_ONCE));
        let mut tidied = tokio::time::Instant::now();
        loop {
            if tidied.elapsed() >= self.settings.claims.lease() {
                tidied = tokio::time::Instant::now();
                super::jobs::forget_departed(&reader).await;
            }
            // One slot first: nothing is read that could not start at once.
            let Some(first) = super::jobs::slot(&slots, &stop).await else {
                break;
            };
            let free = 1 + slots.available_permits();
            let read = tokio::select! {
                _ = stop.cancelled() => break,
                read = reader.next(BLOCK, free) => read,
            };
            let entries = match read {
                Ok(entries) => entries,
                Err(e) => {
                    warn!(error = %e, "The API's push backlog cannot be read; trying again.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut first = Some(first);
            for entry in entries {
                let slot = match first.take() {
                    Some(slot) => slot,
                    None => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => slot,
                        Err(_) => break, // read more than free: the rest come back pending
                    },
                };
                let (worker, stream, stop) =
                    (Arc::clone(&self), reader.handle().clone(), stop.clone());
                running.spawn(async move { worker.run_push(stream, entry, slot, &stop).await });
            }
        }
        reader.leave().await;
    }

    async fn run_push(
        &self,
        stream: StreamHandle,
        entry: Entry,
        _slot: OwnedSemaphorePermit,
        stop: &CancellationToken,
    ) {
        let accepted = match Accepted::from_entry(&entry) {
            Ok(accepted) => accepted,
            Err(reason) => {
                warn!(entry = %entry.id, %reason, "An API push entry cannot be read; it is dropped.");
                if let Err(e) = stream.finish(&entry.id).await {
                    warn!(entry = %entry.id, error = %e, "Could not drop the unreadable entry.");
                }
                return;
            }
        };
        if entry.taken_over {
            info!(entry = %entry.id, "An API push left by another replica is taken over.");
        }
        // Every line about the entry's tokens names the caller's `identifier`, as Gaurun's log
        // did, so a caller can find which of its requests a dead token came in.
        let span = info_span!("api_push", entry = %entry.id, identifier = %accepted.identifier());
        self.claim_and_push(stream, entry.id, accepted, stop)
            .instrument(span)
            .await;
    }

    async fn claim_and_push(
        &self,
        stream: StreamHandle,
        entry: String,
        accepted: Accepted,
        stop: &CancellationToken,
    ) {
        let key = self.claims.keys().push(&entry);
        let claimed = retry_redis(|| self.claims.claim(&key, "", "", None), stop).await;
        let at = (stream.key.clone(), stream.group.clone(), entry.clone());
        let (held, resume) = match claimed {
            Ok(Claim::Run { held, resume }) => (held, resume),
            Ok(Claim::Busy) => return,
            Ok(Claim::Done) => {
                if let Err(e) = stream.finish(&entry).await {
                    warn!(error = %e, "A sent API push cannot be acknowledged; it will be read again and skipped.");
                }
                return;
            }
            Ok(Claim::Cancel { held, counts }) => {
                return self
                    .end_push(&held, Finished::Cancelled, &counts, &at)
                    .await;
            }
            Err(e) => {
                warn!(error = %ErrorChain(&e), "Could not claim an API push; it comes back later.");
                return;
            }
        };
        let checkpoint = resume
            .as_ref()
            .filter(|r| !r.checkpoint.is_empty())
            .map(|r| super::intake::parse_checkpoint(&r.checkpoint));
        let touch = Some(stream.touch(&entry));
        let running =
            super::run::Running::start(self, held.clone(), String::new(), checkpoint, touch, stop);
        let report = self.push_tokens(&accepted, &entry, &running).await;
        let counts = super::run::with_reasons(report.totals(), &running.progress.counts());
        let checkpoint = running.checkpoint();
        match running.end().await {
            Some(Shut::Lost) => warn!("Another run holds this API push now; it sends the rest."),
            Some(Shut::Cancelled) => {
                self.end_push(&held, Finished::Cancelled, &counts, &at)
                    .await
            }
            None if report.interrupted => {
                let never = CancellationToken::new();
                let release = || self.claims.release(&held, false, &checkpoint, &counts);
                if let Err(e) = retry_redis(release, &never).await {
                    warn!(error = %ErrorChain(&e), "Could not release an unfinished API push; another replica resumes it when its lease runs out.");
                }
            }
            None => self.end_push(&held, Finished::Done, &counts, &at).await,
        }
    }

    /// Sends every token of one notification through the fan-out, one lane.
    async fn push_tokens(
        &self,
        accepted: &Accepted,
        entry: &str,
        running: &super::run::Running,
    ) -> FanoutReport {
        let provider = accepted.provider();
        // The app was configured when the request came in; a restart since may have dropped it.
        let app = self.apps.resolve(Some(accepted.app()));
        // A Gaurun notification's platform is its provider's own.
        let platform = match provider {
            Provider::Apns => Platform::Ios,
            Provider::Fcm => Platform::Android,
            Provider::WebPush => Platform::Web,
        };
        let devices = (accepted.tokens().iter().enumerate())
            .map(|(i, token)| Device::addressed(i as i64 + 1, app, provider, platform, token))
            .collect();
        let prebuilt = match accepted.prebuilt() {
            Ok(prebuilt) => prebuilt,
            Err(e) => {
                warn!(error = %e, "An API push cannot be built; it is dropped.");
                return FanoutReport::default();
            }
        };
        let stats = self.stats.clone().unwrap_or_default();
        let fanout = Fanout {
            event_id: Arc::from(format!("api:{entry}")),
            content: Content::Prebuilt(Arc::new(prebuilt)),
            delivery: self.delivery(self.settings.send_mode),
            dead: DeadTokens::Callers,
            observer: Some(Arc::new(Reports {
                stats,
                apps: self.apps.clone(),
            })),
            progress: Arc::clone(&running.progress),
            fence: Arc::clone(&running.fence),
        };
        let sources = vec![(provider, Source::Devices(devices))];
        match fan_out(fanout, sources, &self.limits, &running.run_stop).await {
            Ok(report) => report,
            Err(e) => match e {
                crate::fanout::FanoutError::Audience { report, .. } => *report,
            },
        }
    }

    async fn end_push(
        &self,
        held: &Held,
        state: Finished,
        counts: &Counts,
        at: &(String, String, String),
    ) {
        let never = CancellationToken::new();
        let entry = Some((at.0.as_str(), at.1.as_str(), at.2.as_str()));
        match retry_redis(|| self.claims.finish(held, state, counts, entry), &never).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                warn!("Another run holds this API push now; its end is that run's to record.")
            }
            Err(e) => {
                warn!(error = %ErrorChain(&e), "A sent API push cannot be acknowledged; it will be read again and skipped.")
            }
        }
    }
}

/// What the caller of `POST /push` is told of its tokens: `/stat/app`'s counts, and each dead
/// token logged (masked) and counted, since the caller owns its tokens.
struct Reports {
    stats: Arc<PushStats>,
    apps: crate::apps::AppNames,
}

impl Observer for Reports {
    fn settled(&self, app: AppId, provider: Provider, device: &Device, outcome: &PushOutcome) {
        self.stats
            .count(provider, matches!(outcome, PushOutcome::Delivered));
        let token = MaskedToken(&device.token);
        match outcome {
            PushOutcome::Delivered | PushOutcome::CredentialsRejected { .. } => {}
            PushOutcome::Unregistered { reason, .. } => {
                let app = self.apps.name(app).to_string();
                metrics::counter!(API_DEAD_TOKENS, "app" => app, "provider" => provider.as_str())
                    .increment(1);
                warn!(%token, %reason, "A token of POST /push is dead; it is the caller's to remove.");
            }
            PushOutcome::Rejected { reason } | PushOutcome::Retryable { reason, .. } => {
                warn!(%token, %reason, outcome = outcome.label(), "A push of POST /push failed.");
            }
            PushOutcome::Skipped { reason } => {
                warn!(%token, %reason, "A push of POST /push was skipped.");
            }
        }
    }
}

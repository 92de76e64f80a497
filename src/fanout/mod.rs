//! The fan-out of one event: one lane per provider, each streaming its own devices from the
//! audience (one query, cut into pages) and turning each into a push task through the device's
//! app's pusher, permits and pace.
//!
//! The apps share a provider's lane (and its one query and checkpoint, so a resume is exact for
//! every app), but nothing that holds a push: each app has its own pusher, connections, permits,
//! pace and pauses. A lane waits for the permits of the device at hand, so while one app's
//! provider has all its permits taken, the lane's next devices (of any app) wait behind it.
//!
//! A lane takes a permit from its provider's semaphore and then one from the global semaphore
//! *before* spawning, so live push tasks never exceed either limit however large the audience,
//! and a provider holds at most its own share of the global slots. The lanes share nothing that
//! can block, so a slow or failing provider never holds up the other. Finished tasks are reaped
//! as a lane goes and each lane holds at most three pages (plus the one being cut), so memory
//! stays flat: while they wait, the query waits too. One failing push never stops the others.
//!
//! Here: the entry point and its limits and report. [`lane`] hands out one provider's pushes,
//! [`pages`] reads its audience, [`tally`] counts outcomes and acts on them, [`checkpoint`] keeps
//! where the event stands for a resume.

mod checkpoint;
mod lane;
mod pages;
mod resize;
mod tally;

pub(crate) use checkpoint::{Checkpoint, LaneCheckpoint, Progress};
pub(crate) use resize::PushLimit;
pub(crate) use tally::skipped;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error};

use crate::apps::{AppId, AppNames, Apps};
use crate::audience::{Audience, PerProvider, Provider};
use crate::content::Rendered;
use crate::database::DatabaseError;
use crate::pacing::Pacer;
use crate::prune::Dead;
use crate::push::ProviderPushers;
use crate::push::metrics::PushMetrics;
use crate::push::retry::{Delivered, RetryPolicy, deliver};
use crate::push::{Push, Pusher};
use lane::Lane;
use tally::Tally;

/// Limits shared by every event.
#[derive(Debug, Clone)]
pub(crate) struct FanoutLimits {
    /// Pushes in flight at once across the process.
    pub permits: Arc<Semaphore>,
    /// The same semaphore's limit, changeable at run time.
    pub limit: Arc<PushLimit>,
    /// Pushes in flight at once per app and provider, each less than the global limit.
    pub provider_permits: Apps<PerProvider<Arc<Semaphore>>>,
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
pub(crate) struct Delivery {
    /// The apps the devices' [`crate::apps::AppId`]s index.
    pub apps: AppNames,
    /// The pusher for each app and provider; `None` where the provider is not configured.
    pub pushers: Apps<ProviderPushers>,
    pub retry: RetryPolicy,
    /// The deployment's rate for each app and provider (unpaced in dry runs).
    pub pacers: Apps<PerProvider<Pacer>>,
    /// Each app's push metrics (labelled with its name).
    pub metrics: Apps<Arc<PushMetrics>>,
    /// Where dead tokens go to be pruned; `None` in dry and validate runs.
    pub prune: Option<mpsc::Sender<Dead>>,
}

impl Delivery {
    /// One push through the engine: its app's pace and retries, timed and counted in flight in
    /// its app's metrics (a guard, so an aborted or panicking push still leaves the gauge).
    /// Events' lanes and the API's backlog both send this way.
    pub(crate) async fn send(
        &self,
        (app, provider): (AppId, Provider),
        pusher: &dyn Pusher,
        push: &Push,
        paused: &(dyn Fn() -> bool + Send + Sync),
    ) -> Delivered {
        let metrics = &self.metrics[app];
        let _in_flight = metrics.in_flight_guard(provider);
        let started = std::time::Instant::now();
        let pacer = &self.pacers[app][provider];
        let done = deliver(
            pusher,
            push,
            &self.retry,
            pacer,
            self.apps.name(app),
            paused,
        )
        .await;
        metrics.duration(provider, started.elapsed().as_secs_f64());
        done
    }
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
    /// What was paused because a provider rejected our credentials: `fcm`, `fcm:ios+web`, `apns`
    /// for the default app, `NAME/fcm` (and so on) for another.
    pub paused: Vec<String>,
    /// Audience pages read, all lanes together.
    pub pages: u64,
    /// Audience queries run, all lanes together: one per lane, plus one per read resumed after a
    /// failure.
    pub queries: u64,
    /// Most devices held in memory at once, read but not yet handed to a push task.
    pub peak_buffered: usize,
    /// The fan-out was stopped (shutdown) before the whole audience was reached.
    pub interrupted: bool,
    /// The event was cut into this many jobs for every replica instead of sent here (0: not).
    pub jobs: u32,
    /// Each app's outcomes, the default first; empty when only the default app is configured.
    pub apps: Vec<AppReport>,
    /// Devices skipped because their row names an app this process does not serve (counted in
    /// `skipped` too).
    pub unknown_app: u64,
}

/// One app's share of a [`FanoutReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppReport {
    /// `default` for the top-level `[fcm]` and `[apns]`.
    pub app: String,
    pub sent: u64,
    pub failed: u64,
    pub pruned: u64,
    pub skipped: u64,
}

impl AppReport {
    fn fields(&self) -> [(&'static str, u64); 4] {
        [
            ("sent", self.sent),
            ("failed", self.failed),
            ("pruned", self.pruned),
            ("skipped", self.skipped),
        ]
    }

    fn set(&mut self, field: &str, value: u64) {
        match field {
            "sent" => self.sent = value,
            "failed" => self.failed = value,
            "pruned" => self.pruned = value,
            "skipped" => self.skipped = value,
            _ => {}
        }
    }
}

impl FanoutReport {
    /// The counts a job adds to its event's totals (in Redis): the report's, and each app's as
    /// `app:NAME:sent` and so on.
    pub(crate) fn totals(&self) -> Vec<(String, u64)> {
        let mut totals: Vec<(String, u64)> = [
            ("recipients", self.recipients),
            ("sent", self.sent),
            ("failed", self.failed),
            ("pruned", self.pruned),
            ("skipped", self.skipped),
            ("retries", self.retries),
            ("unknown_app", self.unknown_app),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        for a in &self.apps {
            for (field, value) in a.fields() {
                totals.push((format!("app:{}:{field}", a.app), value));
            }
        }
        totals
    }

    /// A report from the totals of an event's jobs (see [`FanoutReport::totals`]).
    pub(crate) fn from_totals(totals: &std::collections::BTreeMap<String, u64>) -> Self {
        let count = |name: &str| totals.get(name).copied().unwrap_or(0);
        let mut apps: Vec<AppReport> = Vec::new();
        for (key, value) in totals {
            let Some((app, field)) = key.strip_prefix("app:").and_then(|k| k.rsplit_once(':'))
            else {
                continue;
            };
            if apps.last().is_none_or(|a| a.app != app) {
                apps.push(AppReport {
                    app: app.to_string(),
                    ..AppReport::default()
                });
            }
            if let Some(last) = apps.last_mut() {
                last.set(field, *value);
            }
        }
        // The default app first, then by name, as a single run reports them.
        apps.sort_by(|a, b| {
            let key = |r: &AppReport| (r.app != crate::apps::DEFAULT_APP, r.app.clone());
            key(a).cmp(&key(b))
        });
        Self {
            recipients: count("recipients"),
            sent: count("sent"),
            failed: count("failed"),
            pruned: count("pruned"),
            skipped: count("skipped"),
            retries: count("retries"),
            unknown_app: count("unknown_app"),
            apps,
            ..Self::default()
        }
    }

    /// The per-app detail of the summary line: `default sent=3 failed=0 pruned=0 skipped=0;
    /// lite sent=2 …`, then `unknown skipped=N` when devices named an app not served. `None`
    /// with only the default app and no unknown one.
    pub fn apps_detail(&self) -> Option<String> {
        if self.apps.is_empty() && self.unknown_app == 0 {
            return None;
        }
        let mut parts: Vec<String> = self
            .apps
            .iter()
            .map(|a| {
                format!(
                    "{} sent={} failed={} pruned={} skipped={}",
                    a.app, a.sent, a.failed, a.pruned, a.skipped
                )
            })
            .collect();
        if self.unknown_app > 0 {
            parts.push(format!("unknown skipped={}", self.unknown_app));
        }
        Some(parts.join("; "))
    }
}

impl FanoutReport {
    /// The counts an event's status shows, by name (`recipients`, `sent`, …).
    pub(crate) fn counts(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("recipients", self.recipients),
            ("sent", self.sent),
            ("failed", self.failed),
            ("pruned", self.pruned),
            ("skipped", self.skipped),
        ]
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

/// Sends the event's notification to every device of the audience: `audiences` holds one reader
/// per provider.
pub(crate) async fn fan_out(
    audiences: Vec<(Provider, Audience)>,
    event_id: Arc<str>,
    content: Arc<Rendered>,
    delivery: Delivery,
    progress: Arc<Progress>,
    limits: &FanoutLimits,
    stop: &CancellationToken,
) -> Result<FanoutReport, FanoutError> {
    let tally = Arc::new(Tally::new(event_id, content, delivery, progress));
    let lanes: Vec<_> = audiences
        .into_iter()
        .map(|(provider, audience)| {
            let audience = audience.resume_after(tally.progress.read_after(provider));
            tokio::spawn(
                Lane::run(
                    provider,
                    audience,
                    Arc::clone(&tally),
                    limits.clone(),
                    stop.clone(),
                )
                .in_current_span(),
            )
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
    let report = tally.report();
    match failure {
        Some(source) => Err(FanoutError::Audience { source, report }),
        None => Ok(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_apps_counts_survive_the_round_trip_through_a_split_events_totals() {
        let app = |app: &str, sent, skipped| AppReport {
            app: app.into(),
            sent,
            failed: 1,
            pruned: 0,
            skipped,
        };
        let report = FanoutReport {
            recipients: 12,
            sent: 9,
            failed: 2,
            skipped: 1,
            unknown_app: 1,
            apps: vec![app("default", 5, 0), app("lite-2", 4, 0), app("lite", 0, 0)],
            ..FanoutReport::default()
        };
        // Two jobs' counts added up, as the Redis script does.
        let mut totals = std::collections::BTreeMap::new();
        for _ in 0..2 {
            for (k, v) in report.totals() {
                *totals.entry(k).or_insert(0) += v;
            }
        }
        let back = FanoutReport::from_totals(&totals);
        assert_eq!((back.recipients, back.sent, back.unknown_app), (24, 18, 2));
        let apps: Vec<_> = back
            .apps
            .iter()
            .map(|a| (a.app.as_str(), a.sent, a.failed))
            .collect();
        assert_eq!(apps, [("default", 10, 2), ("lite", 0, 2), ("lite-2", 8, 2)]);
        assert_eq!(
            back.apps_detail().unwrap(),
            "default sent=10 failed=2 pruned=0 skipped=0; lite sent=0 failed=2 pruned=0 skipped=0; \
             lite-2 sent=8 failed=2 pruned=0 skipped=0; unknown skipped=2"
        );
        assert_eq!(
            FanoutReport::default().apps_detail(),
            None,
            "one app: no field"
        );
    }
}

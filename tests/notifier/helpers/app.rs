//! Workers as the tests drive them: one that only handles the events it is given, and one
//! started by `Application::build`, exactly as `notifier run` starts it.

use std::sync::Arc;
use std::time::Duration;

use notifier::app::{Application, Overrides};
use notifier::config::{InputMode, Settings};
use notifier::database::Database;
use notifier::push::Pushers;
use notifier::worker::{EventOutcome, Worker};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{RecordingPusher, TestDb, dry_run_pushers, unique, wait_for_subscriber_with};

/// A worker (not subscribed) whose dry-run pushes go to the returned recorder.
pub fn recording_worker(
    settings: Settings,
    test_db: &TestDb,
    recorder: &Arc<RecordingPusher>,
) -> Worker {
    Worker::new(settings, test_db.db.clone(), dry_run_pushers(recorder)).expect("worker settings")
}

/// A worker running in the background, as `notifier run` runs it.
pub struct RunningWorker {
    pub worker: Arc<Worker>,
    pub outcomes: broadcast::Receiver<EventOutcome>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    /// Starts a worker as `notifier run` does, claims and status listener included (under a key
    /// prefix of its own, unless the settings already name one shared with other workers).
    pub async fn start(mut settings: Settings, db: Database, pushers: Pushers) -> Self {
        if settings.claims.key_prefix == "notifier:" {
            settings.claims.key_prefix = format!("{}:", unique("claims"));
        }
        // Tests run side by side: each worker's status listener on a port of its own.
        settings.service.http_addr = "127.0.0.1:0".parse().expect("an address");
        let redis = settings.redis.url.clone();
        let overrides = Overrides {
            database: Some(db),
            pushers: Some(pushers),
            ..Overrides::default()
        };
        let app = Application::build(settings, overrides)
            .await
            .unwrap_or_else(|e| panic!("the worker starts (Redis at {redis}): {e:#}"));
        let worker = Arc::clone(app.worker());
        let outcomes = worker.outcomes();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(stop.clone()));
        let running = Self {
            worker,
            outcomes,
            stop,
            handle,
        };
        let s = running.worker.settings();
        match s.input.mode {
            InputMode::Pubsub => {
                let client = notifier::redis_client::open(&s.redis).expect("Redis settings");
                wait_for_subscriber_with(&client, &s.service.channel).await;
            }
            InputMode::Stream => running.wait_until_reading().await,
        }
        running
    }

    async fn wait_until_reading(&self) {
        for _ in 0..300 {
            match self.worker.not_ready().await {
                None => return,
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let why = self.worker.not_ready().await.unwrap_or_default();
        panic!("the worker is not reading its stream within 15 s: {why}");
    }

    /// The next event outcome, or a panic if none comes in time.
    pub async fn next_outcome(&mut self) -> EventOutcome {
        tokio::time::timeout(Duration::from_secs(30), self.outcomes.recv())
            .await
            .expect("an event outcome within 30 s")
            .expect("the outcome channel is open")
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the worker stops within 30 s")
            .expect("the worker task does not panic")
            .expect("the worker stops without error");
    }
}

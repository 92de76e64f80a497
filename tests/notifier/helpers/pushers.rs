//! A pusher that records every push (or only counts them), optionally slow, measuring how many
//! run at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notifier::{Push, PushOutcome, Pusher, Pushers};

/// What a recording pusher saw of one push.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub event_id: String,
    pub device_id: i64,
    pub provider: String,
    /// The device's app, as the audience resolved it.
    pub app: Option<notifier::AppId>,
    pub token: String,
    /// When the device's token was last registered, as the audience read it.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub title: String,
    pub body: String,
    pub data: Vec<(String, String)>,
    pub started_at: std::time::Instant,
}

/// A pusher that records every push, optionally takes its time, and measures concurrency.
#[derive(Default)]
pub struct RecordingPusher {
    pub pushes: Mutex<Vec<Recorded>>,
    pub delay: Duration,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// In flight per provider (in `Provider::ALL` order), and the most seen at once.
    by_provider: [AtomicUsize; notifier::Provider::ALL.len()],
    pub max_by_provider: [AtomicUsize; notifier::Provider::ALL.len()],
    /// Counts instead of recording, for audiences too large to keep.
    pub count_only: bool,
    pub count: AtomicUsize,
}

impl RecordingPusher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn counting() -> Arc<Self> {
        Arc::new(Self {
            count_only: true,
            ..Self::default()
        })
    }

    pub fn slow(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Self::default()
        })
    }

    pub fn taken(&self) -> Vec<Recorded> {
        let mut v = self.pushes.lock().unwrap().clone();
        v.sort_by_key(|r| (r.event_id.clone(), r.device_id));
        v
    }

    pub fn device_ids(&self) -> Vec<i64> {
        self.taken().iter().map(|r| r.device_id).collect()
    }
}

#[async_trait::async_trait]
impl Pusher for RecordingPusher {
    async fn push(&self, push: &Push) -> PushOutcome {
        let started_at = std::time::Instant::now();
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let lane = notifier::Provider::ALL
            .iter()
            .position(|p| push.device.provider == Some(*p))
            .unwrap_or(0);
        let mine = self.by_provider[lane].fetch_add(1, Ordering::SeqCst) + 1;
        self.max_by_provider[lane].fetch_max(mine, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.count_only {
            self.count.fetch_add(1, Ordering::Relaxed);
        } else {
            let talk = push.content.talk();
            self.pushes.lock().unwrap().push(Recorded {
                event_id: push.event_id.to_string(),
                device_id: push.device.id,
                provider: push
                    .device
                    .provider
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
                app: push.device.app,
                token: push.device.token.clone(),
                updated_at: push.device.updated_at,
                title: talk.map(|n| n.title.clone()).unwrap_or_default(),
                body: talk.map(|n| n.body.clone()).unwrap_or_default(),
                data: talk.map(|n| n.data.clone()).unwrap_or_default(),
                started_at,
            });
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.by_provider[lane].fetch_sub(1, Ordering::SeqCst);
        PushOutcome::Delivered
    }
}

pub fn dry_run_pushers(recorder: &Arc<RecordingPusher>) -> Pushers {
    Pushers::dry_run(Arc::clone(recorder) as Arc<dyn Pusher>)
}

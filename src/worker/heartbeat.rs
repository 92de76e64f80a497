//! Each replica's heartbeat, for the console (contract §13): every two seconds it writes what it
//! is and does beside the deployment's work (`keys::replicas`): its mode and version, the pushes
//! it has in flight against its limit, the units it runs, and each provider's pace as it knows
//! it (the rate now, and the `QUOTA_EXCEEDED` answers it met). A replica whose heartbeat is older
//! than [`STALE`] is gone; the script that writes one heartbeat removes those. A replica stopping
//! removes its own.
//!
//! Nothing here decides anything: the heartbeat is for people watching, and its fields may change.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::Worker;
use crate::pacing::PaceNow;

/// How often a replica writes its heartbeat.
const EVERY: Duration = Duration::from_secs(2);
/// A heartbeat older than this is a replica gone.
pub(crate) const STALE: Duration = Duration::from_secs(10);

/// `beat(hash, seen; name, json, stale_ms)`: this replica's heartbeat, by Redis's clock, and the
/// heartbeats gone stale removed.
static BEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
for _, name in ipairs(gone) do
  redis.call('HDEL', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
end
return #gone
"#,
    )
});

/// One replica's heartbeat.
#[derive(Debug, Serialize)]
struct Heartbeat<'a> {
    name: &'a str,
    mode: &'static str,
    version: &'static str,
    started_at: String,
    /// Pushes in flight now, and the process's limit.
    in_flight: usize,
    concurrency: usize,
    /// Events, jobs and `POST /push` notifications running now.
    units: usize,
    pace: Vec<Pace<'a>>,
}

#[derive(Debug, Serialize)]
struct Pace<'a> {
    app: &'a str,
    provider: &'static str,
    #[serde(flatten)]
    now: PaceNow,
}

impl Worker {
    /// Writes this replica's heartbeat until `stop`, then removes it.
    pub(super) async fn beat(self: Arc<Self>, running: TaskTracker, stop: CancellationToken) {
        let Some(mut redis) = self.claims.connection() else {
            return;
        };
        let (hash, seen) = self.claims.keys().replicas();
        let name = self.claims.owner().to_string();
        let started_at = chrono::Utc::now().to_rfc3339();
        loop {
            let limit = &self.limits.push.limit;
            let beat = Heartbeat {
                name: &name,
                mode: self.settings.send_mode.as_str(),
                version: env!("CARGO_PKG_VERSION"),
                started_at: started_at.clone(),
                in_flight: limit.in_flight(),
                concurrency: limit.max(),
                units: running.len(),
                pace: self.paces(),
            };
            let json = serde_json::to_string(&beat).unwrap_or_default();
            let written: redis::RedisResult<i64> = BEAT
                .key(&hash)
                .key(&seen)
                .arg(&name)
                .arg(json)
                .arg(STALE.as_millis() as u64)
                .invoke_async(&mut redis)
                .await;
            if let Err(e) = written {
                warn!(error = %e, "Could not write this replica's heartbeat.");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
        let _: redis::RedisResult<()> = redis::pipe()
            .hdel(&hash, &name)
            .zrem(&seen, &name)
            .query_async(&mut redis)
            .await;
    }

    /// Each app's paced providers, as this replica knows them.
    fn paces(&self) -> Vec<Pace<'_>> {
        let mut paces = Vec::new();
        for (app, providers) in self.pacers.iter() {
            for (provider, pacer) in providers.iter() {
                if let Some(now) = pacer.now() {
                    let app = self.apps.name(app);
                    paces.push(Pace {
                        app,
                        provider: provider.as_str(),
                        now,
                    });
                }
            }
        }
        paces
    }
}

//! The progress line a long fan-out logs every few seconds: pushes settled, devices read, the
//! total once the audience is read, the rate, and the expected finish.
//!
//! It reads the fan-out's counters and writes nothing; the period and the fields may change
//! freely (they are for people watching, not for the contract).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::fanout::Progress;

/// Logs `Fan-out progress.` every five seconds until `stop`; the event's span names the event.
pub(super) async fn report_progress(progress: Arc<Progress>, stop: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(5);
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let settled = progress.settled();
        let read = progress.read();
        let all_read = progress.all_read();
        let rate = settled as f64 / started.elapsed().as_secs_f64().max(0.001);
        let eta_secs = (all_read && rate > 0.0)
            .then(|| ((read.saturating_sub(settled)) as f64 / rate).round() as u64);
        info!(
            done = settled,
            read,
            total = all_read.then_some(read),
            rate_per_sec = rate.round() as u64,
            eta_secs,
            "Fan-out progress."
        );
    }
}

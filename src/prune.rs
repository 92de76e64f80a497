//! Pruning: devices whose token a provider declared dead are disabled (`disabled_at`,
//! `disabled_reason`) in batches through the configured prune statement — one statement per
//! batch and reason, never one per token.
//!
//! Pushes report dead tokens over a channel; a task per event batches them and flushes when a
//! batch is full, every second, and when the event ends. Dry runs and validate runs start none.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::database::{Database, Param, PreparedQuery};

/// Devices per prune statement.
pub const BATCH: usize = 500;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A dead token to disable: the device and why (`fcm:UNREGISTERED`).
pub type Dead = (i64, String);

pub struct Pruner {
    tx: mpsc::Sender<Dead>,
    task: JoinHandle<u64>,
}

impl Pruner {
    pub fn start(db: Database, statement: PreparedQuery) -> Self {
        let (tx, rx) = mpsc::channel(BATCH * 2);
        let task = tokio::spawn(run(rx, db, statement));
        Self { tx, task }
    }

    /// Where pushes report dead tokens.
    pub fn sender(&self) -> mpsc::Sender<Dead> {
        self.tx.clone()
    }

    /// Flushes what is left; returns how many devices were disabled.
    pub async fn finish(self) -> u64 {
        drop(self.tx);
        self.task.await.unwrap_or_else(|e| {
            error!(error = %e, "The prune task failed.");
            0
        })
    }
}

async fn run(mut rx: mpsc::Receiver<Dead>, db: Database, statement: PreparedQuery) -> u64 {
    let mut pending: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut disabled = 0;
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            dead = rx.recv() => match dead {
                Some((device_id, reason)) => {
                    let ids = pending.entry(reason.clone()).or_default();
                    ids.push(device_id);
                    if ids.len() >= BATCH {
                        let ids = std::mem::take(ids);
                        disabled += flush(&db, &statement, &reason, ids).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                for (reason, ids) in std::mem::take(&mut pending) {
                    disabled += flush(&db, &statement, &reason, ids).await;
                }
            }
        }
    }
    for (reason, ids) in pending {
        disabled += flush(&db, &statement, &reason, ids).await;
    }
    disabled
}

/// Runs one batch, retrying a failing database a few times; a batch that still fails is only
/// logged: those devices stay enabled and are pruned when the next event finds them dead.
async fn flush(db: &Database, statement: &PreparedQuery, reason: &str, ids: Vec<i64>) -> u64 {
    if ids.is_empty() {
        return 0;
    }
    let count = ids.len();
    let values = [
        ("device_ids", Param::Ints(ids)),
        ("reason", Param::Text(Some(reason.to_string()))),
    ];
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=4 {
        match db.execute(statement, &values).await {
            Ok(rows) => return rows,
            Err(e) if attempt < 4 => {
                warn!(error = %e, attempt, "Pruning a batch failed; retrying.");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                error!(error = %e, devices = count, reason, "Pruning a batch failed; those devices stay enabled.");
            }
        }
    }
    0
}

//! Pruning: devices whose token a provider declared dead are disabled (`disabled_at`,
//! `disabled_reason`) in batches through the configured prune statement — one statement per
//! batch and reason, never one per token. A row is matched on its id *and* its token, so a device
//! whose app registered a new token meanwhile keeps it.
//!
//! Pushes report dead tokens over a channel; a task per event batches them and flushes when a
//! batch is full, every second, and when the event ends. Flushes run beside the receiving loop,
//! so a slow database delays the pruning, not the pushes, until [`READY_MAX`] full batches wait:
//! then the task stops receiving, the channel fills, and the pushes reporting dead tokens wait
//! for the database (memory stays bounded however slow it is). Those count as unsaved meanwhile,
//! so a run under a lease holds new pushes once two checkpoints' worth wait (`work::fence`). Dry
//! and validate runs start none.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, error, warn};

use crate::backoff::{Backoff, retry};
use crate::database::{Database, Param, PreparedQuery};
use crate::push::Reason;

/// Devices per prune statement.
pub(crate) const BATCH: usize = 500;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Statements running at once; more batches wait in memory (ids and tokens only).
const FLUSHES_AT_ONCE: usize = 2;
/// Tries of one batch before its devices are left enabled for the next event to find.
const FLUSH_ATTEMPTS: u32 = 4;
/// Full batches waiting for a flush before receiving stops (20 × 500 ids and tokens).
const READY_MAX: usize = 20;

/// A dead token to disable.
#[derive(Clone)]
pub(crate) struct Dead {
    pub device_id: i64,
    pub token: String,
    /// Why, stored in `disabled_reason` as it prints (`fcm:UNREGISTERED`).
    pub reason: Reason,
}

/// The token masked: a `Debug` print may reach a log.
impl std::fmt::Debug for Dead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dead")
            .field("device_id", &self.device_id)
            .field("token", &crate::push::MaskedToken(&self.token).to_string())
            .field("reason", &self.reason)
            .finish()
    }
}

pub(crate) struct Pruner {
    tx: mpsc::Sender<Dead>,
    task: JoinHandle<u64>,
}

impl Pruner {
    pub(crate) fn start(db: Database, statement: PreparedQuery) -> Self {
        let (tx, rx) = mpsc::channel(BATCH * 2);
        let task = tokio::spawn(run(rx, db, statement).in_current_span());
        Self { tx, task }
    }

    /// Where pushes report dead tokens.
    pub(crate) fn sender(&self) -> mpsc::Sender<Dead> {
        self.tx.clone()
    }

    /// Flushes what is left; returns how many devices were disabled.
    pub(crate) async fn finish(self) -> u64 {
        drop(self.tx);
        self.task.await.unwrap_or_else(|e| {
            error!(error = %e, "The prune task failed.");
            0
        })
    }
}

type Batch = (Reason, Vec<i64>, Vec<String>);

async fn run(mut rx: mpsc::Receiver<Dead>, db: Database, statement: PreparedQuery) -> u64 {
    let mut pending: BTreeMap<Reason, (Vec<i64>, Vec<String>)> = BTreeMap::new();
    let mut ready: Vec<Batch> = Vec::new();
    let mut flushing = JoinSet::new();
    let mut disabled = 0;
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut open = true;
    while open || !ready.is_empty() || !pending.is_empty() || !flushing.is_empty() {
        while flushing.len() < FLUSHES_AT_ONCE
            && let Some((reason, ids, tokens)) = ready.pop()
        {
            let (db, statement) = (db.clone(), statement.clone());
            flushing.spawn(
                async move { flush(&db, &statement, &reason, ids, tokens).await }.in_current_span(),
            );
        }
        tokio::select! {
            dead = rx.recv(), if open && ready.len() < READY_MAX => match dead {
                Some(dead) => {
                    let batch = pending.entry(dead.reason.clone()).or_default();
                    batch.0.push(dead.device_id);
                    batch.1.push(dead.token);
                    if batch.0.len() >= BATCH {
                        let (ids, tokens) = std::mem::take(batch);
                        ready.push((dead.reason, ids, tokens));
                    }
                }
                None => {
                    open = false;
                    ready.extend(std::mem::take(&mut pending).into_iter().map(|(r, (i, t))| (r, i, t)));
                }
            },
            _ = tick.tick(), if open => {
                ready.extend(std::mem::take(&mut pending).into_iter().map(|(r, (i, t))| (r, i, t)));
            }
            Some(done) = flushing.join_next(), if !flushing.is_empty() => {
                disabled += done.unwrap_or(0);
            }
            else => {}
        }
        pending.retain(|_, (ids, _)| !ids.is_empty());
    }
    disabled
}

/// Runs one batch, retrying a failing database a few times; a batch that still fails is only
/// logged: those devices stay enabled and are pruned when the next event finds them dead.
async fn flush(
    db: &Database,
    statement: &PreparedQuery,
    reason: &Reason,
    ids: Vec<i64>,
    tokens: Vec<String>,
) -> u64 {
    let count = ids.len();
    let values = [
        ("device_ids", Param::Ints(ids)),
        ("tokens", Param::Texts(tokens)),
        ("reason", Param::Text(Some(reason.to_string()))),
    ];
    // Jittered, so the flushes of events that failed together do not retry in step.
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_millis(800));
    let done = retry(
        backoff,
        || db.execute(statement, &values),
        |e, attempt, _| {
            let again = attempt < FLUSH_ATTEMPTS;
            if again {
                warn!(error = %e, attempt, "Pruning a batch failed; retrying.");
            }
            again
        },
    )
    .await;
    done.unwrap_or_else(|e| {
        error!(error = %e, devices = count, %reason, "Pruning a batch failed; those devices stay enabled.");
        0
    })
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::database::Queries;
    use crate::device::Provider;

    /// Sends dead tokens until one waits longer than a second: how many were taken.
    async fn taken_before_a_send_waits(tx: &mpsc::Sender<Dead>, at_most: i64) -> i64 {
        let reason = Reason::new(Provider::Fcm, "UNREGISTERED");
        for n in 0..at_most {
            let dead = Dead {
                device_id: n,
                token: format!("dead-{n}"),
                reason: reason.clone(),
            };
            let sent = tokio::time::timeout(Duration::from_secs(1), tx.send(dead)).await;
            if sent.is_err() {
                return n;
            }
        }
        at_most
    }

    #[tokio::test]
    async fn a_stalled_database_stops_the_receiving_once_its_batches_wait() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/prune.db", dir.path().display());
        let settings = crate::config::load_with(&[("DATABASE_URL", url.as_str())]).unwrap();
        let db = Database::connect(&settings.database).await.unwrap();
        db.migrate().await.unwrap();
        let queries = Queries::prepare(&settings.queries, db.backend()).unwrap();
        // Another connection holds the database: every prune statement waits for its lock.
        let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut holder)
            .await
            .unwrap();
        let pruner = Pruner::start(db, queries.prune.clone());
        let taken = taken_before_a_send_waits(&pruner.sender(), 200_000).await;
        // Waiting: READY_MAX batches, those being flushed, one filling, and the channel's.
        let bound = (READY_MAX + FLUSHES_AT_ONCE + 1) * BATCH + 2 * BATCH;
        assert!(
            taken as usize > READY_MAX * BATCH && taken as usize <= bound,
            "{taken} dead tokens taken while the database is stalled (bound {bound})"
        );
    }
}

//! The deployment's job stream, `{prefix}jobs`, read by the consumer group `notifier` (one group:
//! every replica is a consumer of it). The pitfalls of Redis Streams handled here:
//!
//! - a replica that dies leaves its entries pending: they are taken over with `XAUTOCLAIM` once
//!   idle longer than the claim lease, looping on its cursor (one call scans at most ten times
//!   its COUNT and may return fewer entries than there are);
//! - a running job keeps its entry fresh ([`JobQueue::touch`]) so that it is not taken over
//!   while its owner lives; one taken over anyway finds its job claim busy and is left pending;
//! - entries are removed only once acknowledged (`XACK` then `XDEL` in one script: with one
//!   group, an acknowledged entry is pending nowhere), never by `MAXLEN`, which would leave
//!   dangling references in the pending list;
//! - a lost group (`NOGROUP`: Redis restarted empty, or someone deleted it) is made again from
//!   the start of the stream, not `$`, so that jobs still in it are read.
//!
//! Blocking reads run on a connection of their own, with a response timeout longer than the block.
//!
//! The HTTP API's push backlog is a stream of the same kind: it reads its raw entries through
//! [`JobQueue::on_stream`] and [`JobQueue::next_entries`].

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Script};
use tracing::warn;

use super::{Job, JobError};

const GROUP: &str = "notifier";
/// Entries one `XAUTOCLAIM` call asks for.
const CLAIM_COUNT: usize = 100;

/// `done(stream; group, entry)`: acknowledges the entry, then deletes it.
static DONE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return acked
"#,
    )
});

/// A job as read from the stream.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    /// The stream entry, to finish or touch.
    pub entry: String,
    /// `None` for an entry that is not a job (finish it and move on).
    pub job: Option<Job>,
    /// Taken over from a consumer that held it too long.
    pub taken_over: bool,
}

/// A clone shares the short-command connection and makes its own reading one when it reads.
pub(crate) struct JobQueue {
    client: redis::Client,
    /// Short commands: adding, finishing, touching.
    redis: ConnectionManager,
    /// Blocking reads, made when first needed.
    reader: Option<MultiplexedConnection>,
    key: String,
    consumer: String,
    /// Entries idle longer than this are taken from whoever holds them.
    claim_idle: Duration,
    /// When abandoned entries were last looked for.
    last_claim: Option<Instant>,
}

impl Clone for JobQueue {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            redis: self.redis.clone(),
            reader: None,
            key: self.key.clone(),
            consumer: self.consumer.clone(),
            claim_idle: self.claim_idle,
            last_claim: None,
        }
    }
}

impl JobQueue {
    /// The job stream of the deployment whose claims live under `prefix`; `consumer` names
    /// this replica (unique among them).
    pub(crate) async fn connect(
        client: redis::Client,
        prefix: &str,
        consumer: &str,
        claim_idle: Duration,
    ) -> Result<Self, JobError> {
        Self::on_stream(client, format!("{prefix}jobs"), consumer, claim_idle).await
    }

    /// The same consumer group on another stream, whose entries are not jobs.
    pub(crate) async fn on_stream(
        client: redis::Client,
        key: String,
        consumer: &str,
        claim_idle: Duration,
    ) -> Result<Self, JobError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let redis = client.get_connection_manager_with_config(config).await?;
        let queue = Self {
            client,
            redis,
            reader: None,
            key,
            consumer: consumer.to_string(),
            claim_idle,
            last_claim: None,
        };
        queue.create_group().await?;
        Ok(queue)
    }

    /// From the start of the stream: jobs added before the group existed count too.
    async fn create_group(&self) -> Result<(), JobError> {
        let created: redis::RedisResult<()> = self
            .redis
            .clone()
            .xgroup_create_mkstream(&self.key, GROUP, "0")
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Puts a job on the stream for any replica to take.
    pub(crate) async fn add(&self, job: &Job) -> Result<String, JobError> {
        let id: String = self
            .redis
            .clone()
            .xadd(&self.key, "*", &job.fields())
            .await?;
        Ok(id)
    }

    /// The next jobs for this replica: abandoned ones first (looked for every half claim
    /// lease, and again at once while some are found), else new ones, waiting up to `block` for some. Empty when none came.
    pub(crate) async fn next(
        &mut self,
        block: Duration,
        count: usize,
    ) -> Result<Vec<Delivered>, JobError> {
        let entries = self.next_entries(block, count).await?;
        Ok(entries
            .into_iter()
            .map(|(entry, taken_over)| delivered(entry, taken_over))
            .collect())
    }

    /// [`JobQueue::next`]'s entries as they are, each with whether it was taken over.
    pub(crate) async fn next_entries(
        &mut self,
        block: Duration,
        count: usize,
    ) -> Result<Vec<(StreamId, bool)>, JobError> {
        let due = self
            .last_claim
            .is_none_or(|at| at.elapsed() >= self.claim_idle / 2);
        if due {
            let abandoned = self.take_over(count).await?;
            if !abandoned.is_empty() {
                // More may be waiting: look again at the next call.
                return Ok(abandoned);
            }
            self.last_claim = Some(Instant::now());
        }
        match self.read_new(block, count).await {
            Err(JobError::Redis(e)) if e.code() == Some("NOGROUP") => {
                warn!(stream = %self.key, "The job stream's consumer group was gone; made again from the start of the stream.");
                self.create_group().await?;
                Ok(Vec::new())
            }
            read => read,
        }
    }

    async fn read_new(
        &mut self,
        block: Duration,
        count: usize,
    ) -> Result<Vec<(StreamId, bool)>, JobError> {
        let options = StreamReadOptions::default()
            .group(GROUP, &self.consumer)
            .block(block.as_millis() as usize)
            .count(count);
        let key = self.key.clone();
        let reader = self.reader(block).await?;
        let reply: Option<StreamReadReply> =
            match reader.xread_options(&[&key], &[">"], &options).await {
                Ok(reply) => reply,
                Err(e) => {
                    // Made again at the next read: a broken connection never heals by itself.
                    self.reader = None;
                    return Err(e.into());
                }
            };
        let entries = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
        Ok(entries.map(|e| (e, false)).collect())
    }

    async fn reader(&mut self, block: Duration) -> Result<&mut MultiplexedConnection, JobError> {
        let conn = match self.reader.take() {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(block + Duration::from_secs(5)));
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?
            }
        };
        Ok(self.reader.insert(conn))
    }

    /// Entries idle longer than the claim lease, taken over by this replica: `XAUTOCLAIM`
    /// from the start of the pending list, following its cursor until it comes back to `0-0`
    /// or `count` entries are in hand.
    async fn take_over(&mut self, count: usize) -> Result<Vec<(StreamId, bool)>, JobError> {
        let mut claimed = Vec::new();
        let mut cursor = "0-0".to_string();
        loop {
            let reply: StreamAutoClaimReply = self
                .redis
                .clone()
                .xautoclaim_options(
                    &self.key,
                    GROUP,
                    &self.consumer,
                    self.claim_idle.as_millis() as u64,
                    &cursor,
                    StreamAutoClaimOptions::default().count(CLAIM_COUNT.min(count.max(1))),
                )
                .await?;
            // Entries deleted while pending were dropped from the list by the call itself.
            claimed.extend(reply.claimed.into_iter().map(|e| (e, true)));
            if reply.next_stream_id == "0-0" || claimed.len() >= count {
                return Ok(claimed);
            }
            cursor = reply.next_stream_id;
        }
    }

    /// Marks the entry's job finished: acknowledged, then removed from the stream.
    pub(crate) async fn finish(&self, entry: &str) -> Result<(), JobError> {
        let _: i64 = DONE_SCRIPT
            .key(&self.key)
            .arg(GROUP)
            .arg(entry)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Resets the entry's idle time (and keeps it with this replica) while its job runs, so
    /// that no other replica takes it over; `XCLAIM … JUSTID` leaves the delivery count alone.
    pub(crate) async fn touch(&self, entry: &str) -> Result<(), JobError> {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&self.key)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(0)
            .arg(entry)
            .arg("JUSTID")
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Entries in the stream: jobs pending or not yet read.
    #[cfg(test)]
    pub(crate) async fn backlog(&self) -> Result<u64, JobError> {
        Ok(self.redis.clone().xlen(&self.key).await?)
    }
}

fn delivered(entry: StreamId, taken_over: bool) -> Delivered {
    Delivered {
        job: Job::from_fields(&entry.map),
        entry: entry.id,
        taken_over,
    }
}

#[cfg(test)]
mod tests;

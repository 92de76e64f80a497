//! The one Redis Stream consumer: the event stream (`NOTIFIER_INPUT=stream`), the API's event
//! stream, the job stream and the `POST /push` backlog are all read through [`StreamReader`], in
//! the send mode's consumer group (`Settings::work_group`). The pitfalls of Redis Streams handled
//! here, once:
//!
//! - a replica that dies leaves its entries pending: they are taken over with `XAUTOCLAIM` once
//!   idle longer than the claim lease, looping on its cursor (one call scans at most ten times its
//!   COUNT and may return fewer entries than there are);
//! - a running unit keeps its entry fresh ([`Touch`]) so that it is not taken over while its owner
//!   lives; one taken over anyway finds its claim busy and is left pending;
//! - a lost group (`NOGROUP`: Redis restarted empty, or someone deleted it) is made again from the
//!   start of the stream, not `$`, so that entries still in it are read;
//! - blocking reads run on a connection of their own, with a response timeout longer than the
//!   block (a blocking read would hold up every other command on a shared one);
//! - a replica leaving removes its consumer from the group once nothing is pending with it, and
//!   consumers that left without doing so (killed) are removed once idle for a day with nothing
//!   pending: entries pending with a consumer would be lost with it, so those are never removed.
//!
//! Entries of the job stream and the backlog are deleted when their unit finishes (by the claim
//! scripts, fenced); the API's event stream, read by one group per send mode, is trimmed up to
//! the oldest entry some group still needs ([`StreamReader::trim_acknowledged`]).

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig};
use tokio::time::Instant;
use tracing::warn;

/// Entries one `XAUTOCLAIM` call asks for.
const CLAIM_COUNT: usize = 100;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// Not a `source`: the message already tells the cause (`Explained`).
    #[error("{}", crate::redis_client::Explained(.0))]
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for StreamError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

/// One entry as read.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub id: String,
    pub fields: HashMap<String, redis::Value>,
    /// Taken over from a consumer that held it longer than a lease.
    pub taken_over: bool,
}

impl Entry {
    fn new(entry: StreamId, taken_over: bool) -> Self {
        Self {
            id: entry.id,
            fields: entry.map,
            taken_over,
        }
    }

    /// A field as text; `None` when absent or not UTF-8.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        redis::from_redis_value_ref::<String>(self.fields.get(name)?).ok()
    }
}

/// Where a stream is read: its key, the group and this replica's consumer name; cheap to clone
/// into the tasks that acknowledge or touch entries.
#[derive(Clone)]
pub(crate) struct StreamHandle {
    redis: ConnectionManager,
    pub key: String,
    pub group: String,
    consumer: String,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamHandle({} {})", self.key, self.group)
    }
}

impl StreamHandle {
    /// Acknowledges an entry, which stays in the stream (the input stream: its publisher trims).
    pub(crate) async fn ack(&self, id: &str) -> Result<(), StreamError> {
        let _: i64 = self
            .redis
            .clone()
            .xack(&self.key, &self.group, &[id])
            .await?;
        Ok(())
    }

    /// Acknowledges and deletes an entry of a stream one group reads (a job or backlog entry
    /// that carries nothing to run; a unit's own end does this in its claim's script).
    pub(crate) async fn finish(&self, id: &str) -> Result<(), StreamError> {
        let _: () = redis::pipe()
            .atomic()
            .xack(&self.key, &self.group, &[id])
            .ignore()
            .xdel(&self.key, &[id])
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Keeps the entry `id` with this replica while its unit runs.
    pub(crate) fn touch(&self, id: &str) -> Touch {
        Touch {
            handle: self.clone(),
            id: id.to_string(),
        }
    }
}

/// An entry kept with this replica while its unit runs: `XCLAIM … JUSTID` resets its idle time
/// and leaves its delivery count alone.
pub(crate) struct Touch {
    handle: StreamHandle,
    id: String,
}

impl Touch {
    pub(crate) async fn touch(&self) -> Result<(), StreamError> {
        let h = &self.handle;
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&h.key)
            .arg(&h.group)
            .arg(&h.consumer)
            .arg(0)
            .arg(&self.id)
            .arg("JUSTID")
            .query_async(&mut h.redis.clone())
            .await?;
        Ok(())
    }
}

/// A consumer of one stream in one group.
pub(crate) struct StreamReader {
    client: redis::Client,
    handle: StreamHandle,
    /// Blocking reads, made when first needed.
    reader: Option<MultiplexedConnection>,
    /// Entries idle longer than this are taken from whoever holds them.
    claim_idle: Duration,
    /// When abandoned entries were last looked for.
    last_claim: Option<Instant>,
}

impl StreamReader {
    /// Joins `group` on `key` as `consumer` (unique among replicas), making the group (from the
    /// start of the stream: entries added before it existed count too) and the stream if need be.
    pub(crate) async fn connect(
        client: redis::Client,
        key: &str,
        group: &str,
        consumer: &str,
        claim_idle: Duration,
    ) -> Result<Self, StreamError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let redis = client.get_connection_manager_with_config(config).await?;
        let reader = Self {
            client,
            handle: StreamHandle {
                redis,
                key: key.to_string(),
                group: group.to_string(),
                consumer: consumer.to_string(),
            },
            reader: None,
            claim_idle,
            last_claim: None,
        };
        reader.create_group().await?;
        Ok(reader)
    }

    pub(crate) fn handle(&self) -> &StreamHandle {
        &self.handle
    }

    async fn create_group(&self) -> Result<(), StreamError> {
        let h = &self.handle;
        let created: redis::RedisResult<()> = h
            .redis
            .clone()
            .xgroup_create_mkstream(&h.key, &h.group, "0")
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The next entries for this replica: abandoned ones first (looked for every half lease, and
    /// again at once while some are found), else new ones, waiting up to `block` for some.
    /// Empty when none came.
    pub(crate) async fn next(
        &mut self,
        block: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError> {
        let count = count.max(1);
        let due = self
            .last_claim
            .is_none_or(|at| at.elapsed() >= self.claim_idle / 2);
        if due {
            let abandoned = self.take_over(count).await;
            match abandoned {
                Ok(abandoned) if !abandoned.is_empty() => return Ok(abandoned),
                Ok(_) => self.last_claim = Some(Instant::now()),
                Err(e) if is_nogroup(&e) => return self.lost_group().await,
                Err(e) => return Err(e),
            }
        }
        match self.read_new(block, count).await {
            Err(e) if is_nogroup(&e) => self.lost_group().await,
            read => read,
        }
    }

    async fn lost_group(&mut self) -> Result<Vec<Entry>, StreamError> {
        let h = &self.handle;
        warn!(stream = %h.key, group = %h.group, "The stream's consumer group was gone; made again from the start of the stream.");
        self.create_group().await?;
        Ok(Vec::new())
    }

    async fn read_new(&mut self, block: Duration, count: usize) -> Result<Vec<Entry>, StreamError> {
        let options = StreamReadOptions::default()
            .group(&self.handle.group, &self.handle.consumer)
            .block(block.as_millis() as usize)
            .count(count);
        let key = self.handle.key.clone();
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
        Ok(entries.map(|e| Entry::new(e, false)).collect())
    }

    async fn reader(&mut self, block: Duration) -> Result<&mut MultiplexedConnection, StreamError> {
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

    /// Entries idle longer than the lease, taken over by this replica: `XAUTOCLAIM` from the
    /// start of the pending list, following its cursor until it comes back to `0-0` or `count`
    /// entries are in hand.
    async fn take_over(&mut self, count: usize) -> Result<Vec<Entry>, StreamError> {
        let h = &self.handle;
        let mut claimed = Vec::new();
        let mut cursor = "0-0".to_string();
        loop {
            let reply: StreamAutoClaimReply = h
                .redis
                .clone()
                .xautoclaim_options(
                    &h.key,
                    &h.group,
                    &h.consumer,
                    self.claim_idle.as_millis() as u64,
                    &cursor,
                    StreamAutoClaimOptions::default().count(CLAIM_COUNT.min(count)),
                )
                .await?;
            // Entries deleted while pending were dropped from the list by the call itself.
            claimed.extend(reply.claimed.into_iter().map(|e| Entry::new(e, true)));
            if reply.next_stream_id == "0-0" || claimed.len() >= count {
                return Ok(claimed);
            }
            cursor = reply.next_stream_id;
        }
    }
}

fn is_nogroup(e: &StreamError) -> bool {
    matches!(e, StreamError::Redis(e) if e.code() == Some("NOGROUP"))
}

mod housekeeping;

#[cfg(test)]
mod tests;

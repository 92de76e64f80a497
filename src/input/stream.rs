//! Durable input, opt-in: events read from a Redis Stream through a consumer group instead of
//! pub/sub, so nothing published while no worker listens is lost.
//!
//! Entries are read with `XREADGROUP` on a connection of their own (a blocking read would hold up
//! every other command on a shared one, and redis-rs' default 500 ms response timeout would cut
//! it short), acknowledged with `XACK` only once their event is finished, and entries left pending
//! by a consumer that died are taken over with `XAUTOCLAIM` once idle for longer than a lease.
//! With the event claims this makes processing exactly-once.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::input::InputSettings;
use crate::redact::redact_url;
use crate::redis_client::{Explained, RedisConfigError, RedisSettings};

/// One message from the input, whichever it is.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub payload: Vec<u8>,
    /// The stream entry to acknowledge once the event is finished (stream input only).
    pub entry: Option<String>,
    /// Who acknowledges it: the stream it came from.
    pub acker: Option<Acker>,
}

pub(crate) struct StreamInput {
    client: redis::Client,
    /// Set while the group is being read (readiness follows it).
    reading: watch::Sender<bool>,
    /// Whether a connection stood before: counting re-connections, not attempts.
    connected_before: std::sync::atomic::AtomicBool,
    redis: RedisSettings,
    key: String,
    group: String,
    consumer: String,
    /// Entries idle longer than this are taken from whoever holds them.
    claim_idle: Duration,
    /// Handed out with each entry; `None`: entries are never acknowledged (unshared claims).
    acker: Option<Acker>,
}

const BLOCK: Duration = Duration::from_secs(5);
const BATCH: usize = 16;

impl StreamInput {
    pub(crate) fn new(
        redis: &RedisSettings,
        input: &InputSettings,
        consumer: &str,
        claim_idle: Duration,
        reading: watch::Sender<bool>,
        acker: Option<redis::aio::ConnectionManager>,
    ) -> Result<Self, RedisConfigError> {
        Ok(Self {
            client: crate::redis_client::open(redis)?,
            reading,
            connected_before: std::sync::atomic::AtomicBool::new(false),
            redis: redis.clone(),
            key: input.stream.clone(),
            group: input.group.clone(),
            consumer: consumer.to_string(),
            claim_idle,
            acker: acker.map(|redis| Acker::new(redis, input)),
        })
    }

    /// Delivers entries to `messages` until `stop`, reconnecting as often as needed.
    pub(crate) async fn run(self, messages: mpsc::Sender<Incoming>, stop: CancellationToken) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.redis.reconnect_initial_ms),
            Duration::from_millis(self.redis.reconnect_max_ms),
        );
        loop {
            let read = self.read(&messages, &stop, &mut backoff).await;
            self.reading.send_replace(false);
            let reason = match read {
                Ok(()) => return,
                Err(e) => e,
            };
            let delay = backoff.next_delay();
            warn!(redis = %redact_url(&self.redis.url), reason = %Explained(&reason), retry_in_ms = delay.as_millis() as u64,
                "Reading the event stream failed; reconnecting.");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn read(
        &self,
        messages: &mpsc::Sender<Incoming>,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), redis::RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.redis.timeout()))
            .set_response_timeout(Some(BLOCK + self.redis.timeout()));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // From the start of the stream: events added before the group existed count too.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e);
        }
        info!(stream = %self.key, group = %self.group, consumer = %self.consumer, "Reading the event stream.");
        if self
            .connected_before
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            metrics::counter!(crate::telemetry::REDIS_RECONNECTS).increment(1);
        }
        self.reading.send_replace(true);
        backoff.reset();
        let mut last_claim = tokio::time::Instant::now() - self.claim_idle;
        loop {
            if last_claim.elapsed() >= self.claim_idle / 2 {
                last_claim = tokio::time::Instant::now();
                for entry in self.claim_abandoned(&mut conn).await? {
                    if !self.forward(entry, messages, stop).await {
                        return Ok(());
                    }
                }
            }
            let options = StreamReadOptions::default()
                .group(&self.group, &self.consumer)
                .block(BLOCK.as_millis() as usize)
                .count(BATCH);
            let read = async {
                let reply: Option<StreamReadReply> =
                    redis::AsyncCommands::xread_options(&mut conn, &[&self.key], &[">"], &options)
                        .await?;
                Ok::<_, redis::RedisError>(reply)
            };
            let reply = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                reply = read => reply?,
            };
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                if !self.forward(entry, messages, stop).await {
                    return Ok(());
                }
            }
        }
    }

    async fn claim_abandoned(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<Vec<StreamId>, redis::RedisError> {
        let mut claimed = Vec::new();
        let mut cursor = "0-0".to_string();
        loop {
            let reply: StreamAutoClaimReply = redis::AsyncCommands::xautoclaim_options(
                conn,
                &self.key,
                &self.group,
                &self.consumer,
                self.claim_idle.as_millis() as u64,
                &cursor,
                StreamAutoClaimOptions::default().count(100),
            )
            .await?;
            claimed.extend(reply.claimed);
            if reply.next_stream_id == "0-0" || claimed.len() >= 1000 {
                return Ok(claimed);
            }
            cursor = reply.next_stream_id;
        }
    }

    async fn forward(
        &self,
        entry: StreamId,
        messages: &mpsc::Sender<Incoming>,
        stop: &CancellationToken,
    ) -> bool {
        let incoming = Incoming {
            payload: entry_payload(&entry.map),
            entry: Some(entry.id),
            acker: self.acker.clone(),
        };
        tokio::select! {
            _ = stop.cancelled() => false,
            sent = messages.send(incoming) => sent.is_ok(),
        }
    }
}

/// The event in a stream entry: the JSON in its `event` field (`XADD talk_posted * event '{…}'`),
/// or else its fields as a JSON object (`XADD talk_posted * talk_id 42`).
pub(crate) fn entry_payload(fields: &HashMap<String, redis::Value>) -> Vec<u8> {
    let text = |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).unwrap_or_default();
    if let Some(event) = fields.get("event") {
        return text(event).into_bytes();
    }
    let object: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(text(v))))
        .collect();
    serde_json::Value::Object(object).to_string().into_bytes()
}

/// Acknowledges finished entries.
#[derive(Clone)]
pub(crate) struct Acker {
    redis: redis::aio::ConnectionManager,
    key: String,
    group: String,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acker({} {})", self.key, self.group)
    }
}

impl Acker {
    pub(crate) fn new(redis: redis::aio::ConnectionManager, input: &InputSettings) -> Self {
        Self {
            redis,
            key: input.stream.clone(),
            group: input.group.clone(),
        }
    }

    pub(crate) async fn ack(&self, entry: &str) {
        let acked: redis::RedisResult<i64> =
            redis::AsyncCommands::xack(&mut self.redis.clone(), &self.key, &self.group, &[entry])
                .await;
        if let Err(e) = acked {
            // Not lost: the entry is redelivered, and its event found done.
            warn!(entry, error = %e, "Acknowledging a stream entry failed; it will be delivered again and skipped as a duplicate.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_read_from_its_event_field_or_from_its_fields() {
        let json = HashMap::from([(
            "event".to_string(),
            redis::Value::BulkString(br#"{"talk_id": 7}"#.to_vec()),
        )]);
        assert_eq!(entry_payload(&json), br#"{"talk_id": 7}"#);
        let fields = HashMap::from([(
            "talk_id".to_string(),
            redis::Value::BulkString(b"7".to_vec()),
        )]);
        let parsed: serde_json::Value = serde_json::from_slice(&entry_payload(&fields)).unwrap();
        assert_eq!(parsed, serde_json::json!({"talk_id": "7"}));
    }
}

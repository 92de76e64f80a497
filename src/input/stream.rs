//! Durable input, opt-in: events read from a Redis Stream in the send mode's consumer group
//! instead of pub/sub, so nothing published while no worker listens is lost (and the API's own
//! event stream, read beside the channel, the same way).
//!
//! The reading itself is `crate::work::stream`'s, as for every stream: entries left pending by a
//! consumer that died are taken over once idle for a lease, a lost group is made again. Here:
//! reconnecting with backoff, readiness, and what an entry's event is. Entries are acknowledged
//! (`XACK`, never deleted: the publisher trims the stream) only once their event is finished;
//! with the event claims this makes processing exactly-once. The API's event stream, which only
//! the notifier writes, is trimmed up to what every mode's group has acknowledged.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Entry, Incoming, InputSettings};
use crate::backoff::Backoff;
use crate::redact::redact_url;
use crate::redis_client::{RedisConfigError, RedisSettings};
use crate::work::stream::{StreamError, StreamReader};

const BLOCK: Duration = Duration::from_secs(5);
const BATCH: usize = 16;

pub(crate) struct StreamInput {
    client: redis::Client,
    /// Set while the group is being read (readiness follows it).
    reading: watch::Sender<bool>,
    redis: RedisSettings,
    key: String,
    group: String,
    consumer: String,
    /// Entries idle longer than this are taken from whoever holds them.
    claim_idle: Duration,
    /// Trim the stream up to what every group acknowledged (a stream only the notifier writes).
    trims: bool,
}

impl StreamInput {
    /// Reads `input.stream` in `group` as `consumer`.
    pub(crate) fn new(
        redis: &RedisSettings,
        input: &InputSettings,
        (group, consumer): (&str, &str),
        claim_idle: Duration,
        reading: watch::Sender<bool>,
        trims: bool,
    ) -> Result<Self, RedisConfigError> {
        Ok(Self {
            client: crate::redis_client::open(redis)?,
            reading,
            redis: redis.clone(),
            key: input.stream.clone(),
            group: group.to_string(),
            consumer: consumer.to_string(),
            claim_idle,
            trims,
        })
    }

    /// Delivers entries to `messages` until `stop`, reconnecting as often as needed.
    pub(crate) async fn run(self, messages: mpsc::Sender<Incoming>, stop: CancellationToken) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.redis.reconnect_initial_ms),
            Duration::from_millis(self.redis.reconnect_max_ms),
        );
        let mut connected_before = false;
        loop {
            let read = self
                .read(&messages, &stop, &mut backoff, &mut connected_before)
                .await;
            self.reading.send_replace(false);
            let reason = match read {
                Ok(()) => return,
                Err(e) => e,
            };
            let delay = backoff.next_delay();
            warn!(redis = %redact_url(&self.redis.url), reason = %reason, retry_in_ms = delay.as_millis() as u64,
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
        connected_before: &mut bool,
    ) -> Result<(), StreamError> {
        let (key, group) = (&self.key, &self.group);
        let mut reader = StreamReader::connect(
            self.client.clone(),
            key,
            group,
            &self.consumer,
            self.claim_idle,
        )
        .await?;
        info!(stream = %key, group = %group, consumer = %self.consumer, "Reading the event stream.");
        if std::mem::replace(connected_before, true) {
            metrics::counter!(crate::telemetry::REDIS_RECONNECTS).increment(1);
        }
        self.reading.send_replace(true);
        backoff.reset();
        let mut housekeeping = tokio::time::Instant::now();
        loop {
            let entries = tokio::select! {
                _ = stop.cancelled() => {
                    reader.leave().await;
                    return Ok(());
                }
                entries = reader.next(BLOCK, BATCH) => entries?,
            };
            for entry in entries {
                let incoming = Incoming {
                    payload: entry_payload(&entry.fields),
                    entry: Some(Entry {
                        stream: reader.handle().clone(),
                        id: entry.id,
                    }),
                };
                let sent = tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    sent = messages.send(incoming) => sent,
                };
                if sent.is_err() {
                    return Ok(());
                }
            }
            if housekeeping.elapsed() >= self.claim_idle {
                housekeeping = tokio::time::Instant::now();
                self.housekeeping(&reader).await;
            }
        }
    }

    /// Every lease: consumers that left without leaving are removed, and a stream only the
    /// notifier writes is trimmed.
    async fn housekeeping(&self, reader: &StreamReader) {
        if let Err(e) = reader.forget_departed().await {
            warn!(stream = %self.key, error = %e, "Could not look for consumers that left.");
        }
        if self.trims
            && let Err(e) = reader.trim_acknowledged().await
        {
            warn!(stream = %self.key, error = %e, "Could not trim the acknowledged entries.");
        }
    }
}

/// The event in a stream entry: the JSON in its `event` field (`XADD talk_posted * event '{…}'`),
/// or else its fields as a JSON object (`XADD talk_posted * talk_id 42`). Bytes that are not
/// UTF-8 are handed on as they are, so the event's parser names that as the reason.
pub(crate) fn entry_payload(fields: &HashMap<String, redis::Value>) -> Vec<u8> {
    let bytes = |v: &redis::Value| redis::from_redis_value_ref::<Vec<u8>>(v).unwrap_or_default();
    if let Some(event) = fields.get("event") {
        return bytes(event);
    }
    let object: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| {
            let text = String::from_utf8_lossy(&bytes(v)).into_owned();
            (k.clone(), serde_json::Value::String(text))
        })
        .collect();
    serde_json::Value::Object(object).to_string().into_bytes()
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
        // Not UTF-8: handed on as is, so the parser says so (E3 of the reliability review).
        let raw = HashMap::from([(
            "event".to_string(),
            redis::Value::BulkString(vec![0xff, 0xfe]),
        )]);
        assert_eq!(entry_payload(&raw), [0xff, 0xfe]);
    }
}

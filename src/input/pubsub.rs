//! The Redis side: a dedicated pub/sub connection subscribed to the talk-posted channel, handing
//! each raw message on to the worker.
//!
//! redis-rs does not reconnect a pub/sub connection (its message stream simply ends), so this
//! loop does: connect, subscribe, read until the stream ends or a PING goes unanswered, then back
//! off with jitter and start again. The PING catches half-open connections (a NAT or failover
//! that drops the socket silently), which would otherwise wait forever for messages.

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::input::Incoming;
use crate::redact::redact_url;
use crate::redis_client::{Explained, RedisConfigError, RedisSettings};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscribeError {
    #[error(transparent)]
    Settings(#[from] RedisConfigError),
}

/// Why one subscription ended.
#[derive(Debug)]
enum Ended {
    Stopped,
    Dropped(String),
}

pub(crate) struct Subscriber {
    client: redis::Client,
    channel: String,
    settings: RedisSettings,
    /// `true` while subscribed; readiness reads it.
    subscribed: watch::Sender<bool>,
}

impl Subscriber {
    /// `subscribed` is set while the subscription stands (readiness follows it).
    pub(crate) fn new(
        settings: &RedisSettings,
        channel: &str,
        subscribed: watch::Sender<bool>,
    ) -> Result<Self, SubscribeError> {
        let client = crate::redis_client::open(settings)?;
        Ok(Self {
            client,
            channel: channel.to_string(),
            settings: settings.clone(),
            subscribed,
        })
    }

    /// Delivers every message of the channel to `messages` until `stop` is cancelled or the
    /// receiver is dropped, reconnecting as often as needed.
    pub(crate) async fn run(self, messages: mpsc::Sender<Incoming>, stop: CancellationToken) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.settings.reconnect_initial_ms),
            Duration::from_millis(self.settings.reconnect_max_ms),
        );
        // Counting re-connections, not attempts: the first subscription is not one.
        let mut lost_before = false;
        loop {
            let ended = match self.connect().await {
                Ok((sink, stream)) => {
                    if lost_before {
                        metrics::counter!(crate::telemetry::REDIS_RECONNECTS).increment(1);
                    }
                    lost_before = true;
                    info!(channel = %self.channel, "Subscribed to Redis channel.");
                    self.subscribed.send_replace(true);
                    backoff.reset();
                    let ended = self.consume(sink, stream, &messages, &stop).await;
                    self.subscribed.send_replace(false);
                    ended
                }
                Err(e) => Ended::Dropped(e),
            };
            let reason = match ended {
                Ended::Stopped => return,
                Ended::Dropped(reason) => reason,
            };
            let delay = backoff.next_delay();
            warn!(
                redis = %redact_url(&self.settings.url),
                reason = %reason,
                attempt = backoff.attempts(),
                retry_in_ms = delay.as_millis() as u64,
                "Redis subscription lost; reconnecting."
            );
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn connect(&self) -> Result<(PubSubSink, PubSubStream), String> {
        let timeout = self.settings.timeout();
        let pubsub = tokio::time::timeout(timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| format!("connecting timed out after {timeout:?}"))?
            .map_err(|e| format!("cannot connect: {}", Explained(&e)))?;
        let (mut sink, stream) = pubsub.split();
        tokio::time::timeout(timeout, sink.subscribe(&self.channel))
            .await
            .map_err(|_| format!("SUBSCRIBE timed out after {timeout:?}"))?
            .map_err(|e| format!("SUBSCRIBE failed: {}", Explained(&e)))?;
        Ok((sink, stream))
    }

    async fn consume(
        &self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        messages: &mpsc::Sender<Incoming>,
        stop: &CancellationToken,
    ) -> Ended {
        let mut ping = tokio::time::interval(self.settings.ping_interval());
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ended::Dropped("the connection was closed".into());
                    };
                    // Waiting here is the back-pressure: events are not read faster than the
                    // worker takes them.
                    let sent = tokio::select! {
                        _ = stop.cancelled() => return Ended::Stopped,
                        sent = messages.send(Incoming::bare(message.get_payload_bytes().to_vec())) => sent,
                    };
                    if sent.is_err() {
                        return Ended::Stopped;
                    }
                }
                _ = ping.tick() => {
                    let timeout = self.settings.timeout();
                    match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ended::Dropped(format!("PING failed: {}", Explained(&e))),
                        Err(_) => return Ended::Dropped(format!("no answer to PING within {timeout:?}")),
                    }
                }
            }
        }
    }
}

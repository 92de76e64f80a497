//! Where events come in: a Redis pub/sub channel ([`pubsub`]) or a Redis Stream read in the send
//! mode's consumer group ([`stream`], through the one stream consumer of `crate::work::stream`).
//! Both hand the worker the same [`Incoming`]; [`Input`] is whichever the settings choose (with
//! the pub/sub input and the API on, the API's own event stream beside the channel). What differs
//! between the two inputs (acknowledgement, redelivery, the entry's time) stays here, with the
//! `[input]` settings that choose between them. A new input is a variant of [`Input`] and a file.

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) mod pubsub;
pub(crate) mod stream;

use crate::work::stream::StreamHandle;

/// Which input events arrive on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    Pubsub,
    Stream,
}

/// The `[input]` settings: the mode, and the stream and group the stream input reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSettings {
    pub mode: InputMode,
    pub stream: String,
    pub group: String,
}

impl InputSettings {
    /// The stream `POST /v1/events` appends to when the deployment reads pub/sub: every replica
    /// serving the API reads it beside the channel, so an event posted over HTTP is kept until
    /// one has run it (a PUBLISH is lost while nobody listens).
    pub(crate) fn api_events(&self, claims_prefix: &str) -> Self {
        Self {
            mode: InputMode::Stream,
            stream: format!("{claims_prefix}api:events"),
            group: self.group.clone(),
        }
    }
}

/// One message from the input, whichever it is.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub payload: Vec<u8>,
    /// The stream entry that carried it, acknowledged once its event is finished; `None` for
    /// pub/sub, which has nothing to acknowledge.
    pub entry: Option<Entry>,
}

/// A stream entry to acknowledge.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub stream: StreamHandle,
    pub id: String,
}

impl Incoming {
    /// A message that came by itself (pub/sub, or a test handing the worker bytes).
    pub(crate) fn bare(payload: Vec<u8>) -> Self {
        Self {
            payload,
            entry: None,
        }
    }

    /// Acknowledges the entry that carried it, if any. A failure is only logged: the entry is
    /// delivered again, and its event found done.
    pub(crate) async fn ack(&self) {
        let Some(entry) = &self.entry else { return };
        if let Err(e) = entry.stream.ack(&entry.id).await {
            tracing::warn!(entry = %entry.id, error = %e, "Acknowledging a stream entry failed; it will be delivered again and skipped as a duplicate.");
        }
    }
}

/// The input the settings choose.
pub(crate) enum Input {
    PubSub(pubsub::Subscriber),
    Stream(Box<stream::StreamInput>),
    /// The channel, and the API's own event stream beside it.
    PubSubAndApi(pubsub::Subscriber, Box<stream::StreamInput>),
}

impl Input {
    /// Hands every message to `messages` until `stop`, reconnecting as often as needed.
    pub(crate) async fn run(self, messages: mpsc::Sender<Incoming>, stop: CancellationToken) {
        match self {
            Input::PubSub(subscriber) => subscriber.run(messages, stop).await,
            Input::Stream(stream) => stream.run(messages, stop).await,
            Input::PubSubAndApi(subscriber, stream) => {
                tokio::join!(
                    subscriber.run(messages.clone(), stop.clone()),
                    stream.run(messages, stop)
                );
            }
        }
    }
}

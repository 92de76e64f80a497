//! Where events come in: a Redis pub/sub channel ([`pubsub`]) or a Redis Stream read by a consumer
//! group ([`stream`]). Both hand the worker the same [`stream::Incoming`]; what differs between the
//! two inputs (acknowledgement, redelivery, the entry's time) stays here, with the `[input]`
//! settings that choose between them.

use serde::Deserialize;

pub(crate) mod pubsub;
pub(crate) mod stream;

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
    /// reads it beside the channel, in the input's group, so an event posted over HTTP is kept
    /// until one has run it (a PUBLISH is lost while nobody listens).
    pub(crate) fn api_events(&self, claims_prefix: &str) -> Self {
        Self {
            mode: InputMode::Stream,
            stream: format!("{claims_prefix}api:events"),
            group: self.group.clone(),
        }
    }
}

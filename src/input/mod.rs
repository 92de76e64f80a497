//! Where events come in: a Redis pub/sub channel ([`pubsub`]) or a Redis Stream read by a consumer
//! group ([`stream`]). Both hand the worker the same [`stream::Incoming`]; what differs between the
//! two inputs (acknowledgement, redelivery, the entry's time) stays here, with the `[input]`
//! settings that choose between them.

use serde::Deserialize;

pub mod pubsub;
pub mod stream;

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

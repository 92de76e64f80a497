//! Where events come in: a Redis pub/sub channel ([`pubsub`]) or a Redis Stream read by a consumer
//! group ([`stream`]). Both hand the worker the same [`stream::Incoming`]; what differs between the
//! two inputs (acknowledgement, redelivery, the entry's time) stays here.

pub mod pubsub;
pub mod stream;

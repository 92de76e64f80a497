//! The `[apns]` settings (and each `[apps.NAME.apns]`): the signing key, the app's topic, where
//! Apple is and the limits. They live beside the pusher that reads them; `config` composes them
//! into `Settings` and checks them against the rest (`config::validate`).

use serde::Deserialize;

/// The `[apns]` settings: the signing key, the app and the limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsSettings {
    /// A stand-in's base URL instead of Apple's hosts (staging, tests, the benchmark); empty for
    /// Apple's own.
    pub endpoint: String,
    /// Path of the .p8 signing key; empty when APNs is not configured.
    pub key_path: String,
    pub key_id: String,
    pub team_id: String,
    pub topic: String,
    pub sandbox: bool,
    pub concurrency: usize,
    pub ttl_secs: u64,
    pub sound: String,
    pub request_timeout_secs: u64,
    pub pool_idle_timeout_secs: u64,
    /// APNs sends a second for the whole deployment, shared through Redis; 0 = unpaced.
    pub rate_per_second: u64,
}

impl ApnsSettings {
    pub fn is_configured(&self) -> bool {
        !self.key_path.trim().is_empty()
    }
}

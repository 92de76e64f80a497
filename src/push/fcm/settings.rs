//! The `[fcm]` settings (and each `[apps.NAME.fcm]`): where FCM is, the service account, and the
//! limits. They live beside the pusher that reads them; `config` composes them into `Settings`
//! and checks them against the rest (`config::validate`).

use serde::Deserialize;

/// The `[fcm]` settings: where FCM is, the service account, and the limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmSettings {
    pub endpoint: String,
    /// Path of the service-account JSON; empty when FCM is not configured.
    pub credentials: String,
    pub project_id: String,
    pub concurrency: usize,
    pub connections: usize,
    pub ttl_secs: u64,
    pub android_channel_id: String,
    pub request_timeout_secs: u64,
    /// FCM sends a minute for the whole deployment, shared through Redis; 0 = unpaced.
    pub quota_per_minute: u64,
}

impl FcmSettings {
    pub fn is_configured(&self) -> bool {
        !self.credentials.trim().is_empty()
    }
}

//! The providers' settings (`[fcm]`, `[apns]`, `[retry]`). They stay in config rather than beside
//! the pushers: push imports config, and config never imports push, so the graph stays acyclic.
//! A new provider's section goes here, with its checks in `validate`.

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

/// The `[apns]` settings: the signing key, the app and the limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsSettings {
    /// A stand-in's base URL instead of Apple's hosts (staging, tests, the benchmark); empty for
    /// Apple, through a2.
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

/// The `[retry]` settings: how often and how long a push is tried again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub push_deadline_secs: u64,
    pub quota_min_delay_secs: u64,
}

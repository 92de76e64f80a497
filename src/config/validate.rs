//! The checks run once at start-up, after the file and the environment are merged: ranges, the
//! settings that only make sense together, and each component's own check (the Redis client, the
//! templates, the queries), whose errors are reported here as a [`SettingsError`] that names the
//! setting to fix. A new cross-setting rule goes here.

use super::env::{
    APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC, DATABASE_URL, FCM_ENDPOINT,
    GOOGLE_APPLICATION_CREDENTIALS, NOTIFIER_API_ALLOW_UNAUTHENTICATED, NOTIFIER_API_TOKENS,
    NOTIFIER_CHANNEL, NOTIFIER_CONCURRENCY, NOTIFIER_EXTRA_CA_FILE, NOTIFIER_STREAM,
};
use super::{SendMode, Settings, SettingsError};
use crate::content::{TemplateError, Templates};
use crate::database::{Backend, QueryConfigError};
use crate::redact::redact_url;
use crate::redis_client::RedisConfigError;

impl From<TemplateError> for SettingsError {
    fn from(e: TemplateError) -> Self {
        Self::new(e.key, e.reason)
    }
}

impl From<QueryConfigError> for SettingsError {
    fn from(e: QueryConfigError) -> Self {
        Self::new(e.key, e.source)
    }
}

impl From<RedisConfigError> for SettingsError {
    fn from(e: RedisConfigError) -> Self {
        Self::new(e.setting, e.reason)
    }
}

/// `Err` naming `setting` unless `ok`.
fn require(ok: bool, setting: &str, reason: &str) -> Result<(), SettingsError> {
    match ok {
        true => Ok(()),
        false => Err(SettingsError::new(setting, reason)),
    }
}

impl Settings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        self.validate_service()?;
        self.validate_stores()?;
        self.validate_providers()?;
        self.validate_send_mode()?;
        self.validate_api()?;
        Templates::check(&self.content)?;
        crate::database::check_queries(&self.queries)?;
        Ok(())
    }

    fn validate_service(&self) -> Result<(), SettingsError> {
        let s = &self.service;
        require(
            !s.channel.trim().is_empty(),
            NOTIFIER_CHANNEL,
            "must not be empty",
        )?;
        require(
            (1..=100_000).contains(&s.concurrency),
            NOTIFIER_CONCURRENCY,
            "must be from 1 to 100000",
        )?;
        require(
            (1..=64).contains(&s.max_concurrent_events),
            "service.max_concurrent_events",
            "must be from 1 to 64",
        )
    }

    /// Redis (with the claims and the input kept there) and the database.
    fn validate_stores(&self) -> Result<(), SettingsError> {
        // Builds a client once: the URL, the TLS files and how they go together are checked here.
        crate::redis_client::open(&self.redis)?;
        let r = &self.redis;
        require(
            r.ping_interval_secs > 0 && r.timeout_secs > 0 && r.reconnect_initial_ms > 0,
            "redis.ping_interval_secs / timeout_secs / reconnect_initial_ms",
            "must be at least 1",
        )?;
        if Backend::from_url(&self.database.url).is_none() {
            return Err(SettingsError::new(
                DATABASE_URL,
                format!(
                    "{} does not start with postgres://, mysql:// or sqlite://",
                    redact_url(&self.database.url)
                ),
            ));
        }
        let db = &self.database;
        require(
            (1..=100_000).contains(&db.page_size),
            "database.page_size",
            "must be from 1 to 100000",
        )?;
        require(
            db.max_connections > 0,
            "database.max_connections",
            "must be at least 1",
        )?;
        let c = &self.claims;
        require(
            c.lease_secs > 0 && c.dedup_window_secs >= c.lease_secs,
            "claims.lease_secs / claims.dedup_window_secs",
            "the lease must be at least 1 s and the dedup window at least the lease",
        )?;
        let input = &self.input;
        require(
            !input.stream.trim().is_empty() && !input.group.trim().is_empty(),
            NOTIFIER_STREAM,
            "must not be empty",
        )
    }

    fn validate_providers(&self) -> Result<(), SettingsError> {
        super::apps::check_fcm(&self.fcm, FCM_ENDPOINT, "fcm.connections")?;
        super::apps::check_webpush(&self.webpush, super::apps::default_webpush_setting)?;
        if self.apns.is_configured() {
            for (name, value) in [
                (APNS_KEY_ID, &self.apns.key_id),
                (APNS_TEAM_ID, &self.apns.team_id),
                (APNS_TOPIC, &self.apns.topic),
            ] {
                require(
                    !value.trim().is_empty(),
                    name,
                    "must be set when APNS_KEY_PATH is",
                )?;
            }
        }
        require(
            self.retry.max_attempts > 0,
            "retry.max_attempts",
            "must be at least 1",
        )?;
        if let Some(path) = &self.extra_ca_file
            && !path.is_file()
        {
            return Err(SettingsError::new(
                NOTIFIER_EXTRA_CA_FILE,
                format!("{} is not a readable file", path.display()),
            ));
        }
        Ok(())
    }

    fn validate_send_mode(&self) -> Result<(), SettingsError> {
        if self.send_mode != SendMode::DryRun && !self.any_provider() {
            return Err(SettingsError::new(
                GOOGLE_APPLICATION_CREDENTIALS,
                format!(
                    "send mode {} needs FCM credentials, an APNs key (APNS_KEY_PATH) or a VAPID \
                     key (WEBPUSH_VAPID_PRIVATE_KEY_PATH)",
                    self.send_mode.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Anyone who can reach a non-loopback API address could push to every token they know.
    fn validate_api(&self) -> Result<(), SettingsError> {
        let api = &self.api;
        if api.is_open_beyond_loopback() && !api.allow_unauthenticated {
            let addr = api.addr.map(|a| a.to_string()).unwrap_or_default();
            return Err(SettingsError::new(
                NOTIFIER_API_ALLOW_UNAUTHENTICATED,
                format!(
                    "NOTIFIER_API_ADDR {addr} is not a loopback address: set {NOTIFIER_API_TOKENS}, \
                     or {NOTIFIER_API_ALLOW_UNAUTHENTICATED}=true to serve it without tokens"
                ),
            ));
        }
        require(
            (1..=30).contains(&api.header_timeout_secs),
            "api.header_timeout_secs",
            "must be from 1 to 30",
        )?;
        require(
            api.notification_max > 0
                && api.body_limit_bytes > 0
                && api.request_timeout_secs > 0
                && api.backlog_max > 0
                && api.idle_timeout_secs > 0
                && api.max_connections > 0,
            "api.notification_max / body_limit_bytes / request_timeout_secs / backlog_max / \
             idle_timeout_secs / max_connections",
            "must be at least 1",
        )
    }
}

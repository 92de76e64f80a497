//! Settings: the TOML file (`config/notifier.toml`, also compiled in as the defaults) overridden by
//! the environment variables of the contract. Everything is read and checked once at start-up, so
//! a wrong value stops the process with one line that names the setting instead of failing later
//! in the middle of a fan-out.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The shipped configuration file; its values are the defaults for every key.
const DEFAULTS: &str = include_str!("../../config/notifier.toml");
const DEFAULT_CONFIG_PATH: &str = "config/notifier.toml";

/// Every environment variable the notifier reads.
pub const ENV_VARS: &[&str] = &[
    "APP_ENV",
    "NOTIFIER_SEND_MODE",
    "REDIS_URL",
    "REDIS_CA_FILE",
    "REDIS_CLIENT_CERT_FILE",
    "REDIS_CLIENT_KEY_FILE",
    "DATABASE_URL",
    "NOTIFIER_CONFIG",
    "NOTIFIER_CHANNEL",
    "NOTIFIER_CONCURRENCY",
    "NOTIFIER_HTTP_ADDR",
    "NOTIFIER_INPUT",
    "NOTIFIER_STREAM",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "FCM_PROJECT_ID",
    "FCM_ENDPOINT",
    "NOTIFIER_EXTRA_CA_FILE",
    "APNS_KEY_PATH",
    "APNS_KEY_ID",
    "APNS_TEAM_ID",
    "APNS_TOPIC",
    "APNS_SANDBOX",
    "APNS_ENDPOINT",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "LOG_FORMAT",
    "RUST_LOG",
    // Read by the runtime and the allocator, before the settings.
    "TOKIO_WORKER_THREADS",
    "MIMALLOC_PURGE_DELAY",
];

/// A setting that cannot be used, named the way the operator would set it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct SettingsError {
    pub setting: String,
    pub reason: String,
}

impl SettingsError {
    pub(crate) fn new(setting: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self {
            setting: setting.into(),
            reason: reason.to_string(),
        }
    }
}

/// How pushes leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Log what would be sent; open no connection to any provider.
    DryRun,
    /// Ask FCM to validate without delivering (`validate_only`); APNs pushes are dry-run.
    Validate,
    /// Deliver to FCM and APNs.
    Live,
}

impl SendMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SendMode::DryRun => "dry-run",
            SendMode::Validate => "validate",
            SendMode::Live => "live",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub service: ServiceSettings,
    pub redis: RedisSettings,
    pub database: DatabaseSettings,
    pub input: InputSettings,
    pub claims: ClaimSettings,
    pub fcm: FcmSettings,
    pub apns: ApnsSettings,
    pub retry: RetrySettings,
    pub queries: QuerySettings,
    pub content: ContentSettings,
    /// PEM roots trusted in addition to the system's (`NOTIFIER_EXTRA_CA_FILE`).
    #[serde(skip)]
    pub extra_ca_file: Option<PathBuf>,
    /// The proxy pushes tunnel through (`HTTPS_PROXY`), and the hosts reached directly
    /// (`NO_PROXY`); the lower-case names too, as curl and reqwest read them.
    #[serde(skip)]
    pub https_proxy: Option<String>,
    #[serde(skip)]
    pub no_proxy: Option<String>,
    /// Derived from `APP_ENV` and `NOTIFIER_SEND_MODE`; not a file key.
    #[serde(skip, default = "default_send_mode")]
    pub send_mode: SendMode,
    #[serde(skip)]
    pub app_env: Option<String>,
    #[serde(skip, default = "default_log_format")]
    pub log_format: LogFormat,
    /// The file the settings came from, if any.
    #[serde(skip)]
    pub config_path: Option<PathBuf>,
}

fn default_send_mode() -> SendMode {
    SendMode::DryRun
}

fn default_log_format() -> LogFormat {
    LogFormat::Pretty
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    pub channel: String,
    pub concurrency: usize,
    pub max_concurrent_events: usize,
    pub http_addr: SocketAddr,
    pub drain_timeout_secs: u64,
    pub max_event_age_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    Pubsub,
    Stream,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSettings {
    pub mode: InputMode,
    pub stream: String,
    pub group: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSettings {
    pub key_prefix: String,
    pub lease_secs: u64,
    pub dedup_window_secs: u64,
    pub max_attempts: u32,
}

impl ClaimSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.dedup_window_secs)
    }
}

impl ServiceSettings {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    pub ping_interval_secs: u64,
    pub timeout_secs: u64,
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// PEM roots trusted for `rediss://` in addition to the system's (`REDIS_CA_FILE`).
    #[serde(skip)]
    pub ca_file: Option<PathBuf>,
    /// The client certificate and key, for servers that require one (`REDIS_CLIENT_CERT_FILE`,
    /// `REDIS_CLIENT_KEY_FILE`).
    #[serde(skip)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(skip)]
    pub client_key_file: Option<PathBuf>,
}

impl RedisSettings {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub page_size: u32,
    pub retry_for_secs: u64,
}

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
}

impl ServiceSettings {
    /// A provider's effective limit: as configured (at most the global limit), or — for 0, the
    /// default — three quarters of the global limit, so the other provider always keeps a share.
    pub fn provider_limit(&self, configured: usize) -> usize {
        if configured > 0 {
            return configured.min(self.concurrency);
        }
        let keep_for_the_other = (self.concurrency / 4).max(1);
        self.concurrency.saturating_sub(keep_for_the_other).max(1)
    }
}

impl FcmSettings {
    pub fn is_configured(&self) -> bool {
        !self.credentials.trim().is_empty()
    }
}

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
}

impl ApnsSettings {
    pub fn is_configured(&self) -> bool {
        !self.key_path.trim().is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub push_deadline_secs: u64,
    pub quota_min_delay_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    pub content: String,
    pub audience: String,
    pub prune: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentSettings {
    pub default_locale: String,
    pub templates: BTreeMap<String, TemplateSettings>,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    pub title: String,
    pub body: String,
}

impl Settings {
    /// Loads the settings from the process environment (after `.env` was read).
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::load(|name| std::env::var(name).ok())
    }

    /// Loads the settings with `env` as the environment, so tests need not touch the process's.
    pub fn load(env: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut table: toml::Table = DEFAULTS
            .parse()
            .map_err(|e| SettingsError::new("built-in defaults", e))?;

        let (path, explicit) = match env("NOTIFIER_CONFIG") {
            Some(p) if !p.is_empty() => (PathBuf::from(p), true),
            _ => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let config_path = match read_file(&path, explicit)? {
            Some(file) => {
                merge(&mut table, file);
                Some(path)
            }
            None => None,
        };

        let mut settings: Settings =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    SettingsError::new(config_name(&config_path), e.message())
                })?;
        settings.config_path = config_path;
        settings.apply_env(&env)?;
        settings.validate()?;
        Ok(settings)
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = set("REDIS_URL") {
            self.redis.url = v;
        }
        self.redis.ca_file = set("REDIS_CA_FILE").map(PathBuf::from);
        self.redis.client_cert_file = set("REDIS_CLIENT_CERT_FILE").map(PathBuf::from);
        self.redis.client_key_file = set("REDIS_CLIENT_KEY_FILE").map(PathBuf::from);
        if let Some(v) = set("DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = set("NOTIFIER_CHANNEL") {
            self.service.channel = v;
        }
        if let Some(v) = set("NOTIFIER_CONCURRENCY") {
            self.service.concurrency = v.trim().parse().map_err(|_| {
                SettingsError::new("NOTIFIER_CONCURRENCY", "must be a whole number")
            })?;
        }
        if let Some(v) = set("NOTIFIER_HTTP_ADDR") {
            self.service.http_addr = v.trim().parse().map_err(|_| {
                SettingsError::new(
                    "NOTIFIER_HTTP_ADDR",
                    "must be an address like 127.0.0.1:9464",
                )
            })?;
        }
        if let Some(v) = set("NOTIFIER_INPUT") {
            self.input.mode = match v.trim() {
                "pubsub" => InputMode::Pubsub,
                "stream" => InputMode::Stream,
                other => {
                    return Err(SettingsError::new(
                        "NOTIFIER_INPUT",
                        format!("{other:?} is not one of pubsub, stream"),
                    ));
                }
            };
        }
        if let Some(v) = set("NOTIFIER_STREAM") {
            self.input.stream = v;
        }
        if let Some(v) = set("GOOGLE_APPLICATION_CREDENTIALS") {
            self.fcm.credentials = v;
        }
        if let Some(v) = set("FCM_PROJECT_ID") {
            self.fcm.project_id = v;
        }
        if let Some(v) = set("FCM_ENDPOINT") {
            self.fcm.endpoint = v;
        }
        self.extra_ca_file = set("NOTIFIER_EXTRA_CA_FILE").map(PathBuf::from);
        self.https_proxy = set("HTTPS_PROXY").or_else(|| set("https_proxy"));
        self.no_proxy = set("NO_PROXY").or_else(|| set("no_proxy"));
        if let Some(v) = set("APNS_ENDPOINT") {
            self.apns.endpoint = v;
        }
        if let Some(v) = set("APNS_KEY_PATH") {
            self.apns.key_path = v;
        }
        if let Some(v) = set("APNS_KEY_ID") {
            self.apns.key_id = v;
        }
        if let Some(v) = set("APNS_TEAM_ID") {
            self.apns.team_id = v;
        }
        if let Some(v) = set("APNS_TOPIC") {
            self.apns.topic = v;
        }
        if let Some(v) = set("APNS_SANDBOX") {
            self.apns.sandbox = match v.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => {
                    return Err(SettingsError::new(
                        "APNS_SANDBOX",
                        format!("{other:?} is not true or false"),
                    ));
                }
            };
        }
        self.log_format = match set("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(SettingsError::new(
                    "LOG_FORMAT",
                    format!("{other:?} is not one of pretty, json"),
                ));
            }
        };
        self.app_env = set("APP_ENV");
        let production = self.app_env.as_deref() == Some("production");
        self.send_mode = match set("NOTIFIER_SEND_MODE").as_deref().map(str::trim) {
            None => {
                if production {
                    SendMode::Live
                } else {
                    SendMode::DryRun
                }
            }
            Some("dry-run") => SendMode::DryRun,
            Some("validate") => SendMode::Validate,
            // Explicit `live` is how staging opts in to real sends outside production.
            Some("live") => SendMode::Live,
            Some(other) => {
                return Err(SettingsError::new(
                    "NOTIFIER_SEND_MODE",
                    format!("{other:?} is not one of dry-run, validate, live"),
                ));
            }
        };
        Ok(())
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let s = &self.service;
        if s.channel.trim().is_empty() {
            return Err(SettingsError::new("NOTIFIER_CHANNEL", "must not be empty"));
        }
        if !(1..=100_000).contains(&s.concurrency) {
            return Err(SettingsError::new(
                "NOTIFIER_CONCURRENCY",
                "must be from 1 to 100000",
            ));
        }
        if !(1..=64).contains(&s.max_concurrent_events) {
            return Err(SettingsError::new(
                "service.max_concurrent_events",
                "must be from 1 to 64",
            ));
        }
        // Builds a client once: the URL, the TLS files and how they go together are checked here.
        crate::redis_client::open(&self.redis)?;
        if self.redis.ping_interval_secs == 0
            || self.redis.timeout_secs == 0
            || self.redis.reconnect_initial_ms == 0
        {
            return Err(SettingsError::new(
                "redis.ping_interval_secs / timeout_secs / reconnect_initial_ms",
                "must be at least 1",
            ));
        }
        if crate::database::Backend::from_url(&self.database.url).is_none() {
            return Err(SettingsError::new(
                "DATABASE_URL",
                format!(
                    "{} does not start with postgres://, mysql:// or sqlite://",
                    redact_url(&self.database.url)
                ),
            ));
        }
        if !(1..=100_000).contains(&self.database.page_size) {
            return Err(SettingsError::new(
                "database.page_size",
                "must be from 1 to 100000",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(SettingsError::new(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if self.claims.lease_secs == 0 || self.claims.dedup_window_secs < self.claims.lease_secs {
            return Err(SettingsError::new(
                "claims.lease_secs / claims.dedup_window_secs",
                "the lease must be at least 1 s and the dedup window at least the lease",
            ));
        }
        if self.input.stream.trim().is_empty() || self.input.group.trim().is_empty() {
            return Err(SettingsError::new("NOTIFIER_STREAM", "must not be empty"));
        }
        self.validate_providers()?;
        crate::content::Templates::check(&self.content)?;
        crate::database::check_queries(&self.queries)?;
        Ok(())
    }

    fn validate_providers(&self) -> Result<(), SettingsError> {
        if self.fcm.connections > 64 {
            return Err(SettingsError::new(
                "fcm.connections",
                "must be from 0 (auto) to 64",
            ));
        }
        if !self.fcm.endpoint.starts_with("https://") && !self.fcm.endpoint.starts_with("http://") {
            return Err(SettingsError::new(
                "FCM_ENDPOINT",
                "must be an http(s):// URL",
            ));
        }
        if self.apns.is_configured() {
            for (name, value) in [
                ("APNS_KEY_ID", &self.apns.key_id),
                ("APNS_TEAM_ID", &self.apns.team_id),
                ("APNS_TOPIC", &self.apns.topic),
            ] {
                if value.trim().is_empty() {
                    return Err(SettingsError::new(
                        name,
                        "must be set when APNS_KEY_PATH is",
                    ));
                }
            }
        }
        if self.retry.max_attempts == 0 {
            return Err(SettingsError::new(
                "retry.max_attempts",
                "must be at least 1",
            ));
        }
        if let Some(path) = &self.extra_ca_file
            && !path.is_file()
        {
            return Err(SettingsError::new(
                "NOTIFIER_EXTRA_CA_FILE",
                format!("{} is not a readable file", path.display()),
            ));
        }
        if self.send_mode != SendMode::DryRun
            && !self.fcm.is_configured()
            && !self.apns.is_configured()
        {
            return Err(SettingsError::new(
                "GOOGLE_APPLICATION_CREDENTIALS",
                format!(
                    "send mode {} needs FCM credentials or an APNs key (APNS_KEY_PATH)",
                    self.send_mode.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// The deployment this process belongs to: every replica reading the same input. Claims are
    /// kept per deployment, so two deployments sharing a Redis (staging beside production, one
    /// per database) never take each other's events for duplicates.
    pub fn deployment(&self) -> String {
        match self.input.mode {
            InputMode::Pubsub => format!("channel:{}", self.service.channel),
            InputMode::Stream => format!("stream:{}", self.input.stream),
        }
    }

    /// Where this deployment's claims live: `{key_prefix}{<deployment>}:`. The braces make the
    /// deployment a Redis Cluster hash tag, so one event's claim and the active set share a slot,
    /// as a script touching both needs.
    pub fn claims_prefix(&self) -> String {
        format!("{}{{{}}}:", self.claims.key_prefix, self.deployment())
    }

    /// The effective settings, one `key = value` a line, with secrets masked; for `notifier check`.
    pub fn describe(&self) -> String {
        let lines = [
            ("config file", config_name(&self.config_path)),
            (
                "APP_ENV",
                self.app_env.clone().unwrap_or_else(|| "(unset)".into()),
            ),
            ("NOTIFIER_SEND_MODE", self.send_mode.as_str().into()),
            ("REDIS_URL", redact_url(&self.redis.url)),
            ("REDIS_CA_FILE", path_or_unset(&self.redis.ca_file)),
            (
                "REDIS_CLIENT_CERT_FILE",
                path_or_unset(&self.redis.client_cert_file),
            ),
            (
                "REDIS_CLIENT_KEY_FILE",
                path_or_unset(&self.redis.client_key_file),
            ),
            ("DATABASE_URL", redact_url(&self.database.url)),
            ("NOTIFIER_CHANNEL", self.service.channel.clone()),
            (
                "NOTIFIER_INPUT",
                match self.input.mode {
                    InputMode::Pubsub => "pubsub".into(),
                    InputMode::Stream => {
                        format!("stream {} (group {})", self.input.stream, self.input.group)
                    }
                },
            ),
            ("claims", format!("{}event:…", self.claims_prefix())),
            ("NOTIFIER_CONCURRENCY", self.service.concurrency.to_string()),
            ("NOTIFIER_HTTP_ADDR", self.service.http_addr.to_string()),
            ("database.page_size", self.database.page_size.to_string()),
            ("FCM_ENDPOINT", self.fcm.endpoint.clone()),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                or_unset(&self.fcm.credentials),
            ),
            ("FCM_PROJECT_ID", or_unset(&self.fcm.project_id)),
            (
                "NOTIFIER_EXTRA_CA_FILE",
                self.extra_ca_file
                    .as_ref()
                    .map_or_else(|| "(unset)".into(), |p| p.display().to_string()),
            ),
            ("APNS_KEY_PATH", or_unset(&self.apns.key_path)),
            ("APNS_KEY_ID", or_unset(&self.apns.key_id)),
            ("APNS_TEAM_ID", or_unset(&self.apns.team_id)),
            ("APNS_TOPIC", or_unset(&self.apns.topic)),
            ("APNS_SANDBOX", self.apns.sandbox.to_string()),
            ("APNS_ENDPOINT", or_unset(&self.apns.endpoint)),
        ];
        lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }
}

/// Where the userinfo of `rest` (a URL after `scheme://`) ends: its last '@' before the path, or,
/// when a password holds '/', '?' or '#' itself, the last '@' of all. In doubt it reports more as
/// userinfo, which only hides more.
fn userinfo_end(rest: &str) -> Option<usize> {
    let at = rest.rfind('@')?;
    let prefix = &rest[..at];
    let Some(special) = prefix.find(['/', '?', '#']) else {
        return Some(at);
    };
    match prefix[..special].rfind('@') {
        Some(before_path) => Some(before_path),
        None if prefix[..special].contains(':') => Some(at),
        None => None,
    }
}

fn or_unset(value: &str) -> String {
    if value.trim().is_empty() {
        "(unset)".into()
    } else {
        value.to_string()
    }
}

fn path_or_unset(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or_else(|| "(unset)".into(), |p| p.display().to_string())
}

fn config_name(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "built-in defaults".into(),
    }
}

fn read_file(path: &Path, explicit: bool) -> Result<Option<toml::Table>, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // Without NOTIFIER_CONFIG, running from any directory works on the compiled-in defaults.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => {
            return Err(SettingsError::new(
                "NOTIFIER_CONFIG",
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    text.parse().map(Some).map_err(|e: toml::de::Error| {
        SettingsError::new(
            "NOTIFIER_CONFIG",
            format!("{} is not valid TOML: {}", path.display(), e.message()),
        )
    })
}

/// Overlays `top` on `base`, table by table, so a file may set one key of a section.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Hides the password of a URL like `postgres://user:secret@host/db`, including one given as a
/// `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (userinfo, after) = match userinfo_end(rest) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:***@")),
            // redis://secret@host: for Redis a lone userinfo is the password.
            None if scheme.starts_with("redis") && !userinfo.is_empty() => out.push_str("***@"),
            None if userinfo.is_empty() => {}
            None => out.push_str(&format!("{userinfo}@")),
        }
    }
    match after.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", query.join("&")));
        }
        None => out.push_str(after),
    }
    out
}

/// Settings as the process would load them with only these variables set, for unit tests.
#[cfg(test)]
pub(crate) fn load_with(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::load_with as load;

    #[test]
    fn defaults_come_from_the_shipped_file_and_mean_dry_run() {
        let s = load(&[("NOTIFIER_CONFIG", "config/notifier.toml")]).unwrap();
        assert_eq!(s.service.channel, "talk_posted");
        assert_eq!(s.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(s.database.url, "sqlite://notifier.db");
        assert_eq!(s.send_mode, SendMode::DryRun);
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert!(s.content.templates.contains_key("ja"));
    }

    #[test]
    fn only_production_or_an_explicit_mode_sends_live() {
        let staging = load(&[("APP_ENV", "staging")]).unwrap();
        assert_eq!(staging.send_mode, SendMode::DryRun);
        let creds = ("GOOGLE_APPLICATION_CREDENTIALS", "/etc/sa.json");
        let production = load(&[("APP_ENV", "production"), creds]).unwrap();
        assert_eq!(production.send_mode, SendMode::Live);
        let forced = load(&[("APP_ENV", "production"), ("NOTIFIER_SEND_MODE", "dry-run")]);
        assert_eq!(forced.unwrap().send_mode, SendMode::DryRun);
        let staging_live = load(&[("NOTIFIER_SEND_MODE", "live"), creds]).unwrap();
        assert_eq!(staging_live.send_mode, SendMode::Live);
    }

    #[test]
    fn claims_are_kept_per_input_so_each_deployment_has_its_own() {
        let pubsub = load(&[("NOTIFIER_CHANNEL", "talks")]).unwrap();
        assert_eq!(pubsub.claims_prefix(), "notifier:{channel:talks}:");
        let stream = load(&[("NOTIFIER_INPUT", "stream"), ("NOTIFIER_STREAM", "talks")]).unwrap();
        assert_eq!(stream.claims_prefix(), "notifier:{stream:talks}:");
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = load(&[
            ("NOTIFIER_CHANNEL", "talks"),
            ("NOTIFIER_CONCURRENCY", "12"),
            ("DATABASE_URL", "postgres://u:p@db/x"),
            ("LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert_eq!(s.service.channel, "talks");
        assert_eq!(s.service.concurrency, 12);
        assert_eq!(s.database.url, "postgres://u:p@db/x");
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn a_wrong_value_names_the_setting() {
        let cases = [
            ("NOTIFIER_CONCURRENCY", "lots", "NOTIFIER_CONCURRENCY"),
            ("NOTIFIER_CONCURRENCY", "0", "NOTIFIER_CONCURRENCY"),
            ("NOTIFIER_SEND_MODE", "loud", "NOTIFIER_SEND_MODE"),
            ("DATABASE_URL", "oracle://x", "DATABASE_URL"),
            ("REDIS_URL", "http://x", "REDIS_URL"),
            ("REDIS_URL", "rediss://cache:6380/#insecure", "REDIS_URL"),
            ("REDIS_CA_FILE", "/nonexistent/ca.pem", "REDIS_URL"),
            ("LOG_FORMAT", "xml", "LOG_FORMAT"),
            ("NOTIFIER_HTTP_ADDR", "nowhere", "NOTIFIER_HTTP_ADDR"),
            (
                "NOTIFIER_CONFIG",
                "/nonexistent/notifier.toml",
                "NOTIFIER_CONFIG",
            ),
            ("APP_ENV", "production", "GOOGLE_APPLICATION_CREDENTIALS"),
            (
                "NOTIFIER_SEND_MODE",
                "validate",
                "GOOGLE_APPLICATION_CREDENTIALS",
            ),
            ("APNS_KEY_PATH", "/k.p8", "APNS_KEY_ID"),
            ("APNS_SANDBOX", "maybe", "APNS_SANDBOX"),
            (
                "NOTIFIER_EXTRA_CA_FILE",
                "/nonexistent/ca.pem",
                "NOTIFIER_EXTRA_CA_FILE",
            ),
            ("FCM_ENDPOINT", "fcm.example", "FCM_ENDPOINT"),
            ("NOTIFIER_INPUT", "kafka", "NOTIFIER_INPUT"),
        ];
        for (var, value, named) in cases {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.setting, named, "{var}={value}: {err}");
        }
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(
            &path,
            "[service]\nconcurrency = 7\n[content.templates.fr]\ntitle = \"t\"\nbody = \"b\"\n",
        )
        .unwrap();
        let s = load(&[("NOTIFIER_CONFIG", path.to_str().unwrap())]).unwrap();
        assert_eq!(s.service.concurrency, 7);
        assert_eq!(s.service.channel, "talk_posted");
        assert!(s.content.templates.contains_key("fr") && s.content.templates.contains_key("en"));
    }

    #[test]
    fn a_provider_never_gets_every_slot() {
        let mut s = load(&[]).unwrap().service;
        assert_eq!(s.provider_limit(0), 192); // auto: 3/4 of 256
        assert_eq!(s.provider_limit(100), 100, "an explicit limit is honoured");
        assert_eq!(
            s.provider_limit(1000),
            256,
            "but never above the global one"
        );
        s.concurrency = 16;
        assert_eq!(s.provider_limit(0), 12);
        s.concurrency = 2;
        assert_eq!(s.provider_limit(0), 1);
        s.concurrency = 1;
        assert_eq!(s.provider_limit(0), 1, "one slot cannot be split");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, "[service]\nconcurency = 7\n").unwrap();
        let err = load(&[("NOTIFIER_CONFIG", path.to_str().unwrap())]).unwrap_err();
        assert!(err.reason.contains("concurency"), "{err}");
    }

    /// `notifier check` prints this; operators and scripts read it, so it must not drift.
    #[test]
    fn describe_prints_every_effective_setting_in_a_fixed_order() {
        let live = load(&[
            ("NOTIFIER_CONFIG", "config/notifier.toml"),
            ("APP_ENV", "production"),
            ("REDIS_URL", "redis://:pw@cache:6379/0"),
            ("DATABASE_URL", "postgres://app:s3cret@db:5432/x"),
            ("NOTIFIER_CHANNEL", "talks"),
            ("NOTIFIER_CONCURRENCY", "64"),
            ("NOTIFIER_HTTP_ADDR", "0.0.0.0:9000"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/etc/sa.json"),
            ("FCM_PROJECT_ID", "proj"),
            ("APNS_KEY_PATH", "/k.p8"),
            ("APNS_KEY_ID", "KID"),
            ("APNS_TEAM_ID", "TEAM"),
            ("APNS_TOPIC", "com.example"),
            ("APNS_SANDBOX", "yes"),
            ("APNS_ENDPOINT", "https://apns.test"),
            ("NOTIFIER_EXTRA_CA_FILE", "Cargo.toml"),
        ])
        .unwrap();
        assert_eq!(
            live.describe(),
            "\
config file = config/notifier.toml
APP_ENV = production
NOTIFIER_SEND_MODE = live
REDIS_URL = redis://:***@cache:6379/0
REDIS_CA_FILE = (unset)
REDIS_CLIENT_CERT_FILE = (unset)
REDIS_CLIENT_KEY_FILE = (unset)
DATABASE_URL = postgres://app:***@db:5432/x
NOTIFIER_CHANNEL = talks
NOTIFIER_INPUT = pubsub
claims = notifier:{channel:talks}:event:…
NOTIFIER_CONCURRENCY = 64
NOTIFIER_HTTP_ADDR = 0.0.0.0:9000
database.page_size = 1000
FCM_ENDPOINT = https://fcm.googleapis.com
GOOGLE_APPLICATION_CREDENTIALS = /etc/sa.json
FCM_PROJECT_ID = proj
NOTIFIER_EXTRA_CA_FILE = Cargo.toml
APNS_KEY_PATH = /k.p8
APNS_KEY_ID = KID
APNS_TEAM_ID = TEAM
APNS_TOPIC = com.example
APNS_SANDBOX = true
APNS_ENDPOINT = https://apns.test
"
        );
        let stream = load(&[("NOTIFIER_INPUT", "stream"), ("NOTIFIER_STREAM", "talks")]).unwrap();
        let described = stream.describe();
        let lines: Vec<&str> = described.lines().collect();
        assert_eq!(
            lines[1..3],
            ["APP_ENV = (unset)", "NOTIFIER_SEND_MODE = dry-run"]
        );
        assert_eq!(
            lines[9..11],
            [
                "NOTIFIER_INPUT = stream talks (group notifier)",
                "claims = notifier:{stream:talks}:event:…"
            ]
        );
        assert_eq!(
            lines[16..18],
            [
                "FCM_PROJECT_ID = (unset)",
                "NOTIFIER_EXTRA_CA_FILE = (unset)"
            ]
        );
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact_url("redis://:pw@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(redact_url("redis://pw@cache"), "redis://***@cache");
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        assert_eq!(redact_url("sqlite://notifier.db"), "sqlite://notifier.db");
        assert_eq!(
            redact_url("postgres://app@db/x?sslmode=require&password=s3cret"),
            "postgres://app@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgres://app:p/a?s#s@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("mysql://db/x"), "mysql://db/x");
        assert_eq!(
            redact_url("postgres://app:pw@db/x?email=a@b"),
            "postgres://app:***@db/x?email=a@b"
        );
    }
}

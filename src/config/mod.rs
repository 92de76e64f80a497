//! Settings: the TOML file (`config/notifier.toml`, also compiled in as the defaults) overridden by
//! the environment variables of the contract. Everything is read and checked once at start-up, so
//! a wrong value stops the process with one line that names the setting instead of failing later
//! in the middle of a fan-out.
//!
//! [`Settings`] composes each component's own section (`[redis]` is the Redis client's,
//! `[content]` the templates', …): dependencies run from here to the components, never back.
//! This file loads and merges; [`env`] holds the variables, `validate` the checks across
//! components and `describe` what `notifier check` prints.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod api;
mod apps;
mod describe;
pub(crate) mod env;
mod validate;

pub(crate) use crate::content::ContentSettings;
pub(crate) use crate::database::{DatabaseSettings, QuerySettings};
pub use crate::input::InputMode;
pub(crate) use crate::input::InputSettings;
pub(crate) use crate::push::SendMode;
pub use crate::push::apns::ApnsSettings;
pub(crate) use crate::push::fcm::FcmSettings;
pub(crate) use crate::push::retry::RetrySettings;
pub(crate) use crate::push::webpush::WebPushSettings;
pub(crate) use crate::redact::redact_url;
pub(crate) use crate::redis_client::RedisSettings;
pub(crate) use crate::telemetry::LogFormat;
pub(crate) use api::{ApiSettings, ApiTokens};
pub use apps::{AppProviders, AppSettings};
pub use env::ENV_VARS;

/// The shipped configuration file; its values are the defaults for every key.
const DEFAULTS: &str = include_str!("../../config/notifier.toml");
const DEFAULT_CONFIG_PATH: &str = "config/notifier.toml";

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

/// Every setting of the process, one section a component.
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
    pub webpush: WebPushSettings,
    pub retry: RetrySettings,
    pub queries: QuerySettings,
    pub content: ContentSettings,
    pub api: ApiSettings,
    /// The `[apps.NAME]` sections, by name; the top-level `[fcm]`, `[apns]` and `[webpush]` are
    /// the default app and not listed here.
    #[serde(skip)]
    pub apps: Vec<AppSettings>,
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

/// The `[service]` settings: the channel, the limits and the listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    pub channel: String,
    pub concurrency: usize,
    pub max_concurrent_events: usize,
    pub http_addr: SocketAddr,
    pub drain_timeout_secs: u64,
    pub max_event_age_secs: u64,
    /// An audience larger than this is split into jobs of about this many devices shared by
    /// every replica; 0 never splits.
    pub job_size: u64,
}

impl ServiceSettings {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// A provider's effective limit: as configured (at most the global limit), or — for 0, the
    /// default — three quarters of the global limit, so the others always keep a share.
    pub fn provider_limit(&self, configured: usize) -> usize {
        if configured > 0 {
            return configured.min(self.concurrency);
        }
        let keep_for_the_other = (self.concurrency / 4).max(1);
        self.concurrency.saturating_sub(keep_for_the_other).max(1)
    }

    /// The most pushes a provider may have in flight: a configured limit, or the global one,
    /// since the default share gives way while no other provider asks (what its connections
    /// must carry).
    pub fn provider_peak(&self, configured: usize) -> usize {
        match configured {
            0 => self.concurrency,
            n => n.min(self.concurrency),
        }
    }
}

/// The `[claims]` settings: how long an event is leased and remembered.
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
        let defaults = table.clone();

        let (path, explicit) = match env(env::NOTIFIER_CONFIG) {
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
        let apps = apps::read_apps(table.remove("apps"), &defaults)?;

        let mut settings: Settings =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    SettingsError::new(config_name(&config_path), e.message())
                })?;
        settings.config_path = config_path;
        settings.apps = apps;
        settings.apply_env(&env)?;
        settings.validate()?;
        Ok(settings)
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

    /// Where this replica's work lives: the deployment's claims prefix, then its send mode for
    /// all but live (`dry-run:`, `validate:`). Replicas of different modes sharing a Redis and an
    /// input each keep their own claims, job stream and push backlog, so none takes, marks done
    /// or acknowledges another mode's work. Live keeps the bare prefix, as before modes had one.
    pub fn work_prefix(&self) -> String {
        let mode = match self.send_mode {
            SendMode::Live => "",
            SendMode::DryRun => "dry-run:",
            SendMode::Validate => "validate:",
        };
        format!("{}{mode}", self.claims_prefix())
    }

    /// The consumer group this replica reads the deployment's streams in: `[input] group`, then
    /// the send mode for all but live (`notifier:dry-run`), so that each mode reads every entry.
    pub fn work_group(&self) -> String {
        match self.send_mode {
            SendMode::Live => self.input.group.clone(),
            mode => format!("{}:{}", self.input.group, mode.as_str()),
        }
    }

    /// The Redis Streams this replica reads, each with its group: `(role, key, group)`. Printed
    /// by `notifier check`, and what an autoscaler watches.
    pub fn work_streams(&self) -> Vec<(&'static str, String, String)> {
        let (work, group) = (self.work_prefix(), self.work_group());
        let mut streams = vec![
            ("jobs", format!("{work}jobs"), group.clone()),
            ("push", format!("{work}api:push"), group.clone()),
        ];
        match self.input.mode {
            InputMode::Stream => streams.push(("events", self.input.stream.clone(), group)),
            InputMode::Pubsub if self.api.addr.is_some() => {
                let api_events = self.input.api_events(&self.claims_prefix()).stream;
                streams.push(("api-events", api_events, group));
            }
            InputMode::Pubsub => {}
        }
        streams
    }
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
                env::NOTIFIER_CONFIG,
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    text.parse().map(Some).map_err(|e: toml::de::Error| {
        SettingsError::new(
            env::NOTIFIER_CONFIG,
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
    fn each_send_mode_keeps_its_work_apart() {
        let creds = ("GOOGLE_APPLICATION_CREDENTIALS", "/etc/sa.json");
        let live = load(&[("APP_ENV", "production"), creds]).unwrap();
        assert_eq!(live.work_prefix(), "notifier:{channel:talk_posted}:");
        assert_eq!(live.work_group(), "notifier");
        let dry = load(&[]).unwrap();
        assert_eq!(dry.work_prefix(), "notifier:{channel:talk_posted}:dry-run:");
        assert_eq!(dry.work_group(), "notifier:dry-run");
        let validate = load(&[("NOTIFIER_SEND_MODE", "validate"), creds]).unwrap();
        assert_eq!(
            validate.work_prefix(),
            "notifier:{channel:talk_posted}:validate:"
        );
        let streams = load(&[
            ("NOTIFIER_INPUT", "stream"),
            ("APP_ENV", "production"),
            creds,
        ])
        .unwrap()
        .work_streams();
        let names: Vec<_> = streams
            .iter()
            .map(|(r, k, g)| format!("{r} {k} {g}"))
            .collect();
        assert_eq!(
            names,
            [
                "jobs notifier:{stream:talk_posted}:jobs notifier",
                "push notifier:{stream:talk_posted}:api:push notifier",
                "events talk_posted notifier"
            ]
        );
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
            (
                "WEBPUSH_VAPID_PRIVATE_KEY_PATH",
                "/vapid.pem",
                "WEBPUSH_VAPID_SUBJECT",
            ),
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
}

//! The environment variables of the contract, in one table: each row says how a variable changes
//! the settings and how `notifier check` shows the result. [`ENV_VARS`] and
//! [`Settings::describe`] are derived from it, so a variable is added in one place.
//!
//! The rows run in the order `notifier check` prints them, which is also the order they are
//! applied: `APP_ENV` comes before `NOTIFIER_SEND_MODE`, so production's default (live) is set
//! first and an explicit mode wins. A name used elsewhere (an error that names it) is a constant
//! here; the Redis names are the Redis client's own, as its errors name them.

use std::path::PathBuf;

use super::{LogFormat, SendMode, Settings, config_name};
use crate::input::InputMode;
use crate::redact::redact_url;
use crate::redis_client::{CA_FILE, CERT_FILE, KEY_FILE, REDIS_URL};

pub(crate) const APP_ENV: &str = "APP_ENV";
pub(crate) const NOTIFIER_SEND_MODE: &str = "NOTIFIER_SEND_MODE";
pub(crate) const DATABASE_URL: &str = "DATABASE_URL";
pub(crate) const NOTIFIER_CONFIG: &str = "NOTIFIER_CONFIG";
pub(crate) const NOTIFIER_CHANNEL: &str = "NOTIFIER_CHANNEL";
pub(crate) const NOTIFIER_INPUT: &str = "NOTIFIER_INPUT";
pub(crate) const NOTIFIER_STREAM: &str = "NOTIFIER_STREAM";
pub(crate) const NOTIFIER_CONCURRENCY: &str = "NOTIFIER_CONCURRENCY";
pub(crate) const NOTIFIER_HTTP_ADDR: &str = "NOTIFIER_HTTP_ADDR";
pub(crate) const FCM_ENDPOINT: &str = "FCM_ENDPOINT";
pub(crate) const GOOGLE_APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";
pub(crate) const NOTIFIER_EXTRA_CA_FILE: &str = "NOTIFIER_EXTRA_CA_FILE";
pub(crate) const APNS_KEY_PATH: &str = "APNS_KEY_PATH";
pub(crate) const APNS_KEY_ID: &str = "APNS_KEY_ID";
pub(crate) const APNS_TEAM_ID: &str = "APNS_TEAM_ID";
pub(crate) const APNS_TOPIC: &str = "APNS_TOPIC";
pub(crate) const WEBPUSH_VAPID_PRIVATE_KEY_PATH: &str = "WEBPUSH_VAPID_PRIVATE_KEY_PATH";
pub(crate) const WEBPUSH_VAPID_SUBJECT: &str = "WEBPUSH_VAPID_SUBJECT";
pub(crate) const NOTIFIER_JOB_SIZE: &str = "NOTIFIER_JOB_SIZE";
pub(crate) const FCM_QUOTA_PER_MINUTE: &str = "FCM_QUOTA_PER_MINUTE";
pub(crate) const APNS_RATE_PER_SECOND: &str = "APNS_RATE_PER_SECOND";
pub(crate) const NOTIFIER_API_ADDR: &str = "NOTIFIER_API_ADDR";
pub(crate) const NOTIFIER_API_TOKENS: &str = "NOTIFIER_API_TOKENS";
pub(crate) const NOTIFIER_API_ALLOW_UNAUTHENTICATED: &str = "NOTIFIER_API_ALLOW_UNAUTHENTICATED";

/// Every environment variable the notifier reads.
pub const ENV_VARS: &[&str] = &variable_names::<{ count_variables(TABLE) }>(TABLE);

/// One row: a variable, or a line of `notifier check` that no variable sets.
pub(super) struct Row {
    pub(super) name: &'static str,
    read: Read,
    /// The value `notifier check` prints for it, secrets masked; `None` leaves it out.
    pub(super) show: Option<Show>,
}

type Show = fn(&Settings) -> String;
type Parser = fn(&mut Settings, &str) -> Result<(), String>;

/// What a set (and not blank) variable does to the settings.
enum Read {
    /// Replaces a text setting.
    Text(fn(&mut Settings) -> &mut String),
    /// Names a file.
    Path(fn(&mut Settings) -> &mut Option<PathBuf>),
    /// Sets a value unless an earlier row did: `HTTPS_PROXY` before `https_proxy`.
    FirstOf(fn(&mut Settings) -> &mut Option<String>),
    /// Parses the value; an `Err` is the reason, reported under the row's name.
    Parse(Parser),
    /// Read before the settings: by the runtime, the allocator, tracing, or to find the file.
    Elsewhere,
    /// Not a variable: a line of `notifier check` only.
    Shown,
}

// One row a line, as a table is read.
#[rustfmt::skip]
pub(super) const TABLE: &[Row] = &[
    shown("config file", |s| config_name(&s.config_path)),
    parse(APP_ENV, app_env, Some(|s| or_unset(s.app_env.as_deref().unwrap_or_default()))),
    parse(NOTIFIER_SEND_MODE, send_mode, Some(|s| s.send_mode.as_str().into())),
    text(REDIS_URL, |s| &mut s.redis.url, Some(|s| redact_url(&s.redis.url))),
    path(CA_FILE, |s| &mut s.redis.ca_file, Some(|s| path_or_unset(&s.redis.ca_file))),
    path(CERT_FILE, |s| &mut s.redis.client_cert_file,
        Some(|s| path_or_unset(&s.redis.client_cert_file))),
    path(KEY_FILE, |s| &mut s.redis.client_key_file,
        Some(|s| path_or_unset(&s.redis.client_key_file))),
    text(DATABASE_URL, |s| &mut s.database.url, Some(|s| redact_url(&s.database.url))),
    elsewhere(NOTIFIER_CONFIG),
    text(NOTIFIER_CHANNEL, |s| &mut s.service.channel, Some(|s| s.service.channel.clone())),
    parse(NOTIFIER_INPUT, input_mode, Some(describe_input)),
    text(NOTIFIER_STREAM, |s| &mut s.input.stream, None),
    shown("claims", |s| format!("{}event:…", s.claims_prefix())),
    parse(NOTIFIER_CONCURRENCY, concurrency, Some(|s| s.service.concurrency.to_string())),
    parse(NOTIFIER_HTTP_ADDR, http_addr, Some(|s| s.service.http_addr.to_string())),
    parse(NOTIFIER_API_ADDR, api_addr, Some(|s| s.api.addr.map_or("(off)".into(), |a| a.to_string()))),
    parse(NOTIFIER_API_TOKENS, api_tokens, Some(|s| format!("({} set)", s.api.tokens.len()))),
    parse(NOTIFIER_API_ALLOW_UNAUTHENTICATED, api_open, None),
    parse(NOTIFIER_JOB_SIZE, job_size, Some(|s| s.service.job_size.to_string())),
    shown("database.page_size", |s| s.database.page_size.to_string()),
    text(FCM_ENDPOINT, |s| &mut s.fcm.endpoint, Some(|s| s.fcm.endpoint.clone())),
    text(GOOGLE_APPLICATION_CREDENTIALS, |s| &mut s.fcm.credentials,
        Some(|s| or_unset(&s.fcm.credentials))),
    text("FCM_PROJECT_ID", |s| &mut s.fcm.project_id, Some(|s| or_unset(&s.fcm.project_id))),
    parse(FCM_QUOTA_PER_MINUTE, fcm_quota, Some(|s| s.fcm.quota_per_minute.to_string())),
    path(NOTIFIER_EXTRA_CA_FILE, |s| &mut s.extra_ca_file,
        Some(|s| path_or_unset(&s.extra_ca_file))),
    text(APNS_KEY_PATH, |s| &mut s.apns.key_path, Some(|s| or_unset(&s.apns.key_path))),
    text(APNS_KEY_ID, |s| &mut s.apns.key_id, Some(|s| or_unset(&s.apns.key_id))),
    text(APNS_TEAM_ID, |s| &mut s.apns.team_id, Some(|s| or_unset(&s.apns.team_id))),
    text(APNS_TOPIC, |s| &mut s.apns.topic, Some(|s| or_unset(&s.apns.topic))),
    parse("APNS_SANDBOX", apns_sandbox, Some(|s| s.apns.sandbox.to_string())),
    text("APNS_ENDPOINT", |s| &mut s.apns.endpoint, Some(|s| or_unset(&s.apns.endpoint))),
    parse(APNS_RATE_PER_SECOND, apns_rate, Some(|s| s.apns.rate_per_second.to_string())),
    text(WEBPUSH_VAPID_PRIVATE_KEY_PATH, |s| &mut s.webpush.vapid_private_key_path,
        Some(|s| or_unset(&s.webpush.vapid_private_key_path))),
    text(WEBPUSH_VAPID_SUBJECT, |s| &mut s.webpush.vapid_subject,
        Some(|s| or_unset(&s.webpush.vapid_subject))),
    shown("webpush.allowed_hosts", |s| s.webpush.allowed_hosts.to_string()),
    // The lower-case names too, as curl and reqwest read them; the upper-case one wins.
    first_of("HTTPS_PROXY", |s| &mut s.https_proxy),
    first_of("https_proxy", |s| &mut s.https_proxy),
    first_of("NO_PROXY", |s| &mut s.no_proxy),
    first_of("no_proxy", |s| &mut s.no_proxy),
    parse("LOG_FORMAT", log_format, None),
    elsewhere("RUST_LOG"),
    elsewhere("TOKIO_WORKER_THREADS"),
    elsewhere("MIMALLOC_PURGE_DELAY"),
    elsewhere("MIMALLOC_ALLOW_THP"),
];

const fn text(
    name: &'static str,
    field: fn(&mut Settings) -> &mut String,
    show: Option<Show>,
) -> Row {
    Row {
        name,
        read: Read::Text(field),
        show,
    }
}

const fn path(
    name: &'static str,
    field: fn(&mut Settings) -> &mut Option<PathBuf>,
    show: Option<Show>,
) -> Row {
    Row {
        name,
        read: Read::Path(field),
        show,
    }
}

const fn first_of(name: &'static str, field: fn(&mut Settings) -> &mut Option<String>) -> Row {
    Row {
        name,
        read: Read::FirstOf(field),
        show: None,
    }
}

const fn parse(name: &'static str, parse: Parser, show: Option<Show>) -> Row {
    Row {
        name,
        read: Read::Parse(parse),
        show,
    }
}

const fn elsewhere(name: &'static str) -> Row {
    Row {
        name,
        read: Read::Elsewhere,
        show: None,
    }
}

const fn shown(name: &'static str, show: Show) -> Row {
    Row {
        name,
        read: Read::Shown,
        show: Some(show),
    }
}

/// Production sends live unless `NOTIFIER_SEND_MODE`, a later row, says otherwise.
fn app_env(s: &mut Settings, v: &str) -> Result<(), String> {
    if v == "production" {
        s.send_mode = SendMode::Live;
    }
    s.app_env = Some(v.to_string());
    Ok(())
}

fn send_mode(s: &mut Settings, v: &str) -> Result<(), String> {
    s.send_mode = match v.trim() {
        "dry-run" => SendMode::DryRun,
        "validate" => SendMode::Validate,
        // Explicit `live` is how staging opts in to real sends outside production.
        "live" => SendMode::Live,
        other => return Err(format!("{other:?} is not one of dry-run, validate, live")),
    };
    Ok(())
}

fn input_mode(s: &mut Settings, v: &str) -> Result<(), String> {
    s.input.mode = match v.trim() {
        "pubsub" => InputMode::Pubsub,
        "stream" => InputMode::Stream,
        other => return Err(format!("{other:?} is not one of pubsub, stream")),
    };
    Ok(())
}

fn describe_input(s: &Settings) -> String {
    match s.input.mode {
        InputMode::Pubsub => "pubsub".into(),
        InputMode::Stream => format!("stream {} (group {})", s.input.stream, s.input.group),
    }
}

fn concurrency(s: &mut Settings, v: &str) -> Result<(), String> {
    s.service.concurrency = v.trim().parse().map_err(|_| "must be a whole number")?;
    Ok(())
}

fn job_size(s: &mut Settings, v: &str) -> Result<(), String> {
    s.service.job_size = whole(v)?;
    Ok(())
}

fn fcm_quota(s: &mut Settings, v: &str) -> Result<(), String> {
    s.fcm.quota_per_minute = whole(v)?;
    Ok(())
}

fn apns_rate(s: &mut Settings, v: &str) -> Result<(), String> {
    s.apns.rate_per_second = whole(v)?;
    Ok(())
}

fn whole(v: &str) -> Result<u64, String> {
    v.trim()
        .parse()
        .map_err(|_| "must be a whole number (0 turns it off)".into())
}

fn http_addr(s: &mut Settings, v: &str) -> Result<(), String> {
    s.service.http_addr =
        (v.trim().parse()).map_err(|_| "must be an address like 127.0.0.1:9464")?;
    Ok(())
}

fn api_addr(s: &mut Settings, v: &str) -> Result<(), String> {
    let addr = v.trim().parse();
    s.api.addr = Some(addr.map_err(|_| "must be an address like 127.0.0.1:1056")?);
    Ok(())
}

fn api_tokens(s: &mut Settings, v: &str) -> Result<(), String> {
    s.api.tokens = super::ApiTokens::parse(v)?;
    Ok(())
}

fn api_open(s: &mut Settings, v: &str) -> Result<(), String> {
    s.api.allow_unauthenticated = boolean(v)?;
    Ok(())
}

fn apns_sandbox(s: &mut Settings, v: &str) -> Result<(), String> {
    s.apns.sandbox = boolean(v)?;
    Ok(())
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

fn log_format(s: &mut Settings, v: &str) -> Result<(), String> {
    s.log_format = match v.trim() {
        "pretty" => LogFormat::Pretty,
        "json" => LogFormat::Json,
        other => return Err(format!("{other:?} is not one of pretty, json")),
    };
    Ok(())
}

impl Settings {
    /// Applies every variable of the table that `env` sets (blank counts as unset).
    pub(super) fn apply_env(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), super::SettingsError> {
        for row in TABLE {
            if matches!(row.read, Read::Elsewhere | Read::Shown) {
                continue;
            }
            let Some(value) = env(row.name).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            match row.read {
                Read::Text(field) => *field(self) = value,
                Read::Path(field) => *field(self) = Some(PathBuf::from(value)),
                Read::FirstOf(field) => {
                    field(self).get_or_insert(value);
                }
                Read::Parse(parse) => parse(self, &value)
                    .map_err(|reason| super::SettingsError::new(row.name, reason))?,
                Read::Elsewhere | Read::Shown => {}
            }
        }
        Ok(())
    }
}

pub(super) fn or_unset(value: &str) -> String {
    if value.trim().is_empty() {
        "(unset)".into()
    } else {
        value.to_string()
    }
}

pub(super) fn path_or_unset(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or_else(|| "(unset)".into(), |p| p.display().to_string())
}

const fn count_variables(rows: &[Row]) -> usize {
    let (mut n, mut i) = (0, 0);
    while i < rows.len() {
        if !matches!(rows[i].read, Read::Shown) {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn variable_names<const N: usize>(rows: &[Row]) -> [&'static str; N] {
    let mut names = [""; N];
    let (mut n, mut i) = (0, 0);
    while i < rows.len() {
        if !matches!(rows[i].read, Read::Shown) {
            names[n] = rows[i].name;
            n += 1;
        }
        i += 1;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_of_the_contract_is_listed_once() {
        let mut listed = ENV_VARS.to_vec();
        listed.sort_unstable();
        let mut expected = vec![
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
            "NOTIFIER_JOB_SIZE",
            "NOTIFIER_API_ADDR",
            "NOTIFIER_API_TOKENS",
            "NOTIFIER_API_ALLOW_UNAUTHENTICATED",
            "FCM_QUOTA_PER_MINUTE",
            "APNS_RATE_PER_SECOND",
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
            "WEBPUSH_VAPID_PRIVATE_KEY_PATH",
            "WEBPUSH_VAPID_SUBJECT",
            "HTTPS_PROXY",
            "https_proxy",
            "NO_PROXY",
            "no_proxy",
            "LOG_FORMAT",
            "RUST_LOG",
            "TOKIO_WORKER_THREADS",
            "MIMALLOC_PURGE_DELAY",
            "MIMALLOC_ALLOW_THP",
        ];
        expected.sort_unstable();
        assert_eq!(listed, expected);
    }

    #[test]
    fn the_upper_case_proxy_wins_over_the_lower_case_one() {
        let both = crate::config::load_with(&[
            ("https_proxy", "http://low:1"),
            ("HTTPS_PROXY", "http://up:1"),
        ]);
        assert_eq!(both.unwrap().https_proxy.as_deref(), Some("http://up:1"));
        let lower = crate::config::load_with(&[("no_proxy", "example.com")]).unwrap();
        assert_eq!(lower.no_proxy.as_deref(), Some("example.com"));
    }
}

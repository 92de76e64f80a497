//! Shared test fixtures: a fresh database per test on each backend, a Redis channel per test, a
//! redis-server the test owns (for killing and restarting), and a pusher that records.
//!
//! Every service is real. When one does not answer, the test fails and names it. This file holds
//! where the services are and the settings a test starts from; [`db`], [`redis`], [`pushers`]
//! and [`app`] hold the fixtures of each, [`partition`] a connection a test can cut, [`ports`] the
//! ports the processes a test starts listen on.

mod app;
mod db;
mod partition;
mod ports;
mod pushers;
mod redis;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use notifier::Settings;

pub use app::*;
pub use db::*;
pub use partition::*;
pub use ports::*;
pub use pushers::*;
pub use redis::*;

// Where the shared services are unless TEST_POSTGRES_URL, TEST_MYSQL_URL or TEST_REDIS_URL say
// otherwise; scripts/test has the same defaults, and compose's `test` profile publishes there.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The shared PostgreSQL's admin database.
pub fn postgres_admin_url() -> String {
    env_or("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
}

/// The shared MariaDB.
pub fn mysql_admin_url() -> String {
    env_or("TEST_MYSQL_URL", DEFAULT_MYSQL_URL)
}

/// The shared Redis.
pub fn redis_url() -> String {
    env_or("TEST_REDIS_URL", DEFAULT_REDIS_URL)
}

// An empty variable counts as unset, as in scripts/test (`${TEST_REDIS_URL:-...}`).
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `host:port` of a URL, for failure messages: the address says which server was meant, and a
/// password in the URL stays out of the output.
pub fn address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// The same server and credentials as `url`, on database `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    // Logs only when asked for: TEST_LOG=1 cargo test.
    if std::env::var_os("TEST_LOG").is_some() {
        notifier::init_logs(notifier::LogFormat::Pretty);
    }
});

/// Once per test process: logs when asked for, and the TLS crypto provider that reqwest and the
/// stand-in need (tests must not rely on another test having installed it first).
pub fn init_tracing() {
    LazyLock::force(&TRACING);
    notifier::install_crypto_provider();
}

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}_{:04x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u16(..)
    )
}

pub fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/notifier.toml")
}

/// Settings as the process would load them, with these variables as its environment.
pub fn settings_with(vars: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.entry("NOTIFIER_CONFIG".into())
        .or_insert_with(|| config_path().display().to_string());
    vars.entry("REDIS_URL".into()).or_insert_with(redis_url);
    Settings::load(|name| vars.get(name).cloned()).expect("test settings load")
}

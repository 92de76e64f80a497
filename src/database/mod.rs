//! The database behind the audience and content queries: PostgreSQL, MySQL/MariaDB or SQLite,
//! chosen by the `DATABASE_URL` scheme, with the reference schema's migrations for each.
//!
//! This file holds the pool and its settings. Queries come from the configuration, written with
//! named parameters (`:talk_id`): `query` translates one for the backend, `queries` holds the
//! configured three, `run` runs them and `record` reads rows by column name. Every value is
//! bound: event data never becomes SQL text.

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sqlx::ConnectOptions;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::redact::redact_url;

/// Runs the same code against whichever pool this is; each arm is type-checked for its backend.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::MySql($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

mod queries;
mod query;
mod record;
mod run;

pub use queries::Queries;
pub(crate) use queries::{AUDIENCE_PARAMS, check_queries};
pub(crate) use queries::{QueryConfigError, QuerySettings};
pub(crate) use query::{Param, PreparedQuery, QueryError};
pub(crate) use record::{FromRecord, Record};
pub use run::ReadEnd;
pub(crate) use run::RowSink;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Pool connections left to short statements (the talk, prune batches, readiness pings): an
/// audience read holds its connection for the whole read, so reads get the rest.
pub(crate) const SHORT_STATEMENT_CONNECTIONS: u32 = 2;

/// How many audience reads may be open at once in a pool of `max_connections` (at least one).
/// Each event reads with one per provider lane, so `3 × service.max_concurrent_events` more
/// connections than [`SHORT_STATEMENT_CONNECTIONS`] let every running event read at once; with
/// fewer, lanes wait their turn (first come, first served) and nothing deadlocks.
pub(crate) fn audience_reads(max_connections: u32) -> usize {
    max_connections
        .saturating_sub(SHORT_STATEMENT_CONNECTIONS)
        .max(1) as usize
}

/// The `[database]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub page_size: u32,
    pub retry_for_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MySql,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "mysql" | "mariadb" => Some(Backend::MySql),
            "sqlite" => Some(Backend::Sqlite),
            _ => None,
        }
    }

    /// What `:limit` is bound to now that the audience is read with one query: the backend's
    /// "no limit". PostgreSQL reads `LIMIT NULL` as `LIMIT ALL` and then plans for every row;
    /// MariaDB returns no row for a NULL limit and SQLite refuses one, so they get the largest
    /// BIGINT.
    pub fn no_limit(self) -> Param {
        match self {
            Backend::Postgres => Param::Int(None),
            Backend::MySql | Backend::Sqlite => Param::Int(Some(i64::MAX)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("query result is missing column {column} or it has the wrong type: {reason}")]
    Column { column: String, reason: String },
}

/// A connection pool to one of the supported backends.
#[derive(Clone, Debug)]
pub enum Database {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// sqlx logs a statement that takes over a second as a WARN. An audience read is one statement,
/// streamed for as long as its lane sends, so every event of more than a second's pushes logged
/// the audience query as slow, at 3 a.m. as at noon, with nothing wrong with the database. Slow
/// statements are logged at DEBUG (`RUST_LOG=sqlx=debug`), as every statement already is.
fn quiet<O: ConnectOptions>(options: O) -> O {
    options.log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1))
}

impl Database {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, DatabaseError> {
        let url = settings.url.as_str();
        let connect_err = |source| DatabaseError::Connect {
            url: redact_url(url),
            source,
        };
        // Fail fast at start-up and mid-event alike; the callers own the retry policy.
        let acquire = Duration::from_secs(10);
        let max = settings.max_connections;
        // An event reads its talk, each provider's audience and prunes at once: four
        // connections kept open, so an event does not wait for the server to start a backend
        // (measured up to 110 ms for PostgreSQL on a busy machine, before the first push).
        let min = max.min(4);
        let db = match Backend::from_url(url) {
            Some(Backend::Postgres) => Database::Postgres(
                PgPoolOptions::new()
                    .max_connections(max)
                    .min_connections(min)
                    .acquire_timeout(acquire)
                    .connect_with(quiet(PgConnectOptions::from_str(url).map_err(connect_err)?))
                    .await
                    .map_err(connect_err)?,
            ),
            Some(Backend::MySql) => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                let options = MySqlConnectOptions::from_str(&url).map_err(connect_err)?;
                Database::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(max)
                        .min_connections(min)
                        .acquire_timeout(acquire)
                        .connect_with(quiet(options))
                        .await
                        .map_err(connect_err)?,
                )
            }
            Some(Backend::Sqlite) => {
                let options = quiet(SqliteConnectOptions::from_str(url).map_err(connect_err)?)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // SQLite has one writer; pruning waits for it instead of failing.
                    .busy_timeout(Duration::from_secs(5));
                Database::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(acquire)
                        .connect_with(options)
                        .await
                        .map_err(connect_err)?,
                )
            }
            None => {
                return Err(connect_err(sqlx::Error::Configuration(
                    "unsupported DATABASE_URL scheme".into(),
                )));
            }
        };
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        match self {
            Database::Postgres(_) => Backend::Postgres,
            Database::MySql(_) => Backend::MySql,
            Database::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies the reference schema's migrations for this backend.
    pub async fn migrate(&self) -> Result<(), DatabaseError> {
        match self {
            Database::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            Database::MySql(pool) => MYSQL_MIGRATIONS.run(pool).await?,
            Database::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// A round trip, for readiness.
    pub async fn ping(&self) -> Result<(), DatabaseError> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_leave_two_connections_to_short_statements() {
        assert_eq!(audience_reads(10), 8);
        assert_eq!(audience_reads(3), 1);
        assert_eq!(audience_reads(1), 1, "a pool of one still reads");
    }

    #[test]
    fn backends_are_chosen_by_url_scheme() {
        assert_eq!(Backend::from_url("postgres://x/y"), Some(Backend::Postgres));
        assert_eq!(
            Backend::from_url("postgresql://x/y"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("mysql://root@h/test"),
            Some(Backend::MySql)
        );
        assert_eq!(
            Backend::from_url("sqlite://notifier.db"),
            Some(Backend::Sqlite)
        );
        assert_eq!(Backend::from_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("redis://x"), None);
    }
}

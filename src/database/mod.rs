//! The database behind the audience and content queries: PostgreSQL, MySQL/MariaDB or SQLite,
//! chosen by the `DATABASE_URL` scheme, with the reference schema's migrations for each.
//!
//! Queries come from the configuration, written with named parameters (`:talk_id`). They are
//! translated once at start-up into the backend's placeholders, and every value is bound: event
//! data never becomes SQL text. Rows are read by column name through [`Record`], which accepts
//! the integer widths real schemas use (INT, BIGINT, unsigned), so an app's own tables work
//! without casts.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::{AssertSqlSafe, Row};

use crate::config::{DatabaseSettings, QuerySettings, SettingsError, redact_url};

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Parameters the prune statement may use.
pub const PRUNE_PARAMS: &[&str] = &["device_ids", "tokens", "reason"];
/// Parameters the content query may use.
pub const CONTENT_PARAMS: &[&str] = &["talk_id", "program_id"];
/// Parameters the audience query may use.
pub const AUDIENCE_PARAMS: &[&str] = &[
    "talk_id",
    "program_id",
    "author_id",
    "after_id",
    "limit",
    "provider",
];

/// Pool connections left to short statements (the talk, prune batches, readiness pings): an
/// audience read holds its connection for the whole read, so reads get the rest.
pub const SHORT_STATEMENT_CONNECTIONS: u32 = 2;

/// How many audience reads may be open at once in a pool of `max_connections` (at least one).
/// Each event reads with one per provider lane, so `2 × service.max_concurrent_events` more
/// connections than [`SHORT_STATEMENT_CONNECTIONS`] let every running event read at once; with
/// fewer, lanes wait their turn (first come, first served) and nothing deadlocks.
pub fn audience_reads(max_connections: u32) -> usize {
    max_connections
        .saturating_sub(SHORT_STATEMENT_CONNECTIONS)
        .max(1) as usize
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
                    .connect(url)
                    .await
                    .map_err(connect_err)?,
            ),
            Some(Backend::MySql) => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                Database::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(max)
                        .min_connections(min)
                        .acquire_timeout(acquire)
                        .connect(&url)
                        .await
                        .map_err(connect_err)?,
                )
            }
            Some(Backend::Sqlite) => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(connect_err)?
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

    /// Runs a prepared query and decodes every row.
    pub async fn fetch_all<T: FromRecord>(
        &self,
        query: &PreparedQuery,
        values: &[(&str, Param)],
    ) -> Result<Vec<T>, DatabaseError> {
        let (sql, binds) = query.render(values);
        with_pool!(self, pool => {
            let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch_all(pool).await?;
            rows.iter().map(|row| T::from_record(row)).collect()
        })
    }

    /// Runs a prepared query on a connection of its own and hands each row to `sink` as it
    /// arrives: a result of any size is read with one query in bounded memory, because while the
    /// sink waits the rest stays in the server (TCP backpressure). The connection is held until
    /// the read ends. One left mid-result is closed rather than returned to the pool, which would
    /// first read and discard every remaining row.
    pub async fn stream<T, S>(
        &self,
        query: &PreparedQuery,
        values: &[(&str, Param)],
        sink: &mut S,
    ) -> Result<ReadEnd, DatabaseError>
    where
        T: FromRecord + Send,
        S: RowSink<T>,
    {
        let (sql, binds) = query.render(values);
        with_pool!(self, pool => {
            let mut held = Held { conn: pool.acquire().await?, done: false };
            let mut rows = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch(&mut *held.conn);
            while let Some(row) = rows.try_next().await? {
                if !sink.take(T::from_record(&row)?).await? {
                    return Ok(ReadEnd::Stopped);
                }
            }
            drop(rows);
            held.done = true;
            Ok(ReadEnd::Exhausted)
        })
    }

    /// Runs a prepared query and decodes the first row, if any.
    pub async fn fetch_optional<T: FromRecord>(
        &self,
        query: &PreparedQuery,
        values: &[(&str, Param)],
    ) -> Result<Option<T>, DatabaseError> {
        let (sql, binds) = query.render(values);
        with_pool!(self, pool => {
            let row = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch_optional(pool).await?;
            row.as_ref().map(|row| T::from_record(row)).transpose()
        })
    }

    /// Runs a prepared statement; returns the number of rows it changed.
    pub async fn execute(
        &self,
        query: &PreparedQuery,
        values: &[(&str, Param)],
    ) -> Result<u64, DatabaseError> {
        let (sql, binds) = query.render(values);
        with_pool!(self, pool => {
            let done = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).execute(pool).await?;
            Ok(done.rows_affected())
        })
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

/// What a streamed read does with each row, in order.
pub trait RowSink<T>: Send {
    /// Takes the next row; resolves to `false` to stop the read.
    fn take(&mut self, row: T) -> impl Future<Output = Result<bool, DatabaseError>> + Send;
}

/// How a streamed read ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// Every row was read.
    Exhausted,
    /// The sink wanted no more.
    Stopped,
}

/// A pool connection that a streamed read holds.
struct Held<DB: sqlx::Database> {
    conn: PoolConnection<DB>,
    done: bool,
}

impl<DB: sqlx::Database> Drop for Held<DB> {
    fn drop(&mut self) {
        // Mid-result (stopped, failed or cancelled): close it, which also ends the query.
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

/// A value bound to a named parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(Option<i64>),
    Text(Option<String>),
    /// A list, written inside `IN (...)`: it becomes one placeholder per element.
    Ints(Vec<i64>),
    Texts(Vec<String>),
}

/// One scalar to bind, after lists are expanded.
enum Bind {
    Int(Option<i64>),
    Text(Option<String>),
}

/// Binds each value in order; generic over the backend's query type.
fn bind_all<'q, DB>(
    mut q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for bind in binds {
        q = match bind {
            Bind::Int(v) => q.bind(v),
            Bind::Text(v) => q.bind(v),
        };
    }
    q
}

#[derive(Debug, Clone)]
enum Segment {
    Sql(String),
    Param(&'static str),
}

/// A configured query, translated for one backend.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    backend: Backend,
    segments: Vec<Segment>,
    /// The SQL when no list parameter changes its shape; built once.
    sql: Arc<str>,
}

/// Why a configured query cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown parameter :{0} (allowed: {1})")]
    UnknownParam(String, String),
    #[error("must use parameter :{0}")]
    MissingParam(&'static str),
    #[error("use named parameters (:name), not positional ones ({0})")]
    Positional(String),
}

impl PreparedQuery {
    /// Translates `:name` parameters into `backend`'s placeholders. String literals, quoted
    /// identifiers, comments and PostgreSQL `::` casts are left alone.
    pub fn new(
        sql: &str,
        backend: Backend,
        allowed: &[&'static str],
        required: &[&'static str],
    ) -> Result<Self, QueryError> {
        let chars: Vec<char> = sql.chars().collect();
        let mut out = String::with_capacity(sql.len() + 16);
        let mut params: Vec<&'static str> = Vec::new();
        let mut segments = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match c {
                '\'' | '"' | '`' => {
                    let end = quoted_end(&chars, i, backend);
                    out.extend(&chars[i..end]);
                    i = end;
                }
                '-' if next == Some('-') => {
                    let end = chars[i..]
                        .iter()
                        .position(|&c| c == '\n')
                        .map_or(chars.len(), |p| i + p);
                    out.extend(&chars[i..end]);
                    i = end;
                }
                '/' if next == Some('*') => {
                    let end = (i + 2..chars.len().saturating_sub(1))
                        .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                        .map_or(chars.len(), |j| j + 2);
                    out.extend(&chars[i..end]);
                    i = end;
                }
                ':' if next == Some(':') => {
                    out.push_str("::");
                    i += 2;
                }
                ':' if next.is_some_and(|n| n.is_ascii_alphabetic() || n == '_') => {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len()
                        && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                    {
                        end += 1;
                    }
                    let name: String = chars[start..end].iter().collect();
                    let Some(&known) = allowed.iter().find(|&&a| a == name) else {
                        return Err(QueryError::UnknownParam(name, allowed.join(", ")));
                    };
                    params.push(known);
                    segments.push(Segment::Sql(std::mem::take(&mut out)));
                    segments.push(Segment::Param(known));
                    i = end;
                }
                '?' => return Err(QueryError::Positional("?".into())),
                '$' if next.is_some_and(|n| n.is_ascii_digit()) => {
                    return Err(QueryError::Positional(format!("${}", next.unwrap_or('1'))));
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        if let Some(missing) = required.iter().find(|r| !params.contains(r)) {
            return Err(QueryError::MissingParam(missing));
        }
        segments.push(Segment::Sql(out));
        let mut query = Self {
            backend,
            segments,
            sql: Arc::from(""),
        };
        query.sql = query.render(&[]).0;
        Ok(query)
    }

    /// The SQL as sent when no parameter is a list.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The SQL for these values (lists expanded) and the scalars to bind, in order. A parameter
    /// without a value is bound as NULL.
    fn render(&self, values: &[(&str, Param)]) -> (Arc<str>, Vec<Bind>) {
        let has_list = values
            .iter()
            .any(|(_, v)| matches!(v, Param::Ints(_) | Param::Texts(_)));
        let mut sql = String::new();
        let mut binds = Vec::new();
        let backend = self.backend;
        let placeholder = |sql: &mut String, n: usize| match backend {
            Backend::Postgres => sql.push_str(&format!("${n}")),
            Backend::MySql | Backend::Sqlite => sql.push('?'),
        };
        for segment in &self.segments {
            let name = match segment {
                Segment::Sql(text) => {
                    sql.push_str(text);
                    continue;
                }
                Segment::Param(name) => name,
            };
            match values.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
                Some(Param::Ints(list)) => {
                    for (i, v) in list.iter().enumerate() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        binds.push(Bind::Int(Some(*v)));
                        placeholder(&mut sql, binds.len());
                    }
                }
                Some(Param::Texts(list)) => {
                    for (i, v) in list.iter().enumerate() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        binds.push(Bind::Text(Some(v.clone())));
                        placeholder(&mut sql, binds.len());
                    }
                }
                Some(Param::Text(v)) => {
                    binds.push(Bind::Text(v.clone()));
                    placeholder(&mut sql, binds.len());
                }
                Some(Param::Int(v)) => {
                    binds.push(Bind::Int(*v));
                    placeholder(&mut sql, binds.len());
                }
                None => {
                    binds.push(Bind::Int(None));
                    placeholder(&mut sql, binds.len());
                }
            }
        }
        // Without lists the text never changes: reuse it (and the server's statement cache).
        if !has_list && !self.sql.is_empty() {
            return (Arc::clone(&self.sql), binds);
        }
        (sql.into(), binds)
    }
}

/// Where a quoted string or identifier that opens at `start` ends (one past the closing quote).
fn quoted_end(chars: &[char], start: usize, backend: Backend) -> usize {
    let quote = chars[start];
    let mut j = start + 1;
    while j < chars.len() {
        if chars[j] == '\\' && quote == '\'' && backend == Backend::MySql {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            // A doubled quote is an escaped quote inside the literal.
            if chars.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    chars.len()
}

/// The configured queries, prepared for the database in use.
#[derive(Debug, Clone)]
pub struct Queries {
    pub content: PreparedQuery,
    pub audience: PreparedQuery,
    pub prune: PreparedQuery,
}

impl Queries {
    pub fn prepare(settings: &QuerySettings, backend: Backend) -> Result<Self, SettingsError> {
        let named = |key: &'static str| {
            move |e: QueryError| SettingsError {
                setting: format!("queries.{key}"),
                reason: e.to_string(),
            }
        };
        Ok(Self {
            content: PreparedQuery::new(&settings.content, backend, CONTENT_PARAMS, &["talk_id"])
                .map_err(named("content"))?,
            audience: PreparedQuery::new(
                &settings.audience,
                backend,
                AUDIENCE_PARAMS,
                // Without it a read cut midway could not resume where it stopped. `:limit` is
                // optional: queries written for page-by-page reads still work (see `no_limit`).
                &["after_id"],
            )
            .map_err(named("audience"))?,
            prune: PreparedQuery::new(&settings.prune, backend, PRUNE_PARAMS, &["device_ids"])
                .map_err(named("prune"))?,
        })
    }
}

/// Checks the configured queries at start-up, before any database is reached.
pub fn check_queries(settings: &QuerySettings) -> Result<(), SettingsError> {
    Queries::prepare(settings, Backend::Postgres).map(|_| ())
}

/// One result row, read by column name whatever the backend.
pub trait Record {
    /// An integer column of any width; `None` for SQL NULL.
    fn int(&self, column: &str) -> Result<Option<i64>, DatabaseError>;
    /// A text column; `None` for SQL NULL.
    fn text(&self, column: &str) -> Result<Option<String>, DatabaseError>;
    /// A timestamp column (with or without a time zone; naive ones are taken as UTC).
    fn timestamp(&self, column: &str) -> Result<Option<DateTime<Utc>>, DatabaseError>;
    fn has_column(&self, column: &str) -> bool;

    fn optional_timestamp(&self, column: &str) -> Result<Option<DateTime<Utc>>, DatabaseError> {
        if self.has_column(column) {
            self.timestamp(column)
        } else {
            Ok(None)
        }
    }

    fn required_int(&self, column: &str) -> Result<i64, DatabaseError> {
        self.int(column)?.ok_or_else(|| null_column(column))
    }
    fn required_text(&self, column: &str) -> Result<String, DatabaseError> {
        self.text(column)?.ok_or_else(|| null_column(column))
    }
    fn optional_int(&self, column: &str) -> Result<Option<i64>, DatabaseError> {
        if self.has_column(column) {
            self.int(column)
        } else {
            Ok(None)
        }
    }
    fn optional_text(&self, column: &str) -> Result<Option<String>, DatabaseError> {
        if self.has_column(column) {
            self.text(column)
        } else {
            Ok(None)
        }
    }
}

fn null_column(column: &str) -> DatabaseError {
    DatabaseError::Column {
        column: column.into(),
        reason: "it is NULL".into(),
    }
}

fn column_error(column: &str, e: sqlx::Error) -> DatabaseError {
    DatabaseError::Column {
        column: column.into(),
        reason: e.to_string(),
    }
}

/// A row type decoded from a [`Record`].
pub trait FromRecord: Sized {
    fn from_record(record: &dyn Record) -> Result<Self, DatabaseError>;
}

/// Tries i64, then each narrower or unsigned type in turn: the first that decodes the column wins.
macro_rules! first_decoding {
    ($row:expr, $col:expr; $($t:ty),*) => {{
        match $row.try_get::<Option<i64>, _>($col) {
            Ok(v) => Ok(v),
            Err(first_err) => {
                $( if let Ok(v) = $row.try_get::<Option<$t>, _>($col) {
                    return Ok(v.and_then(|v| i64::try_from(v).ok()));
                } )*
                Err(column_error($col, first_err))
            }
        }
    }};
}

/// The `Record` methods every backend implements alike.
macro_rules! record_common {
    () => {
        fn timestamp(&self, column: &str) -> Result<Option<DateTime<Utc>>, DatabaseError> {
            match self.try_get::<Option<DateTime<Utc>>, _>(column) {
                Ok(v) => Ok(v),
                Err(e) => match self.try_get::<Option<NaiveDateTime>, _>(column) {
                    Ok(v) => Ok(v.map(|n| n.and_utc())),
                    Err(_) => Err(column_error(column, e)),
                },
            }
        }
        fn has_column(&self, column: &str) -> bool {
            self.try_column(column).is_ok()
        }
    };
}

/// Text as PostgreSQL and SQLite return it (MySQL needs more).
macro_rules! record_text {
    () => {
        fn text(&self, column: &str) -> Result<Option<String>, DatabaseError> {
            self.try_get(column).map_err(|e| column_error(column, e))
        }
    };
}

impl Record for PgRow {
    record_common!();
    fn int(&self, column: &str) -> Result<Option<i64>, DatabaseError> {
        first_decoding!(self, column; i32, i16)
    }
    record_text!();
}

impl Record for MySqlRow {
    record_common!();
    fn int(&self, column: &str) -> Result<Option<i64>, DatabaseError> {
        first_decoding!(self, column; u64, i32, u32, i16, u16)
    }
    fn text(&self, column: &str) -> Result<Option<String>, DatabaseError> {
        match self.try_get::<Option<String>, _>(column) {
            Ok(v) => Ok(v),
            // Binary-collated VARCHAR (a common choice for tokens) arrives as bytes.
            Err(e) => match self.try_get::<Option<Vec<u8>>, _>(column) {
                Ok(v) => Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned())),
                Err(_) => Err(column_error(column, e)),
            },
        }
    }
}

impl Record for SqliteRow {
    record_common!();
    fn int(&self, column: &str) -> Result<Option<i64>, DatabaseError> {
        first_decoding!(self, column; )
    }
    record_text!();
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[&str] = &["talk_id", "program_id", "after_id"];

    #[test]
    fn named_parameters_become_each_backends_placeholders() {
        let sql = "SELECT * FROM t WHERE a = :talk_id AND b > :after_id OR a = :talk_id";
        let pg = PreparedQuery::new(sql, Backend::Postgres, ALL, &[]).unwrap();
        assert_eq!(
            pg.sql(),
            "SELECT * FROM t WHERE a = $1 AND b > $2 OR a = $3"
        );
        let my = PreparedQuery::new(sql, Backend::MySql, ALL, &[]).unwrap();
        assert_eq!(my.sql(), "SELECT * FROM t WHERE a = ? AND b > ? OR a = ?");
        let (_, binds) = my.render(&[
            ("after_id", Param::Int(Some(9))),
            ("talk_id", Param::Int(Some(4))),
        ]);
        let ints: Vec<_> = binds
            .iter()
            .map(|b| match b {
                Bind::Int(v) => *v,
                Bind::Text(_) => None,
            })
            .collect();
        assert_eq!(ints, vec![Some(4), Some(9), Some(4)]);
    }

    #[test]
    fn a_list_parameter_becomes_one_placeholder_per_element() {
        let sql = "UPDATE d SET r = :reason WHERE id IN (:device_ids) AND x = :reason";
        let q = PreparedQuery::new(sql, Backend::Postgres, PRUNE_PARAMS, &["device_ids"]).unwrap();
        let values = [
            ("device_ids", Param::Ints(vec![7, 8, 9])),
            ("reason", Param::Text(Some("r".into()))),
        ];
        let (rendered, binds) = q.render(&values);
        assert_eq!(
            &*rendered,
            "UPDATE d SET r = $1 WHERE id IN ($2, $3, $4) AND x = $5"
        );
        assert_eq!(binds.len(), 5);
        let my = PreparedQuery::new(sql, Backend::MySql, PRUNE_PARAMS, &[]).unwrap();
        assert_eq!(
            &*my.render(&values).0,
            "UPDATE d SET r = ? WHERE id IN (?, ?, ?) AND x = ?"
        );
    }

    #[test]
    fn literals_comments_and_casts_are_not_parameters() {
        let sql =
            "SELECT ':talk_id', \"a:b\", x::text -- :nope\n /* :nope */ FROM t WHERE id = :talk_id";
        let q = PreparedQuery::new(sql, Backend::Postgres, ALL, &[]).unwrap();
        assert_eq!(
            q.sql(),
            "SELECT ':talk_id', \"a:b\", x::text -- :nope\n /* :nope */ FROM t WHERE id = $1"
        );
        let doubled = PreparedQuery::new(
            "SELECT 'it''s :x' WHERE a = :talk_id",
            Backend::Sqlite,
            ALL,
            &[],
        );
        assert_eq!(doubled.unwrap().sql(), "SELECT 'it''s :x' WHERE a = ?");
    }

    #[test]
    fn unknown_missing_and_positional_parameters_are_refused() {
        let unknown = PreparedQuery::new("WHERE a = :user", Backend::Sqlite, ALL, &[]);
        assert!(matches!(unknown, Err(QueryError::UnknownParam(n, _)) if n == "user"));
        let missing = PreparedQuery::new("WHERE a = :talk_id", Backend::Sqlite, ALL, &["after_id"]);
        assert_eq!(missing.unwrap_err(), QueryError::MissingParam("after_id"));
        assert!(PreparedQuery::new("WHERE a = ?", Backend::MySql, ALL, &[]).is_err());
        assert!(PreparedQuery::new("WHERE a = $1", Backend::Postgres, ALL, &[]).is_err());
    }

    #[test]
    fn an_audience_query_needs_after_id_but_no_longer_limit() {
        let mut settings = QuerySettings {
            content: "SELECT 1 WHERE :talk_id = 1".into(),
            audience: "SELECT * FROM d WHERE id > :after_id ORDER BY id".into(),
            prune: "UPDATE d SET x = 1 WHERE id IN (:device_ids)".into(),
        };
        assert!(Queries::prepare(&settings, Backend::MySql).is_ok());
        settings.audience = "SELECT * FROM d ORDER BY id LIMIT :limit".into();
        let refused = Queries::prepare(&settings, Backend::MySql).unwrap_err();
        assert_eq!(refused.setting, "queries.audience");
        // "No limit" is a value each backend reads as such (see `no_limit`).
        assert_eq!(Backend::Postgres.no_limit(), Param::Int(None));
        assert_eq!(Backend::Sqlite.no_limit(), Param::Int(Some(i64::MAX)));
    }

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

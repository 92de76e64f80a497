//! Running a prepared query on whichever pool is in use: all rows, the first, a statement's
//! count, or a stream handed row by row to a sink. How a read holds and gives back its connection
//! is decided here.

use futures_util::TryStreamExt;
use sqlx::AssertSqlSafe;
use sqlx::pool::PoolConnection;

use super::query::bind_all;
use super::record::{Positioned, Positions};
use super::{Database, DatabaseError, FromRecord, Param, PreparedQuery};

impl Database {
    /// Runs a prepared query and decodes every row.
    pub async fn fetch_all<T: FromRecord>(
        &self,
        query: &PreparedQuery,
        values: &[(&str, Param)],
    ) -> Result<Vec<T>, DatabaseError> {
        let (sql, binds) = query.render(values);
        with_pool!(self, pool => {
            let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch_all(pool).await?;
            let positions = Positions::default();
            rows.iter().map(|row| T::from_record(&Positioned::new(row, &positions))).collect()
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
            // Looked up on the first row, read by position on every other.
            let positions = Positions::default();
            while let Some(row) = rows.try_next().await? {
                let decoded = T::from_record(&Positioned::new(&row, &positions))?;
                if !sink.take(decoded).await? {
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
            let positions = Positions::default();
            row.as_ref().map(|row| T::from_record(&Positioned::new(row, &positions))).transpose()
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

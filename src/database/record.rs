//! Rows read by column name whatever the backend: [`Record`] accepts the integer widths real
//! schemas use (INT, BIGINT, unsigned) and binary-collated text, so an app's own tables work
//! without casts. A new column type, or a backend's quirk in decoding one, goes here.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::postgres::{PgRow, Postgres};
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Row, ValueRef};

use super::DatabaseError;

/// One result row, read by column name whatever the backend.
pub trait Record {
    /// An integer column of any width; `None` for SQL NULL.
    fn int(&self, column: &str) -> Result<Option<i64>, DatabaseError>;
    /// A text column; `None` for SQL NULL.
    fn text(&self, column: &str) -> Result<Option<String>, DatabaseError> {
        Ok(self.str(column)?.map(Cow::into_owned))
    }
    /// A timestamp column (with or without a time zone; naive ones are taken as UTC).
    fn timestamp(&self, column: &str) -> Result<Option<DateTime<Utc>>, DatabaseError>;
    /// A text column read where it lies in the row, for a value that is only parsed (a
    /// provider, a platform): an audience row is read per push, and a copy each is an allocation.
    fn str(&self, column: &str) -> Result<Option<Cow<'_, str>>, DatabaseError>;
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
    fn required_str(&self, column: &str) -> Result<Cow<'_, str>, DatabaseError> {
        self.str(column)?.ok_or_else(|| null_column(column))
    }
    fn optional_str(&self, column: &str) -> Result<Option<Cow<'_, str>>, DatabaseError> {
        if self.has_column(column) {
            self.str(column)
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
        fn str(&self, column: &str) -> Result<Option<Cow<'_, str>>, DatabaseError> {
            let text: Option<&str> = self.try_get(column).map_err(|e| column_error(column, e))?;
            Ok(text.map(Cow::Borrowed))
        }
    };
}

/// PostgreSQL's ids of the types an audience row's columns usually have.
mod pg_type {
    pub(super) const INT2: u32 = 21;
    pub(super) const INT4: u32 = 23;
    pub(super) const INT8: u32 = 20;
    /// `text`, `varchar`, `bpchar`, `name` and `unknown` (an untyped literal): every type sqlx
    /// reads as `&str` but `citext`, which has no fixed id.
    pub(super) const TEXT: [u32; 5] = [25, 1043, 1042, 19, 705];
}

/// The column decoded as `T` without sqlx's check that `T` can read its type, when the column's
/// type is one of `types`, which `T` is known to read: that check builds and compares a list of
/// type descriptions for every column of every row, about a quarter of an audience row's decoding.
/// `None` for any other type, or no such column: the checked read then decodes it or names what
/// is wrong, as before.
fn pg_known<'r, T: Decode<'r, Postgres>>(
    row: &'r PgRow,
    column: &str,
    types: &[u32],
) -> Option<Result<Option<T>, DatabaseError>> {
    let value = row.try_get_raw(column).ok()?;
    if value.is_null() {
        return Some(Ok(None));
    }
    let oid = value.type_info().oid()?.0;
    if !types.contains(&oid) {
        return None;
    }
    Some(
        T::decode(value)
            .map(Some)
            .map_err(|e| DatabaseError::Column {
                column: column.into(),
                reason: e.to_string(),
            }),
    )
}

impl Record for PgRow {
    record_common!();
    fn int(&self, column: &str) -> Result<Option<i64>, DatabaseError> {
        if let Some(read) = pg_known::<i64>(self, column, &[pg_type::INT8]) {
            return read;
        }
        if let Some(read) = pg_known::<i32>(self, column, &[pg_type::INT4]) {
            return read.map(|v| v.map(i64::from));
        }
        if let Some(read) = pg_known::<i16>(self, column, &[pg_type::INT2]) {
            return read.map(|v| v.map(i64::from));
        }
        first_decoding!(self, column; i32, i16)
    }
    fn str(&self, column: &str) -> Result<Option<Cow<'_, str>>, DatabaseError> {
        if let Some(read) = pg_known::<&str>(self, column, &pg_type::TEXT) {
            return read.map(|text| text.map(Cow::Borrowed));
        }
        let text: Option<&str> = self.try_get(column).map_err(|e| column_error(column, e))?;
        Ok(text.map(Cow::Borrowed))
    }
}

impl Record for MySqlRow {
    record_common!();
    fn int(&self, column: &str) -> Result<Option<i64>, DatabaseError> {
        first_decoding!(self, column; u64, i32, u32, i16, u16)
    }
    fn str(&self, column: &str) -> Result<Option<Cow<'_, str>>, DatabaseError> {
        match self.try_get::<Option<&str>, _>(column) {
            Ok(v) => Ok(v.map(Cow::Borrowed)),
            // Binary-collated VARCHAR (a common choice for tokens) arrives as bytes.
            Err(e) => match self.try_get::<Option<&[u8]>, _>(column) {
                Ok(v) => Ok(v.map(String::from_utf8_lossy)),
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

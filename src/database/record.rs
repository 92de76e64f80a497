//! Rows read by column name whatever the backend: [`Record`] accepts the integer widths real
//! schemas use (INT, BIGINT, unsigned) and binary-collated text, so an app's own tables work
//! without casts. A new column type, or a backend's quirk in decoding one, goes here.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::postgres::{PgRow, PgValueRef, Postgres};
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

/// The column's value and its type's id, looked up once: `Some(None)` for SQL NULL, `None` for
/// no such column or a type without a fixed id (the checked read then names what is wrong).
/// Columns of the types in [`pg_type`] are decoded from it without sqlx's check that the Rust
/// type can read them: that check builds and compares a list of type descriptions for every
/// column of every row, about a quarter of an audience row's decoding.
fn pg_typed<'r>(row: &'r PgRow, column: &str) -> Option<Option<(PgValueRef<'r>, u32)>> {
    let value = row.try_get_raw(column).ok()?;
    if value.is_null() {
        return Some(None);
    }
    let oid = value.type_info().oid()?.0;
    Some(Some((value, oid)))
}

/// A value decoded from a known type, its error named by column as the checked read's are.
fn pg_decode<'r, T: Decode<'r, Postgres>>(
    value: PgValueRef<'r>,
    column: &str,
) -> Result<T, DatabaseError> {
    T::decode(value).map_err(|e| DatabaseError::Column {
        column: column.into(),
        reason: e.to_string(),
    })
}

impl Record for PgRow {
    record_common!();
    fn int(&self, column: &str) -> Result<Option<i64>, DatabaseError> {
        match pg_typed(self, column) {
            Some(None) => Ok(None),
            Some(Some((value, pg_type::INT8))) => pg_decode::<i64>(value, column).map(Some),
            Some(Some((value, pg_type::INT4))) => {
                pg_decode::<i32>(value, column).map(|v| Some(v.into()))
            }
            Some(Some((value, pg_type::INT2))) => {
                pg_decode::<i16>(value, column).map(|v| Some(v.into()))
            }
            _ => first_decoding!(self, column; i32, i16),
        }
    }
    fn str(&self, column: &str) -> Result<Option<Cow<'_, str>>, DatabaseError> {
        match pg_typed(self, column) {
            Some(None) => Ok(None),
            Some(Some((value, oid))) if pg_type::TEXT.contains(&oid) => {
                pg_decode::<&str>(value, column).map(|text| Some(Cow::Borrowed(text)))
            }
            _ => {
                let text: Option<&str> =
                    self.try_get(column).map_err(|e| column_error(column, e))?;
                Ok(text.map(Cow::Borrowed))
            }
        }
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

//! Rows read by column name whatever the backend: [`Record`] accepts the integer widths real
//! schemas use (INT, BIGINT, unsigned) and binary-collated text, so an app's own tables work
//! without casts, and a read finds each name's position once ([`Positions`]), not per row. A new
//! column type, or a backend's quirk in decoding one, goes here.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::postgres::{PgRow, PgValueFormat, PgValueRef, Postgres};
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, ColumnIndex, Decode, Row, Type, ValueRef};

use super::DatabaseError;

/// One result row, read by column name whatever the backend.
pub trait Record {
    /// An integer column of any width; `None` for SQL NULL.
    fn int(&self, column: &'static str) -> Result<Option<i64>, DatabaseError>;
    /// A text column; `None` for SQL NULL.
    fn text(&self, column: &'static str) -> Result<Option<String>, DatabaseError> {
        Ok(self.str(column)?.map(Cow::into_owned))
    }
    /// A timestamp column (with or without a time zone; naive ones are taken as UTC).
    fn timestamp(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, DatabaseError>;
    /// A text column read where it lies in the row, for a value that is only parsed (a
    /// provider, a platform): an audience row is read per push, and a copy each is an allocation.
    fn str(&self, column: &'static str) -> Result<Option<Cow<'_, str>>, DatabaseError>;
    fn has_column(&self, column: &'static str) -> bool;

    fn optional_timestamp(
        &self,
        column: &'static str,
    ) -> Result<Option<DateTime<Utc>>, DatabaseError> {
        if self.has_column(column) {
            self.timestamp(column)
        } else {
            Ok(None)
        }
    }

    fn required_int(&self, column: &'static str) -> Result<i64, DatabaseError> {
        self.int(column)?.ok_or_else(|| null_column(column))
    }
    fn required_text(&self, column: &'static str) -> Result<String, DatabaseError> {
        self.text(column)?.ok_or_else(|| null_column(column))
    }
    fn optional_int(&self, column: &'static str) -> Result<Option<i64>, DatabaseError> {
        if self.has_column(column) {
            self.int(column)
        } else {
            Ok(None)
        }
    }
    fn optional_text(&self, column: &'static str) -> Result<Option<String>, DatabaseError> {
        if self.has_column(column) {
            self.text(column)
        } else {
            Ok(None)
        }
    }
    fn required_str(&self, column: &'static str) -> Result<Cow<'_, str>, DatabaseError> {
        self.str(column)?.ok_or_else(|| null_column(column))
    }
    fn optional_str(&self, column: &'static str) -> Result<Option<Cow<'_, str>>, DatabaseError> {
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

/// Where each column a read has asked for lies in its rows (`None`: the result has no such
/// column). Every row of one result has the same columns, so a read looks each name up in sqlx's
/// map once instead of for every row: by name, a column cost a keyed hash and a probe, about 100
/// instructions, and an audience row asks for thirteen. A row's columns are asked for in the
/// same order every time, so the one asked for is nearly always the last one found or the one
/// after it; and a name is a `&'static str` from the same place in the code every time, so it is
/// known by its address (one name at two addresses is two entries, each right).
#[derive(Default)]
pub(crate) struct Positions {
    known: RefCell<Vec<(&'static str, Option<usize>)>>,
    last: Cell<usize>,
}

impl Positions {
    #[inline]
    fn of<R: Row>(&self, row: &R, column: &'static str) -> Option<usize>
    where
        for<'a> &'a str: ColumnIndex<R>,
    {
        let last = self.last.get();
        {
            let known = self.known.borrow();
            for i in [last, last + 1] {
                if let Some(&(name, at)) = known.get(i)
                    && std::ptr::eq(name, column)
                {
                    self.last.set(i);
                    return at;
                }
            }
        }
        self.find(row, column)
    }

    /// A column out of the usual order, or asked for the first time.
    #[cold]
    fn find<R: Row>(&self, row: &R, column: &'static str) -> Option<usize>
    where
        for<'a> &'a str: ColumnIndex<R>,
    {
        let mut known = self.known.borrow_mut();
        let i = match known
            .iter()
            .position(|&(name, _)| std::ptr::eq(name, column))
        {
            Some(i) => i,
            None => {
                let at = row.try_column(column).ok().map(|c| c.ordinal());
                known.push((column, at));
                known.len() - 1
            }
        };
        self.last.set(i);
        known[i].1
    }
}

/// A row of a result whose column positions are kept in `positions`: the [`Record`] of every
/// backend.
pub(crate) struct Positioned<'r, R> {
    row: &'r R,
    positions: &'r Positions,
}

impl<'r, R: Row> Positioned<'r, R>
where
    usize: ColumnIndex<R>,
    for<'a> &'a str: ColumnIndex<R>,
{
    pub(crate) fn new(row: &'r R, positions: &'r Positions) -> Self {
        Self { row, positions }
    }

    /// The column decoded as `T`, read where it lies; sqlx's error, when it fails, says where.
    fn at<T>(&self, column: &'static str) -> Result<T, sqlx::Error>
    where
        T: Decode<'r, R::Database> + Type<R::Database>,
    {
        match self.positions.of(self.row, column) {
            Some(at) => self.row.try_get(at),
            None => Err(sqlx::Error::ColumnNotFound(column.into())),
        }
    }

    /// As [`Self::at`], but an error names the column: read by name again, it fails again, and
    /// sqlx's error then says which column rather than where it lies.
    fn get<T>(&self, column: &'static str) -> Result<T, DatabaseError>
    where
        T: Decode<'r, R::Database> + Type<R::Database>,
    {
        self.at(column)
            .or_else(|_| self.row.try_get(column))
            .map_err(|e| column_error(column, e))
    }
}

/// Tries i64, then each narrower or unsigned type in turn: the first that decodes the column wins.
macro_rules! first_decoding {
    ($row:expr, $col:expr; $($t:ty),*) => {{
        if let Ok(v) = $row.at::<Option<i64>>($col) {
            return Ok(v);
        }
        $( if let Ok(v) = $row.at::<Option<$t>>($col) {
            return Ok(v.and_then(|v| i64::try_from(v).ok()));
        } )*
        $row.get::<Option<i64>>($col)
    }};
}

/// A timestamp column read through sqlx's type check: with a time zone, or naive and taken as UTC.
macro_rules! checked_timestamp {
    ($row:expr, $col:expr) => {{
        if let Ok(v) = $row.at::<Option<DateTime<Utc>>>($col) {
            return Ok(v);
        }
        match $row.at::<Option<NaiveDateTime>>($col) {
            Ok(v) => Ok(v.map(|n| n.and_utc())),
            Err(_) => $row.get::<Option<DateTime<Utc>>>($col),
        }
    }};
}

/// The `Record` methods every backend implements alike.
macro_rules! record_common {
    () => {
        fn has_column(&self, column: &'static str) -> bool {
            self.positions.of(self.row, column).is_some()
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
    pub(super) const TIMESTAMPTZ: u32 = 1184;
    pub(super) const TIMESTAMP: u32 = 1114;
}

impl<'r> Positioned<'r, PgRow> {
    /// The column's value and its type's id: `Some(None)` for SQL NULL, `None` for no such
    /// column or a type without a fixed id (the checked read then names what is wrong). Columns
    /// of the types in [`pg_type`] are decoded from it without sqlx's check that the Rust type
    /// can read them: that check builds and compares a list of type descriptions for every
    /// column of every row, about a quarter of an audience row's decoding.
    fn typed(&self, column: &'static str) -> Option<Option<(PgValueRef<'r>, u32)>> {
        let value = self
            .row
            .try_get_raw(self.positions.of(self.row, column)?)
            .ok()?;
        if value.is_null() {
            return Some(None);
        }
        let oid = value.type_info().oid()?.0;
        Some(Some((value, oid)))
    }
}

/// Microseconds from 1970 to 2000, PostgreSQL's epoch.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A binary `timestamp` or `timestamptz` (microseconds since 2000, UTC) read straight into a
/// `DateTime<Utc>`: sqlx builds its epoch from a calendar date for every value, then adds a
/// duration and converts through a fixed offset, about 400 instructions an audience row. `None`
/// for the text format, which sqlx reads; a value chrono cannot hold ('infinity') is named, where
/// sqlx's addition would panic.
fn pg_binary_timestamp(
    value: &PgValueRef<'_>,
    column: &str,
) -> Option<Result<DateTime<Utc>, DatabaseError>> {
    if value.format() != PgValueFormat::Binary {
        return None;
    }
    let micros = value
        .as_bytes()
        .ok()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(i64::from_be_bytes);
    let at = micros
        .and_then(|m| m.checked_add(PG_EPOCH_UNIX_MICROS))
        .and_then(DateTime::from_timestamp_micros);
    Some(at.ok_or_else(|| DatabaseError::Column {
        column: column.into(),
        reason: "a timestamp out of range (infinity?)".into(),
    }))
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

impl Record for Positioned<'_, PgRow> {
    record_common!();
    fn int(&self, column: &'static str) -> Result<Option<i64>, DatabaseError> {
        match self.typed(column) {
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
    fn timestamp(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, DatabaseError> {
        match self.typed(column) {
            Some(None) => Ok(None),
            Some(Some((value, oid @ (pg_type::TIMESTAMPTZ | pg_type::TIMESTAMP)))) => {
                if let Some(at) = pg_binary_timestamp(&value, column) {
                    return at.map(Some);
                }
                if oid == pg_type::TIMESTAMPTZ {
                    pg_decode::<DateTime<Utc>>(value, column).map(Some)
                } else {
                    pg_decode::<NaiveDateTime>(value, column).map(|n| Some(n.and_utc()))
                }
            }
            _ => checked_timestamp!(self, column),
        }
    }
    fn str(&self, column: &'static str) -> Result<Option<Cow<'_, str>>, DatabaseError> {
        match self.typed(column) {
            Some(None) => Ok(None),
            Some(Some((value, oid))) if pg_type::TEXT.contains(&oid) => {
                // Checked as sqlx checks it, but vectorised: a token is read per push, and std's
                // check of its 160-odd bytes was about 1 % of the notifier's instructions. What
                // fails the check goes through sqlx, whose error says what is wrong.
                let checked = value.as_bytes().ok().map(simdutf8::basic::from_utf8);
                match checked {
                    Some(Ok(text)) => Ok(Some(Cow::Borrowed(text))),
                    _ => pg_decode::<&str>(value, column).map(|text| Some(Cow::Borrowed(text))),
                }
            }
            _ => Ok(self.get::<Option<&str>>(column)?.map(Cow::Borrowed)),
        }
    }
}

impl Record for Positioned<'_, MySqlRow> {
    record_common!();
    fn timestamp(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, DatabaseError> {
        checked_timestamp!(self, column)
    }
    fn int(&self, column: &'static str) -> Result<Option<i64>, DatabaseError> {
        first_decoding!(self, column; u64, i32, u32, i16, u16)
    }
    fn str(&self, column: &'static str) -> Result<Option<Cow<'_, str>>, DatabaseError> {
        if let Ok(v) = self.at::<Option<&str>>(column) {
            return Ok(v.map(Cow::Borrowed));
        }
        // Binary-collated VARCHAR (a common choice for tokens) arrives as bytes.
        match self.at::<Option<&[u8]>>(column) {
            Ok(v) => Ok(v.map(String::from_utf8_lossy)),
            Err(_) => Ok(self.get::<Option<&str>>(column)?.map(Cow::Borrowed)),
        }
    }
}

impl Record for Positioned<'_, SqliteRow> {
    record_common!();
    fn timestamp(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, DatabaseError> {
        checked_timestamp!(self, column)
    }
    fn int(&self, column: &'static str) -> Result<Option<i64>, DatabaseError> {
        first_decoding!(self, column; )
    }
    fn str(&self, column: &'static str) -> Result<Option<Cow<'_, str>>, DatabaseError> {
        Ok(self.get::<Option<&str>>(column)?.map(Cow::Borrowed))
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    /// Two rows through one [`Positions`], their columns asked for in an order that changes,
    /// twice, and one that is not there.
    #[tokio::test]
    async fn each_column_is_read_from_its_own_position_whatever_order_it_is_asked_for_in() {
        let pool = SqlitePoolOptions::new()
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let rows =
            sqlx::query("SELECT 1 AS id, 'a' AS name, NULL AS note UNION ALL SELECT 2, 'b', 'n'")
                .fetch_all(&pool)
                .await
                .unwrap();
        let positions = Positions::default();
        let read = |row| -> Vec<String> {
            let r = Positioned::new(row, &positions);
            vec![
                format!("{:?}", r.int("id").unwrap()),
                format!("{:?}", r.str("name").unwrap()),
                format!("{:?}", r.text("note").unwrap()),
                format!("{}", r.has_column("missing")),
                format!("{:?}", r.str("name").unwrap()),
                format!("{:?}", r.int("id").unwrap()),
            ]
        };

        assert_eq!(
            read(&rows[0]),
            [
                "Some(1)",
                "Some(\"a\")",
                "None",
                "false",
                "Some(\"a\")",
                "Some(1)"
            ]
        );
        assert_eq!(
            read(&rows[1]),
            [
                "Some(2)",
                "Some(\"b\")",
                "Some(\"n\")",
                "false",
                "Some(\"b\")",
                "Some(2)"
            ]
        );
        let r = Positioned::new(&rows[1], &positions);
        let missing = r.required_int("missing").unwrap_err().to_string();
        assert!(missing.contains("missing"), "{missing}");
        assert_eq!(
            positions.known.borrow().len(),
            4,
            "each name looked up once"
        );
    }
}

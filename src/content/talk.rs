//! The talk an event names, read through the configured content query: its titles for the
//! templates, its program and author for the audience.
//!
//! A talk that is missing, or that belongs to another program than the event says, is an
//! unknown talk: the event is skipped rather than retried, since waiting will not make it right.

use crate::database::{Database, DatabaseError, FromRecord, Param, PreparedQuery, Record};
use crate::event::TalkPosted;

use super::Talk;

/// The content query's columns, without the talk id (the caller knows it).
#[derive(Debug)]
struct TalkRow {
    program_id: i64,
    author_id: Option<i64>,
    talk_title: String,
    program_title: String,
}

impl FromRecord for TalkRow {
    fn from_record(r: &dyn Record) -> Result<Self, DatabaseError> {
        Ok(Self {
            program_id: r.required_int("program_id")?,
            author_id: r.int("author_id")?,
            talk_title: r.required_text("talk_title")?,
            program_title: r.required_text("program_title")?,
        })
    }
}

/// Why an event's talk cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TalkError {
    #[error("reading the talk failed")]
    Read(#[source] DatabaseError),
    #[error("talk {talk_id} not found")]
    Unknown { talk_id: i64 },
    #[error("event says program {given} but talk {talk_id} belongs to program {actual}")]
    ProgramMismatch {
        talk_id: i64,
        given: i64,
        actual: i64,
    },
}

impl TalkError {
    /// Missing, or another program's: skip the event. Only a failed read is worth retrying.
    pub fn is_unknown(&self) -> bool {
        !matches!(self, TalkError::Read(_))
    }
}

/// Reads the event's talk with the content query (`query`, prepared for `db`'s backend).
pub async fn load_talk(
    db: &Database,
    query: &PreparedQuery,
    event: &TalkPosted,
) -> Result<Talk, TalkError> {
    let params = [
        ("talk_id", Param::Int(Some(event.talk_id))),
        ("program_id", Param::Int(event.program_id)),
    ];
    let row: Option<TalkRow> = db
        .fetch_optional(query, &params)
        .await
        .map_err(TalkError::Read)?;
    let row = row.ok_or(TalkError::Unknown {
        talk_id: event.talk_id,
    })?;
    // Notifying the wrong program's audience is worse than not notifying: refuse.
    if let Some(given) = event.program_id.filter(|p| *p != row.program_id) {
        return Err(TalkError::ProgramMismatch {
            talk_id: event.talk_id,
            given,
            actual: row.program_id,
        });
    }
    Ok(Talk {
        talk_id: event.talk_id,
        program_id: row.program_id,
        author_id: row.author_id,
        talk_title: row.talk_title,
        program_title: row.program_title,
    })
}

//! Who gets the push: the recipient devices of a talk, read page by page from the configured
//! audience query in ascending device id order (keyset paging).
//!
//! A page is bounded by `database.page_size`, so memory does not grow with the audience; the
//! fan-out fetches the next page while the current one is being sent. Each device comes once:
//! a device that the query returns twice (say, through a join) is dropped here.

use chrono::{DateTime, Utc};

use crate::database::{Database, DatabaseError, FromRecord, Param, PreparedQuery, Record};

/// The push provider that reaches a device (`devices.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Fcm,
    Apns,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "fcm" => Some(Provider::Fcm),
            "apns" => Some(Provider::Apns),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Fcm => "fcm",
            Provider::Apns => "apns",
        }
    }
}

/// A recipient device, as the audience query returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: i64,
    pub user_id: Option<i64>,
    /// `None` when the row names a provider the notifier does not know; such a device is skipped.
    pub provider: Option<Provider>,
    pub platform: Option<String>,
    pub token: String,
    pub locale: Option<String>,
    /// When the token was last registered, if the query says.
    pub updated_at: Option<DateTime<Utc>>,
}

impl FromRecord for Device {
    fn from_record(r: &dyn Record) -> Result<Self, DatabaseError> {
        Ok(Self {
            id: r.required_int("device_id")?,
            user_id: r.optional_int("user_id")?,
            provider: Provider::parse(&r.required_text("provider")?),
            platform: r.optional_text("platform")?,
            token: r.required_text("token")?,
            locale: r.optional_text("locale")?,
            updated_at: r.optional_timestamp("updated_at")?,
        })
    }
}

/// The recipients of one talk, read one page at a time.
pub struct Audience {
    db: Database,
    query: PreparedQuery,
    talk_id: i64,
    program_id: i64,
    author_id: Option<i64>,
    page_size: u32,
    /// Only this provider's devices, when set.
    provider: Option<Provider>,
    /// The keyset cursor: the highest device id read so far.
    after_id: i64,
    exhausted: bool,
}

impl Audience {
    pub fn new(
        db: Database,
        query: PreparedQuery,
        talk_id: i64,
        program_id: i64,
        author_id: Option<i64>,
        page_size: u32,
    ) -> Self {
        Self {
            db,
            query,
            talk_id,
            program_id,
            author_id,
            page_size,
            provider: None,
            after_id: 0,
            exhausted: false,
        }
    }

    /// Only this provider's devices: bound as `:provider` when the query uses it, and checked
    /// on every row either way.
    pub fn only(mut self, provider: Provider) -> Self {
        self.provider = Some(provider);
        self
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Starts after this device id instead of the beginning (for resuming an event).
    pub fn resume_after(mut self, device_id: i64) -> Self {
        self.after_id = device_id;
        self
    }

    /// The next page of devices, or `None` when the audience is exhausted. A failed read leaves
    /// the cursor where it was, so the call can simply be retried.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Device>>, DatabaseError> {
        // Rows of another provider may fill whole pages; read on until one has devices for us.
        while !self.exhausted {
            let page = self.read_page().await?;
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }

    async fn read_page(&mut self) -> Result<Vec<Device>, DatabaseError> {
        let rows: Vec<Device> = self
            .db
            .fetch_all(
                &self.query,
                &[
                    ("talk_id", Param::Int(Some(self.talk_id))),
                    ("program_id", Param::Int(Some(self.program_id))),
                    ("author_id", Param::Int(self.author_id)),
                    ("after_id", Param::Int(Some(self.after_id))),
                    ("limit", Param::Int(Some(i64::from(self.page_size)))),
                    (
                        "provider",
                        Param::Text(self.provider.map(|p| p.as_str().to_string())),
                    ),
                ],
            )
            .await?;
        // Work on a copy of the cursor: a page that fails validation must leave it untouched, so
        // a retry reads the same page again.
        let mut cursor = self.after_id;
        let mut page = Vec::with_capacity(rows.len());
        let full = rows.len() >= self.page_size as usize;
        let any = !rows.is_empty();
        for device in rows {
            if device.id < cursor {
                return Err(DatabaseError::Column {
                    column: "device_id".into(),
                    reason: "rows must come in ascending device_id order (ORDER BY device_id)"
                        .into(),
                });
            }
            if device.id == cursor {
                continue; // the same device again (a duplicate row, or an inclusive cursor)
            }
            cursor = device.id;
            if self.provider.is_none() || device.provider == self.provider {
                page.push(device);
            }
        }
        // A short page is the last; a full page may be followed by more. A full page that did not
        // move the cursor would be read forever.
        self.exhausted = !full || !any || cursor == self.after_id;
        self.after_id = cursor;
        Ok(page)
    }
}

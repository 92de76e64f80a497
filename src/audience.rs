//! Who gets the push: the recipient devices of a talk, streamed from the configured audience
//! query in ascending device id order, one query per lane (and per resumed read).
//!
//! One query per page (keyset paging) is linear only when the database can read rows in id order
//! from an index; when it cannot (no planner statistics yet, or an app's query ordered by an
//! expression or through a join), every page sorts the whole remaining audience and an event costs
//! O(N²/page). One streamed query sorts, at worst, once. Rows are handed on in pages of
//! `database.page_size`, and while a page waits the query waits too, so memory does not grow with
//! the audience. A read that fails midway resumes after the last device handed on. Each device
//! comes once: a device that the query returns twice (say, through a join) is dropped here.

pub(crate) use crate::device::{Device, PerProvider, Platform, Provider};

use std::sync::{Arc, Mutex};

use tracing::{Span, warn};

use crate::apps::{AppId, AppNames};
use crate::database::{
    Database, DatabaseError, FromRecord, Param, PreparedQuery, ReadEnd, Record, RowSink,
};

/// A row as read: the device, and the app it names (`None`: NULL, or no `app` column), resolved
/// to an [`AppId`] by the reader before the device is handed on.
struct DeviceRow {
    device: Device,
    app: Option<String>,
}

impl FromRecord for DeviceRow {
    fn from_record(r: &dyn Record) -> Result<Self, DatabaseError> {
        let device = Device {
            id: r.required_int("device_id")?,
            user_id: r.optional_int("user_id")?,
            provider: Provider::parse(&r.required_str("provider")?),
            platform: r.optional_str("platform")?.as_deref().map(Platform::parse),
            app: None,
            token: r.required_text("token")?,
            locale: r.optional_text("locale")?,
            updated_at: r.optional_timestamp("updated_at")?,
        };
        Ok(Self {
            device,
            app: r.optional_text("app")?,
        })
    }
}

/// The apps an event's rows resolve against, shared by its lanes, with the unknown app names
/// already warned about: one WARN per event and name, not one per device.
#[derive(Clone)]
pub struct AppResolver {
    names: AppNames,
    warned: Arc<Mutex<Vec<String>>>,
    /// The event's span, made when the resolver was: rows are read outside it (see the lane's
    /// reader), and the warning must still name the event.
    span: Span,
}

impl Default for AppResolver {
    fn default() -> Self {
        Self::new(AppNames::default())
    }
}

impl AppResolver {
    /// A resolver for one event (its own record of warnings), warning in the current span.
    pub fn new(names: AppNames) -> Self {
        Self {
            names,
            warned: Arc::default(),
            span: Span::current(),
        }
    }

    fn resolve(&self, name: Option<&str>) -> Option<AppId> {
        let app = self.names.resolve(name);
        if let (None, Some(name)) = (app, name) {
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            if !warned.iter().any(|w| w == name) {
                warned.push(name.to_string());
                self.span.in_scope(|| warn!(app = %name.escape_debug(),
                    "Devices name an app this notifier does not serve: they are skipped and counted (configure [apps.NAME], or fix the devices' app)."));
            }
        }
        app
    }
}

/// Where a streamed audience hands its pages.
pub trait PageSink: Send {
    /// Takes a page of devices; resolves to `false` when no more are wanted.
    fn page(&mut self, page: Vec<Device>) -> impl Future<Output = bool> + Send;
}

/// The recipients of one talk, streamed a page at a time.
pub struct Audience {
    db: Database,
    query: PreparedQuery,
    talk_id: i64,
    program_id: i64,
    author_id: Option<i64>,
    page_size: u32,
    /// Only this provider's devices, when set.
    provider: Option<Provider>,
    /// Where the next read starts: the highest device id handed on so far.
    after_id: i64,
    /// The last device id to read (a job's range), if any.
    upto: Option<i64>,
    apps: AppResolver,
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
            upto: None,
            apps: AppResolver::default(),
        }
    }

    /// Resolves each row's `app` against these apps (by default, every device is the default
    /// app's unless its row names another app, which is then unknown).
    pub fn apps(mut self, apps: AppResolver) -> Self {
        self.apps = apps;
        self
    }

    /// Stops after this device id (the end of a job's range): later rows end the read.
    pub fn until(mut self, device_id: Option<i64>) -> Self {
        self.upto = device_id;
        self
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

    /// The highest device id handed on so far: where the next read starts.
    pub fn after_id(&self) -> i64 {
        self.after_id
    }

    /// Reads the rest of the audience with one query, handing it to `sink` page by page. A read
    /// that fails leaves the position after the last page handed on, so calling again resumes
    /// there: no device is handed on twice, none is skipped.
    pub async fn stream<S: PageSink>(&mut self, sink: &mut S) -> Result<ReadEnd, DatabaseError> {
        let values = [
            ("talk_id", Param::Int(Some(self.talk_id))),
            ("program_id", Param::Int(Some(self.program_id))),
            ("author_id", Param::Int(self.author_id)),
            ("after_id", Param::Int(Some(self.after_id))),
            ("limit", self.db.backend().no_limit()),
            (
                "provider",
                Param::Text(self.provider.map(|p| p.as_str().to_string())),
            ),
        ];
        let mut pager = Pager {
            sink,
            page: Vec::new(),
            page_size: self.page_size.max(1) as usize,
            provider: self.provider,
            cursor: self.after_id,
            handed: &mut self.after_id,
            upto: self.upto,
            past_upto: false,
            apps: &self.apps,
        };
        let end = self.db.stream(&self.query, &values, &mut pager).await?;
        // Past the range's end is the range's end: the rest belongs to other jobs.
        let end = if pager.past_upto {
            ReadEnd::Exhausted
        } else {
            end
        };
        if end == ReadEnd::Exhausted && !pager.flush().await {
            return Ok(ReadEnd::Stopped);
        }
        Ok(end)
    }
}

/// Cuts the rows of one read into pages, checking their order on the way.
struct Pager<'a, S> {
    sink: &'a mut S,
    page: Vec<Device>,
    page_size: usize,
    provider: Option<Provider>,
    /// The last device id read.
    cursor: i64,
    /// The last device id handed on (with every row before it): where a retry starts.
    handed: &'a mut i64,
    upto: Option<i64>,
    /// A row past `upto` came: the read ends there.
    past_upto: bool,
    apps: &'a AppResolver,
}

impl<S: PageSink> Pager<'_, S> {
    /// Hands on the page being filled, if any; `false` when the sink wants no more.
    async fn flush(&mut self) -> bool {
        let page = std::mem::replace(&mut self.page, Vec::with_capacity(self.page_size));
        let more = page.is_empty() || self.sink.page(page).await;
        // Taken, even by a sink that wants no more: the next read starts after it.
        *self.handed = self.cursor;
        more
    }
}

impl<S: PageSink> RowSink<DeviceRow> for Pager<'_, S> {
    async fn take(&mut self, row: DeviceRow) -> Result<bool, DatabaseError> {
        let DeviceRow { mut device, app } = row;
        if device.id < self.cursor {
            return Err(DatabaseError::Column {
                column: "device_id".into(),
                reason: "rows must come in ascending device_id order (ORDER BY device_id)".into(),
            });
        }
        if device.id == self.cursor {
            return Ok(true); // the same device again (a duplicate row, or an inclusive cursor)
        }
        if self.upto.is_some_and(|upto| device.id > upto) {
            self.past_upto = true;
            return Ok(false);
        }
        self.cursor = device.id;
        if self.provider.is_none() || device.provider == self.provider {
            device.app = self.apps.resolve(app.as_deref());
            if self.page.capacity() == 0 {
                self.page.reserve_exact(self.page_size);
            }
            self.page.push(device);
        }
        if self.page.len() >= self.page_size {
            return Ok(self.flush().await);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::AppName;

    #[test]
    fn an_unknown_app_is_warned_about_once_per_event_across_its_lanes() {
        let names = AppNames::new([AppName::parse("lite").unwrap()]);
        let event = AppResolver::new(names.clone());
        let other_lane = event.clone();
        assert_eq!(event.resolve(None), Some(AppId::DEFAULT));
        assert_eq!(event.resolve(Some("lite")), names.resolve(Some("lite")));
        for resolver in [&event, &other_lane, &event] {
            assert_eq!(resolver.resolve(Some("gone")), None);
        }
        assert_eq!(other_lane.resolve(Some("old")), None);
        let warned = event.warned.lock().unwrap().clone();
        assert_eq!(
            warned,
            ["gone", "old"],
            "one warning per name, shared by the lanes"
        );
        let next_event = AppResolver::new(names);
        assert!(next_event.warned.lock().unwrap().is_empty());
    }
}

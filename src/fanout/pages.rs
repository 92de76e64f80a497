//! A lane's reader: streams the lane's source into a channel of pages, counting what is held. An
//! audience read that fails resumes after the last device handed on, with backoff, until the
//! database has failed for the configured time without progress; devices known already are cut
//! into pages as they are.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tracing::warn;

use super::Source;
use super::tally::Tally;
use crate::audience::{Audience, Device, PageSink};
use crate::backoff::Backoff;
use crate::database::{DatabaseError, ReadEnd};

/// A page of devices, or the read's final failure.
pub(super) type Page = Result<Vec<Device>, DatabaseError>;

/// Hands a lane's pages to its channel, counting what is held.
struct LaneSink<'a> {
    pages: &'a mpsc::Sender<Page>,
    tally: &'a Tally,
}

impl PageSink for LaneSink<'_> {
    async fn page(&mut self, page: Vec<Device>) -> bool {
        let n = page.len();
        self.tally.progress.count_read(n);
        self.tally.buffer(n);
        self.pages.send(Ok(page)).await.is_ok()
    }
}

/// Devices known already go in pages of this many.
const DEVICES_PER_PAGE: usize = 500;

/// Hands the lane's source to `pages`.
pub(super) async fn read_pages(
    source: Source,
    pages: mpsc::Sender<Page>,
    reads: Arc<Semaphore>,
    retry_for: Duration,
    tally: Arc<Tally>,
) {
    match source {
        Source::Audience(audience) => read_audience(audience, pages, reads, retry_for, tally).await,
        Source::Devices(devices) => {
            let mut sink = LaneSink {
                pages: &pages,
                tally: &tally,
            };
            let mut devices = devices.into_iter().peekable();
            while devices.peek().is_some() {
                let page: Vec<Device> = devices.by_ref().take(DEVICES_PER_PAGE).collect();
                if !sink.page(page).await {
                    return;
                }
            }
            tally.progress.lane_read();
        }
    }
}

/// Streams the audience into `pages`. A read that fails is resumed after the last device handed
/// on, with backoff, until it has failed for `retry_for` without progress. The lane aborts this
/// task when it stops, which closes the read's connection.
async fn read_audience(
    mut audience: Audience,
    pages: mpsc::Sender<Page>,
    reads: Arc<Semaphore>,
    retry_for: Duration,
    tally: Arc<Tally>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing_since = None;
    loop {
        let before = audience.after_id();
        let Ok(slot) = reads.acquire().await else {
            return; // never closed
        };
        tally.count_query();
        let mut sink = LaneSink {
            pages: &pages,
            tally: &tally,
        };
        let result = audience.stream(&mut sink).await;
        drop(slot);
        let e = match result {
            Ok(ReadEnd::Exhausted) => {
                tally.progress.lane_read();
                return;
            }
            Ok(ReadEnd::Stopped) => return,
            Err(e) => e,
        };
        // A read cut after it made progress (a killed connection, or MariaDB's net_write_timeout
        // ending the query of a lane held up by its provider) is not a failing database.
        if audience.after_id() > before {
            failing_since = None;
            backoff.reset();
        }
        let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
        // A column the query does not return, or cannot be read as its type, is the query's or
        // the schema's: read again, it fails again at the same row.
        let permanent = matches!(e, DatabaseError::Column { .. });
        if permanent || since.elapsed() >= retry_for {
            let _ = pages.send(Err(e)).await;
            return;
        }
        let delay = backoff.next_delay();
        tally.span.in_scope(|| {
            warn!(error = %e, after_id = audience.after_id(),
            retry_in_ms = delay.as_millis() as u64,
            "Reading the audience failed; resuming after the last device read.")
        });
        tokio::time::sleep(delay).await;
    }
}

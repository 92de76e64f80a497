//! A shard: the slot one connection lives in, the gate that keeps the streams on that
//! connection within the server's limit, and which shard a request goes through ([`pick`]).
//! What may change here: how the gate follows the limit, and when a request spills over; the
//! slot's locking is on every request's path and should stay a read lock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::Http2Error;

/// Streams one connection carries at once, at most, whatever the server allows: what Google's
/// front ends allow, and past this more connections (shards) spread the load better than more
/// streams on one.
pub(crate) const STREAMS_PER_CONNECTION: usize = 100;

#[derive(Default)]
pub(crate) struct Shard {
    /// The current connection: read (to clone the handle) by every request, from every worker
    /// thread; written only when a connection is dialled or dropped.
    live: RwLock<Option<Live>>,
    /// Held while dialling, with the last failed dial.
    pub(crate) dialing: tokio::sync::Mutex<Option<(Instant, Http2Error)>>,
}

/// A connection that is up, as requests hold it: cloned per request, so a reference count and
/// nothing more. Cloning or dropping h2's `SendRequest` takes the connection's stream-table lock,
/// the one its task holds while it reads and writes frames; a request used to clone it twice and
/// drop it twice (1 % of the notifier's CPU in the profile, and waits on that lock). Now requests
/// reuse the handles of [`Live::handle`].
#[derive(Clone)]
pub(crate) struct Live(Arc<Connection>);

pub(crate) struct Connection {
    send: SendRequest<Bytes>,
    /// Handles to open streams with, each used by one request at a time and given back after
    /// (see [`Live::handle`]).
    handles: Mutex<Vec<SendRequest<Bytes>>>,
    /// One permit per stream the connection may carry now.
    pub(crate) streams: StreamGate,
    /// Set by the connection's task when it ends.
    pub(crate) closed: Arc<AtomicBool>,
    /// Requests started on it, for the idle check.
    pub(crate) used: Arc<AtomicU64>,
}

impl std::ops::Deref for Live {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl Live {
    pub(crate) fn new(
        send: SendRequest<Bytes>,
        closed: Arc<AtomicBool>,
        used: Arc<AtomicU64>,
    ) -> Self {
        Self(Arc::new(Connection {
            streams: StreamGate::new(&send),
            handles: Mutex::new(Vec::new()),
            send,
            closed,
            used,
        }))
    }

    /// A handle of its own for one request (opening a stream takes `&mut`): one given back by
    /// an earlier request, or a new clone, about one per stream in flight, made once.
    pub(crate) fn handle(&self) -> SendRequest<Bytes> {
        let reused = self
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        reused.unwrap_or_else(|| self.send.clone())
    }

    /// Keeps `handle` for the next request, once its request is sent. A stream h2 still holds
    /// pending open is waited for by the next request's `poll_ready`, as on a fresh clone.
    pub(crate) fn give_back(&self, handle: SendRequest<Bytes>) {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        if handles.len() < STREAMS_PER_CONNECTION {
            handles.push(handle);
        }
    }

    /// Whether `closed` is this connection's flag.
    pub(crate) fn is(&self, closed: &Arc<AtomicBool>) -> bool {
        Arc::ptr_eq(&self.closed, closed)
    }

    pub(crate) fn send(&self) -> &SendRequest<Bytes> {
        &self.send
    }
}

impl Shard {
    pub(crate) fn current(&self) -> Option<Live> {
        self.current_if(|_| true)
    }

    /// The connection, if one is up and `wanted` takes it: looked at under the read lock and
    /// cloned only when taken.
    pub(crate) fn current_if(&self, wanted: impl Fn(&Live) -> bool) -> Option<Live> {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        live.as_ref()
            .filter(|l| !l.closed.load(Ordering::Relaxed) && wanted(l))
            .cloned()
    }

    pub(crate) fn install(&self, live: Live) {
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = Some(live);
    }

    /// Drops `dead` as the shard's connection, unless another has already replaced it.
    pub(crate) fn forget(&self, dead: &Live) {
        self.forget_by(&dead.closed);
    }

    pub(crate) fn forget_by(&self, closed: &Arc<AtomicBool>) {
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        if live.as_ref().is_some_and(|l| l.is(closed)) {
            *live = None;
        }
    }
}

/// The shard for `key`: its own, unless that connection is up with every stream busy and
/// another's is up with one free, with the connection when one is up (the first attempt uses
/// it). Keys do not always spread evenly: an event half through APNs gives FCM every other device
/// id (half of its connections), and hashed device tokens crowd some connections more than
/// others; a push waiting for a stream of a full connection waits a whole provider round trip
/// (10,000 devices at 200 ms, half through APNs: last push 2.29 → 2.08 s). Spilling over dials
/// nothing: it only uses connections already up.
pub(crate) fn pick(shards: &[Arc<Shard>], key: u64) -> (&Arc<Shard>, Option<Live>) {
    let count = shards.len();
    let index = (key % count as u64) as usize;
    let home = &shards[index];
    let live = home.current();
    if live.as_ref().is_some_and(|live| live.streams.is_full()) {
        for shard in (1..count).map(|step| &shards[(index + step) % count]) {
            if let Some(free) = shard.current_if(|live| !live.streams.is_full()) {
                return (shard, Some(free));
            }
        }
    }
    (home, live)
}

/// The streams a connection may carry at once: the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
/// or [`STREAMS_PER_CONNECTION`], whichever is lower, followed as the server changes it (APNs
/// allows one stream until the first request with a valid token, then raises it).
///
/// A request waits for a permit before its stream exists, so a request that times out waiting
/// never reaches the wire: h2's own queue would send it later and reset it at once, and bursts of
/// those look like a rapid-reset attack.
pub(crate) struct StreamGate {
    permits: Semaphore,
    /// The limit the permits are sized for: read without a lock on every release, changed
    /// under the lock.
    limit: AtomicUsize,
    resizing: Mutex<()>,
    /// Permits to take back as they are returned, after the limit fell below the streams open.
    owed: AtomicUsize,
}

impl StreamGate {
    /// A gate sized for what the connection allows now (its SETTINGS already applied).
    pub(crate) fn new(send: &SendRequest<Bytes>) -> Self {
        let limit = allowed(send);
        Self {
            permits: Semaphore::new(limit),
            limit: AtomicUsize::new(limit),
            resizing: Mutex::new(()),
            owed: AtomicUsize::new(0),
        }
    }

    /// Waits for a stream to be free. The limit is read again first when none is, so a raise
    /// is seen even if it arrived while nothing was in flight.
    pub(crate) async fn enter<'a>(&'a self, send: &'a SendRequest<Bytes>) -> StreamPermit<'a> {
        if self.is_full() {
            self.follow(send);
        }
        StreamPermit {
            gate: self,
            send,
            // The semaphore is never closed.
            permit: self.permits.acquire().await.ok(),
        }
    }

    /// Whether every stream the connection may carry now is taken.
    pub(crate) fn is_full(&self) -> bool {
        self.permits.available_permits() == 0
    }

    /// Resizes the permits to what the server allows now.
    fn follow(&self, send: &SendRequest<Bytes>) {
        let wanted = allowed(send);
        if wanted == self.limit.load(Ordering::Relaxed) {
            return;
        }
        let _resizing = self.resizing.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = self.limit.swap(wanted, Ordering::Relaxed);
        if wanted > limit {
            let more = wanted - limit;
            let owed = self
                .owed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                    Some(o - o.min(more))
                })
                .unwrap_or_default();
            self.permits.add_permits(more - owed.min(more));
        } else if wanted < limit {
            let fewer = limit - wanted;
            let unavailable = fewer - self.permits.forget_permits(fewer);
            self.owed.fetch_add(unavailable, Ordering::Relaxed);
        }
    }

    /// Gives a stream back, or keeps it if the limit fell since it was taken.
    fn release(&self, permit: SemaphorePermit<'_>) {
        let owed = self
            .owed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1));
        if owed.is_ok() {
            permit.forget();
        }
    }
}

fn allowed(send: &SendRequest<Bytes>) -> usize {
    send.current_max_send_streams().min(STREAMS_PER_CONNECTION)
}

/// One stream's place on the connection, given back when dropped.
pub(crate) struct StreamPermit<'a> {
    gate: &'a StreamGate,
    send: &'a SendRequest<Bytes>,
    permit: Option<SemaphorePermit<'a>>,
}

impl Drop for StreamPermit<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.gate.release(permit);
        }
        // A finished stream is when a new SETTINGS is most likely in: APNs raises its limit
        // with the answer to the first request.
        self.gate.follow(self.send);
    }
}

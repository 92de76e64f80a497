//! One connection's state, as APNs keeps it: the provider token it last accepted and when that
//! token changed (Apple refuses a new token within 20 minutes of the last change on a connection
//! with 429 TooManyProviderTokenUpdates), how many requests it has carried, and the two connection
//! behaviours `frames` puts on the wire (a stream limit raised after the first answer, a GOAWAY
//! after a number of streams). Handlers find it in the request's extensions.
//!
//! What may change here: when the behaviours trigger; the token rule is Apple's.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::counters::Counters;

pub(crate) struct Conn {
    counters: Arc<Counters>,
    /// Streams advertised at first, when lower than the configured limit.
    initial_streams: Option<u32>,
    /// The configured limit, advertised after the first answer when `initial_streams` is set.
    max_streams: u32,
    /// What the client has been told it may have open at once.
    advertised: AtomicU32,
    raise_due: AtomicBool,
    /// Requests after which the connection goes away.
    goaway_after: Option<u64>,
    /// Wakes the serve loop to let hyper finish the streams left and close.
    pub(crate) shutdown: Notify,
    in_flight: AtomicU64,
    /// The provider token last accepted here, and when it became the connection's token
    /// (stand-in clock, seconds).
    token: Mutex<Option<(String, u64)>>,
}

/// What a connection says of a provider token it is sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenChange {
    /// The connection's token, or the first, or a change after the window.
    Accepted,
    /// A different token within the window of the last change.
    TooSoon,
}

impl Conn {
    pub(crate) fn new(
        counters: Arc<Counters>,
        initial_streams: Option<u32>,
        max_streams: u32,
        goaway_after: Option<u64>,
    ) -> Self {
        let initial = initial_streams.filter(|n| *n < max_streams);
        Self {
            counters,
            initial_streams: initial,
            max_streams,
            advertised: AtomicU32::new(initial.unwrap_or(max_streams)),
            raise_due: AtomicBool::new(false),
            goaway_after: goaway_after.filter(|n| *n > 0),
            shutdown: Notify::new(),
            in_flight: AtomicU64::new(0),
            token: Mutex::new(None),
        }
    }

    /// Whether the wire needs rewriting at all.
    pub(crate) fn shapes_frames(&self) -> bool {
        self.initial_streams.is_some() || self.goaway_after.is_some()
    }

    pub(crate) fn max_streams(&self) -> u32 {
        self.max_streams
    }

    pub(crate) fn initial_streams(&self) -> Option<u32> {
        self.initial_streams
    }

    /// A request arrived: counts it against the advertised limit.
    pub(crate) fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        if now > u64::from(self.advertised.load(Ordering::Relaxed)) {
            self.counters
                .stream_limit_exceeded
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Its answer is ready: the first one raises the limit.
    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.initial_streams.is_some() {
            self.raise_due.store(true, Ordering::Relaxed);
        }
    }

    /// The requests (streams read) after which the connection goes away, if it does.
    pub(crate) fn goaway_after(&self) -> Option<u64> {
        self.goaway_after
    }

    /// The connection decided to go away: hyper is told to finish what it has and close.
    pub(crate) fn going_away(&self) {
        self.counters.goaways.fetch_add(1, Ordering::Relaxed);
        self.shutdown.notify_one();
    }

    /// The limit to advertise now, once the first answer is out.
    pub(crate) fn raise_due(&self) -> Option<u32> {
        self.raise_due
            .load(Ordering::Relaxed)
            .then_some(self.max_streams)
    }

    /// The client has been sent a new limit.
    pub(crate) fn advertise(&self, streams: u32) {
        self.advertised.store(streams, Ordering::Relaxed);
    }

    pub(crate) fn refused_after_goaway(&self) {
        self.counters
            .refused_after_goaway
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Judges `token` as the connection's next provider token, at `now` (seconds), with
    /// `window` seconds between changes.
    pub(crate) fn token_change(&self, token: &str, now: u64, window: u64) -> TokenChange {
        let mut current = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some((known, _)) if known == token => TokenChange::Accepted,
            Some((_, since)) if now.saturating_sub(*since) < window => TokenChange::TooSoon,
            previous => {
                if previous.is_some() {
                    self.counters.token_updates.fetch_add(1, Ordering::Relaxed);
                }
                *current = Some((token.to_string(), now));
                TokenChange::Accepted
            }
        }
    }
}

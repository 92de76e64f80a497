//! Work and its owner: every unit of work (an event, one job of a split event, one notification of
//! `POST /push`) is claimed in Redis by one run at a time, under a lease and a fencing epoch, and
//! everything that records its progress checks that epoch.
//!
//! - [`claims`]: the claim store: claim, renew, checkpoint, release, finish, take over, cancel;
//!   each a Lua script (`lua/*.lua`) reading Redis's clock, so replicas never compare their own;
//! - [`fence`] and [`keeper`]: what a run holds while it sends. The keeper renews the claim every
//!   second and tells the fence; a run admits a push only while its fence is open, so a run that
//!   lost its claim (frozen past its lease, cut off, taken over) or whose event was cancelled
//!   starts no further push;
//! - [`stream`]: the one Redis Stream consumer (the event stream, the jobs, the push backlog);
//! - [`plan`] and [`totals`]: a split event's jobs, cut once and stored before they are queued,
//!   and their counts added up for the event's one summary;
//! - [`keys`]: where each of these lives. Work is kept per deployment and per send mode
//!   (`Settings::work_prefix`): a replica takes, finishes and acknowledges only its own mode's.
//!
//! A change to a script's keys or replies changes what replicas of different versions agree on:
//! note it in the README's changelog.

pub(crate) mod claims;
pub(crate) mod fence;
pub(crate) mod keeper;
pub(crate) mod keys;
pub(crate) mod plan;
pub(crate) mod stream;
pub(crate) mod totals;

pub(crate) use claims::{ClaimError, Claims, Counts, Held, TakenOver};
pub(crate) use fence::Fence;
pub(crate) use keeper::{Keeper, retry_redis};
pub(crate) use keys::{Unit, WorkKeys};

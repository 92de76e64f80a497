//! Where a deployment's work lives in Redis, under `Settings::work_prefix` (the deployment's
//! hash tag, then the send mode for all but live): one key kind per line below, so no id a
//! publisher chooses can make one unit's key another's.
//!
//! - `event:{id}`: an event's claim; `dry-run-event:{id}` for an event that asked for a dry run
//!   on a replica that is not one (never the live event's claim);
//! - `job:{n}:{event_id}`: job `n` of a split event; `plan:{event_id}` its cut points and the
//!   stream entries of its jobs; `totals:{event_id}` the jobs' counts added up;
//! - `push:{entry}`: one accepted `POST /push` notification, by its backlog entry;
//! - `events:active` (units a scan may take over), `events:recent` (the console's list);
//! - `jobs` and `api:push`: the job stream and the push backlog;
//! - `idem:{route}:{digest}`: an `Idempotency-Key`'s first answer; `api:queued:{id}`: an event
//!   posted over HTTP and not yet claimed; `replicas`: each replica's heartbeat.

/// A unit of work a scan or a status names: an event's claim, relative to the work prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unit {
    /// An event, run in the replica's own mode.
    Event(String),
    /// An event that asked for a dry run, on a replica that sends (live or validate).
    DryRunEvent(String),
}

impl Unit {
    /// The unit a member of the recent set names; `None` for a member it does not know.
    pub(crate) fn from_member(member: &str) -> Option<Self> {
        if let Some(id) = member.strip_prefix("event:") {
            return Some(Unit::Event(id.to_string()));
        }
        member
            .strip_prefix("dry-run-event:")
            .map(|id| Unit::DryRunEvent(id.to_string()))
    }

    pub(crate) fn event_id(&self) -> &str {
        match self {
            Unit::Event(id) | Unit::DryRunEvent(id) => id,
        }
    }

    /// Its member in the active and recent sets, and its key after the prefix.
    pub(crate) fn member(&self) -> String {
        match self {
            Unit::Event(id) => format!("event:{id}"),
            Unit::DryRunEvent(id) => format!("dry-run-event:{id}"),
        }
    }
}

/// The keys of one deployment's work in one send mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkKeys {
    prefix: String,
}

impl WorkKeys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn unit(&self, unit: &Unit) -> String {
        format!("{}{}", self.prefix, unit.member())
    }

    pub(crate) fn event(&self, event_id: &str) -> String {
        self.unit(&Unit::Event(event_id.to_string()))
    }

    pub(crate) fn job(&self, event_id: &str, number: u32) -> String {
        format!("{}{number}:{event_id}", self.job_prefix())
    }

    /// What every job claim key starts with, for the cancel script that settles unstarted jobs.
    pub(crate) fn job_prefix(&self) -> String {
        format!("{}job:", self.prefix)
    }

    pub(crate) fn push(&self, entry: &str) -> String {
        format!("{}push:{entry}", self.prefix)
    }

    pub(crate) fn plan(&self, event_id: &str) -> String {
        format!("{}plan:{event_id}", self.prefix)
    }

    pub(crate) fn totals(&self, event_id: &str) -> String {
        format!("{}totals:{event_id}", self.prefix)
    }

    pub(crate) fn active(&self) -> String {
        format!("{}events:active", self.prefix)
    }

    pub(crate) fn recent(&self) -> String {
        format!("{}events:recent", self.prefix)
    }

    pub(crate) fn jobs(&self) -> String {
        format!("{}jobs", self.prefix)
    }

    pub(crate) fn backlog(&self) -> String {
        format!("{}api:push", self.prefix)
    }

    pub(crate) fn queued(&self, event_id: &str) -> String {
        format!("{}api:queued:{event_id}", self.prefix)
    }

    /// Each replica's heartbeat (a hash by replica name) and when each was last seen (a sorted
    /// set scored by Redis's clock).
    pub(crate) fn replicas(&self) -> (String, String) {
        let key = format!("{}replicas", self.prefix);
        (key.clone(), format!("{key}:seen"))
    }

    /// An `Idempotency-Key`'s record for a route; the key itself is hashed, so any bytes a
    /// client sends make a key of fixed length.
    pub(crate) fn idempotency(&self, route: &str, key: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}idem:{route}:{hex}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_event_id_makes_one_unit_s_key_another_s() {
        let keys = WorkKeys::new("n:{channel:t}:");
        // Ids that collided when jobs and dry runs were suffixes of the event's id.
        assert_ne!(keys.event("x#j0"), keys.job("x", 0));
        assert_ne!(
            keys.event("x:dry-run"),
            keys.unit(&Unit::DryRunEvent("x".into()))
        );
        assert_ne!(keys.event("x:jobs"), keys.totals("x"));
        assert_eq!(keys.job("a:b", 3), "n:{channel:t}:job:3:a:b");
        let dry = Unit::DryRunEvent("e".into());
        assert_eq!(Unit::from_member(&dry.member()), Some(dry));
        assert_eq!(
            Unit::from_member("e#j1"),
            None,
            "an older release's job claim"
        );
        assert_eq!(
            keys.idempotency("push", "k").len(),
            keys.idempotency("push", "k2").len()
        );
    }
}

//! What a fan-out did ([`FanoutReport`], per app [`AppReport`]), for the unit's summary line and
//! its claim, and how a split event's jobs add theirs up: [`FanoutReport::totals`] is what a job
//! stores, [`FanoutReport::from_totals`] reads the sum back. A new count is a field here and a
//! row in `totals`/`from_totals`.

use crate::work::Counts;

/// What a fan-out did, for the event summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutReport {
    /// Devices that got an outcome: sent, failed, pruned or skipped.
    pub recipients: u64,
    pub sent: u64,
    pub failed: u64,
    /// Devices whose token the provider declared dead, queued for disabling.
    pub pruned: u64,
    pub skipped: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// What was paused because a provider rejected our credentials: `fcm`, `fcm:ios+web`, `apns`
    /// for the default app, `NAME/fcm` (and so on) for another.
    pub paused: Vec<String>,
    /// Audience pages read, all lanes together.
    pub pages: u64,
    /// Audience queries run, all lanes together: one per lane, plus one per read resumed after a
    /// failure.
    pub queries: u64,
    /// Most devices held in memory at once, read but not yet handed to a push task.
    pub peak_buffered: usize,
    /// The fan-out was stopped (shutdown) before the whole audience was reached.
    pub interrupted: bool,
    /// The event was cut into this many jobs for every replica instead of sent here (0: not).
    pub jobs: u32,
    /// Each app's outcomes, the default first; empty when only the default app is configured.
    pub apps: Vec<AppReport>,
    /// Devices skipped because their row names an app this process does not serve (counted in
    /// `skipped` too).
    pub unknown_app: u64,
}

/// One app's share of a [`FanoutReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppReport {
    /// `default` for the top-level `[fcm]` and `[apns]`.
    pub app: String,
    pub sent: u64,
    pub failed: u64,
    pub pruned: u64,
    pub skipped: u64,
}

impl AppReport {
    fn fields(&self) -> [(&'static str, u64); 4] {
        [
            ("sent", self.sent),
            ("failed", self.failed),
            ("pruned", self.pruned),
            ("skipped", self.skipped),
        ]
    }

    fn set(&mut self, field: &str, value: u64) {
        match field {
            "sent" => self.sent = value,
            "failed" => self.failed = value,
            "pruned" => self.pruned = value,
            "skipped" => self.skipped = value,
            _ => {}
        }
    }
}

impl FanoutReport {
    /// The counts a job adds to its event's totals (in Redis): the report's, and each app's as
    /// `app:NAME:sent` and so on.
    pub(crate) fn totals(&self) -> Counts {
        let mut totals: Vec<(String, u64)> = [
            ("recipients", self.recipients),
            ("sent", self.sent),
            ("failed", self.failed),
            ("pruned", self.pruned),
            ("skipped", self.skipped),
            ("retries", self.retries),
            ("unknown_app", self.unknown_app),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        for a in &self.apps {
            for (field, value) in a.fields() {
                totals.push((format!("app:{}:{field}", a.app), value));
            }
        }
        totals
    }

    /// A report from the totals of an event's jobs (see [`FanoutReport::totals`]), sorted by
    /// name.
    pub(crate) fn from_totals(totals: &[(String, u64)]) -> Self {
        let count = |name: &str| {
            totals
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v)
        };
        let mut apps: Vec<AppReport> = Vec::new();
        for (key, value) in totals {
            let Some((app, field)) = key.strip_prefix("app:").and_then(|k| k.rsplit_once(':'))
            else {
                continue;
            };
            if apps.last().is_none_or(|a| a.app != app) {
                apps.push(AppReport {
                    app: app.to_string(),
                    ..AppReport::default()
                });
            }
            if let Some(last) = apps.last_mut() {
                last.set(field, *value);
            }
        }
        // The default app first, then by name, as a single run reports them.
        apps.sort_by(|a, b| {
            let key = |r: &AppReport| (r.app != crate::apps::DEFAULT_APP, r.app.clone());
            key(a).cmp(&key(b))
        });
        Self {
            recipients: count("recipients"),
            sent: count("sent"),
            failed: count("failed"),
            pruned: count("pruned"),
            skipped: count("skipped"),
            retries: count("retries"),
            unknown_app: count("unknown_app"),
            apps,
            ..Self::default()
        }
    }

    /// The per-app detail of the summary line: `default sent=3 failed=0 pruned=0 skipped=0;
    /// lite sent=2 …`, then `unknown skipped=N` when devices named an app not served. `None`
    /// with only the default app and no unknown one.
    pub fn apps_detail(&self) -> Option<String> {
        if self.apps.is_empty() && self.unknown_app == 0 {
            return None;
        }
        let mut parts: Vec<String> = self
            .apps
            .iter()
            .map(|a| {
                format!(
                    "{} sent={} failed={} pruned={} skipped={}",
                    a.app, a.sent, a.failed, a.pruned, a.skipped
                )
            })
            .collect();
        if self.unknown_app > 0 {
            parts.push(format!("unknown skipped={}", self.unknown_app));
        }
        Some(parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_apps_counts_survive_the_round_trip_through_a_split_events_totals() {
        let app = |app: &str, sent, skipped| AppReport {
            app: app.into(),
            sent,
            failed: 1,
            pruned: 0,
            skipped,
        };
        let report = FanoutReport {
            recipients: 12,
            sent: 9,
            failed: 2,
            skipped: 1,
            unknown_app: 1,
            apps: vec![app("default", 5, 0), app("lite-2", 4, 0), app("lite", 0, 0)],
            ..FanoutReport::default()
        };
        // Two jobs' counts added up, as the Redis script does, read back sorted by name.
        let mut totals = std::collections::BTreeMap::new();
        for _ in 0..2 {
            for (k, v) in report.totals() {
                *totals.entry(k).or_insert(0) += v;
            }
        }
        let totals: Counts = totals.into_iter().collect();
        let back = FanoutReport::from_totals(&totals);
        assert_eq!((back.recipients, back.sent, back.unknown_app), (24, 18, 2));
        let apps: Vec<_> = back
            .apps
            .iter()
            .map(|a| (a.app.as_str(), a.sent, a.failed))
            .collect();
        assert_eq!(apps, [("default", 10, 2), ("lite", 0, 2), ("lite-2", 8, 2)]);
        assert_eq!(
            back.apps_detail().unwrap(),
            "default sent=10 failed=2 pruned=0 skipped=0; lite sent=0 failed=2 pruned=0 skipped=0; \
             lite-2 sent=8 failed=2 pruned=0 skipped=0; unknown skipped=2"
        );
        assert_eq!(
            FanoutReport::default().apps_detail(),
            None,
            "one app: no field"
        );
    }
}

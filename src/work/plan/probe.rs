//! The boundary probes a split is cut with, through the configured audience query: "the id of the
//! N-th device after this one" as `SELECT device_id FROM (<audience>) ORDER BY device_id LIMIT 1
//! OFFSET N-1`, and the count of what is left after a cut. The rows stay in the database. A query
//! that reads one provider at a time (`:provider`) is read for every provider in one probe. What
//! depends here on the audience query's shape: its `device_id` column and its parameters.

use std::sync::LazyLock;

use super::Boundaries;
use crate::audience::Provider;
use crate::database::{
    AUDIENCE_PARAMS, Backend, Database, DatabaseError, FromRecord, Param, PreparedQuery,
    QueryError, Record,
};

/// Boundary probes through the configured audience query.
pub(crate) struct AudienceBoundaries {
    db: Database,
    probe: PreparedQuery,
    /// How many devices are left after a point: a split's last job's size.
    count: PreparedQuery,
    talk_id: i64,
    program_id: i64,
    author_id: Option<i64>,
    /// The query reads one provider at a time: the probe reads it for each.
    per_provider: bool,
}

/// The audience query's parameters, the probe's offset, and `:provider`'s name in each copy.
static PROBE_PARAMS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut params = AUDIENCE_PARAMS.to_vec();
    params.push("job_offset");
    params.extend(PROVIDER_PARAMS.iter().map(|(_, name)| name.as_str()));
    params
});

impl AudienceBoundaries {
    /// Probes for one talk's audience, as `audience` (the configured query) selects it.
    pub(crate) fn new(
        db: Database,
        audience: &str,
        backend: Backend,
        talk_id: i64,
        program_id: i64,
        author_id: Option<i64>,
    ) -> Result<Self, QueryError> {
        let (sql, per_provider) = probe_sql(audience);
        let probe = PreparedQuery::new(&sql, backend, &PROBE_PARAMS, &["after_id"])?;
        let count = count_sql(audience);
        let count = PreparedQuery::new(&count, backend, &PROBE_PARAMS, &["after_id"])?;
        Ok(Self {
            db,
            probe,
            count,
            per_provider,
            talk_id,
            program_id,
            author_id,
        })
    }
}

/// `:provider`'s name in the probe's copy of a query read once per provider, for each provider.
static PROVIDER_PARAMS: LazyLock<Vec<(Provider, String)>> = LazyLock::new(|| {
    let name = |p: &Provider| format!("job_provider_{}", p.as_str());
    Provider::ALL.iter().map(|p| (*p, name(p))).collect()
});

/// The audience query as a derived table (on a line of its own, so that a trailing comment
/// ends before the parenthesis), its trailing semicolons dropped. A query that reads one
/// provider at a time (`:provider`) is read for every provider, each copy with its own parameter.
fn probe_sql(audience: &str) -> (String, bool) {
    let (rows, per_provider) = rows_sql(audience);
    let sql = format!(
        "SELECT device_id FROM (\n{rows}\n) job_probe ORDER BY device_id LIMIT 1 OFFSET :job_offset"
    );
    (sql, per_provider)
}

/// How many devices the audience has after `:after_id`.
fn count_sql(audience: &str) -> String {
    let (rows, _) = rows_sql(audience);
    format!("SELECT COUNT(*) AS devices FROM (\n{rows}\n) job_count")
}

/// The audience's device ids, every provider's.
fn rows_sql(audience: &str) -> (String, bool) {
    let inner = audience.trim_end().trim_end_matches(';').trim_end();
    let at: Vec<usize> = param_positions(inner, "provider").collect();
    let per_provider = !at.is_empty();
    let rows = if per_provider {
        let copy = |(i, (_, name)): (usize, &(Provider, String))| {
            let mut copy = inner.to_string();
            for start in at.iter().rev() {
                copy.replace_range(*start..*start + ":provider".len(), &format!(":{name}"));
            }
            format!("SELECT device_id FROM (\n{copy}\n) job_probe_{i}")
        };
        let copies: Vec<String> = PROVIDER_PARAMS.iter().enumerate().map(copy).collect();
        copies.join("\nUNION ALL\n")
    } else {
        inner.to_string()
    };
    (rows, per_provider)
}

/// Where `:name` stands in `sql` as a parameter (not `::name`, not a longer name).
fn param_positions<'s>(sql: &'s str, name: &'s str) -> impl Iterator<Item = usize> + 's {
    let token = format!(":{name}");
    let bytes = sql.as_bytes();
    sql.match_indices(&token)
        .map(|(i, _)| i)
        .filter(move |&i| {
            let before = i.checked_sub(1).map(|b| bytes[b]);
            let after = bytes.get(i + name.len() + 1).copied();
            before != Some(b':') && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        })
        .collect::<Vec<_>>()
        .into_iter()
}

impl AudienceBoundaries {
    /// `:provider` in a query read once per provider; NULL (all) in one read once.
    fn provider(&self, provider: Provider) -> Param {
        Param::Text(self.per_provider.then(|| provider.as_str().to_string()))
    }
}

struct DeviceId(i64);

impl FromRecord for DeviceId {
    fn from_record(r: &dyn Record) -> Result<Self, DatabaseError> {
        Ok(Self(r.required_int("device_id")?))
    }
}

struct Devices(i64);

impl FromRecord for Devices {
    fn from_record(r: &dyn Record) -> Result<Self, DatabaseError> {
        Ok(Self(r.required_int("devices")?))
    }
}

impl AudienceBoundaries {
    /// The parameters of a probe from `after`, `offset` rows on.
    fn values(&self, after: i64, offset: i64) -> Vec<(&'static str, Param)> {
        let mut values = vec![
            ("talk_id", Param::Int(Some(self.talk_id))),
            ("program_id", Param::Int(Some(self.program_id))),
            ("author_id", Param::Int(self.author_id)),
            ("after_id", Param::Int(Some(after))),
            ("limit", self.db.backend().no_limit()),
            ("job_offset", Param::Int(Some(offset))),
        ];
        // Every provider: a job is a range of devices, each lane reads its own in it.
        let providers = PROVIDER_PARAMS.iter();
        values.extend(providers.map(|(p, name)| (name.as_str(), self.provider(*p))));
        values
    }

    /// How many devices the audience has after `after` (the last job's, from its start).
    pub(crate) async fn count_after(&self, after: i64) -> Result<u64, DatabaseError> {
        let values = self.values(after, 0);
        let found: Option<Devices> = self.db.fetch_optional(&self.count, &values).await?;
        Ok(found.map_or(0, |d| d.0.max(0) as u64))
    }
}

impl Boundaries for AudienceBoundaries {
    async fn nth_after(&self, after: i64, n: u64) -> Result<Option<i64>, DatabaseError> {
        let offset = i64::try_from(n.saturating_sub(1)).unwrap_or(i64::MAX);
        let values = self.values(after, offset);
        let found: Option<DeviceId> = self.db.fetch_optional(&self.probe, &values).await?;
        Ok(found.map(|d| d.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_wraps_the_audience_query() {
        let (sql, per_provider) =
            probe_sql("SELECT id AS device_id FROM devices WHERE id > :after_id -- note\n;\n");
        assert!(!per_provider);
        assert!(sql.starts_with("SELECT device_id FROM (\nSELECT id AS device_id"));
        assert!(sql.contains("-- note\n) job_probe ORDER BY device_id"));
        let query = PreparedQuery::new(&sql, Backend::Postgres, &PROBE_PARAMS, &["after_id"]);
        assert!(query.unwrap().sql().ends_with("LIMIT 1 OFFSET $2"));
        let (sql, per_provider) = probe_sql(
            "SELECT id AS device_id FROM devices WHERE id > :after_id AND p = :provider::text",
        );
        assert!(per_provider);
        assert!(sql.contains("p = :job_provider_fcm::text\n) job_probe_0\nUNION ALL\n"));
        assert!(sql.contains("p = :job_provider_apns::text\n) job_probe_1\nUNION ALL\n"));
        assert!(sql.contains("p = :job_provider_webpush::text\n) job_probe_2\n) job_probe"));
        assert_eq!(sql.matches("UNION ALL").count(), Provider::ALL.len() - 1);
    }

    #[test]
    fn the_count_reads_every_provider_s_rows() {
        let sql = count_sql("SELECT id AS device_id FROM devices WHERE p = :provider");
        assert!(sql.starts_with("SELECT COUNT(*) AS devices FROM (\nSELECT device_id FROM"));
        assert!(sql.contains(":job_provider_webpush"), "{sql}");
    }
}

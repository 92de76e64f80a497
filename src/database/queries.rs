//! The three configured queries (`[queries]`: content, audience, prune), the parameters each may
//! use, and the start-up check that names the key to fix when one cannot be used.

use serde::Deserialize;

use super::{Backend, PreparedQuery, QueryError};

/// Parameters the prune statement may use.
pub const PRUNE_PARAMS: &[&str] = &["device_ids", "tokens", "reason"];
/// Parameters the content query may use.
pub const CONTENT_PARAMS: &[&str] = &["talk_id", "program_id"];
/// Parameters the audience query may use.
pub const AUDIENCE_PARAMS: &[&str] = &[
    "talk_id",
    "program_id",
    "author_id",
    "after_id",
    "limit",
    "provider",
];

/// The `[queries]` settings: the SQL of each query, with named parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    pub content: String,
    pub audience: String,
    pub prune: String,
}

/// A configured query that cannot be used, named by its key in the configuration file. The
/// reason is the source, so `{:#}` prints `invalid setting queries.audience: must use …`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid setting {key}")]
pub struct QueryConfigError {
    /// The file key to fix, like `queries.audience`.
    pub key: &'static str,
    #[source]
    pub source: QueryError,
}

/// The configured queries, prepared for the database in use.
#[derive(Debug, Clone)]
pub struct Queries {
    pub content: PreparedQuery,
    pub audience: PreparedQuery,
    pub prune: PreparedQuery,
}

impl Queries {
    pub fn prepare(settings: &QuerySettings, backend: Backend) -> Result<Self, QueryConfigError> {
        let named = |key: &'static str| move |source| QueryConfigError { key, source };
        Ok(Self {
            content: PreparedQuery::new(&settings.content, backend, CONTENT_PARAMS, &["talk_id"])
                .map_err(named("queries.content"))?,
            audience: PreparedQuery::new(
                &settings.audience,
                backend,
                AUDIENCE_PARAMS,
                // Without it a read cut midway could not resume where it stopped. `:limit` is
                // optional: queries written for page-by-page reads still work (see `no_limit`).
                &["after_id"],
            )
            .map_err(named("queries.audience"))?,
            prune: PreparedQuery::new(&settings.prune, backend, PRUNE_PARAMS, &["device_ids"])
                .map_err(named("queries.prune"))?,
        })
    }
}

/// Checks the configured queries at start-up, before any database is reached.
pub fn check_queries(settings: &QuerySettings) -> Result<(), QueryConfigError> {
    Queries::prepare(settings, Backend::Postgres).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::Param;

    #[test]
    fn an_audience_query_needs_after_id_but_no_longer_limit() {
        let mut settings = QuerySettings {
            content: "SELECT 1 WHERE :talk_id = 1".into(),
            audience: "SELECT * FROM d WHERE id > :after_id ORDER BY id".into(),
            prune: "UPDATE d SET x = 1 WHERE id IN (:device_ids)".into(),
        };
        assert!(Queries::prepare(&settings, Backend::MySql).is_ok());
        settings.audience = "SELECT * FROM d ORDER BY id LIMIT :limit".into();
        let refused = Queries::prepare(&settings, Backend::MySql).unwrap_err();
        assert_eq!(refused.key, "queries.audience");
        assert_eq!(refused.source, QueryError::MissingParam("after_id"));
        // "No limit" is a value each backend reads as such (see `no_limit`).
        assert_eq!(Backend::Postgres.no_limit(), Param::Int(None));
        assert_eq!(Backend::Sqlite.no_limit(), Param::Int(Some(i64::MAX)));
    }
}

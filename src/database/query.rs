//! One configured query translated for one backend: `:name` parameters become the backend's
//! placeholders once at start-up, lists are expanded when bound, and every value is bound, never
//! spliced. The small SQL lexer (quotes, comments, `::` casts) is what may grow here.

use std::sync::Arc;

use super::Backend;

/// A value bound to a named parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(Option<i64>),
    Text(Option<String>),
    /// A list, written inside `IN (...)`: it becomes one placeholder per element.
    Ints(Vec<i64>),
    Texts(Vec<String>),
}

/// One scalar to bind, after lists are expanded.
pub(super) enum Bind {
    Int(Option<i64>),
    Text(Option<String>),
}

/// Binds each value in order; generic over the backend's query type.
pub(super) fn bind_all<'q, DB>(
    mut q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for bind in binds {
        q = match bind {
            Bind::Int(v) => q.bind(v),
            Bind::Text(v) => q.bind(v),
        };
    }
    q
}

#[derive(Debug, Clone)]
enum Segment {
    Sql(String),
    Param(&'static str),
}

/// A configured query, translated for one backend.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    backend: Backend,
    segments: Vec<Segment>,
    /// The SQL when no list parameter changes its shape; built once.
    sql: Arc<str>,
}

/// Why a configured query cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown parameter :{0} (allowed: {1})")]
    UnknownParam(String, String),
    #[error("must use parameter :{0}")]
    MissingParam(&'static str),
    #[error("use named parameters (:name), not positional ones ({0})")]
    Positional(String),
}

impl PreparedQuery {
    /// Translates `:name` parameters into `backend`'s placeholders. String literals, quoted
    /// identifiers, comments and PostgreSQL `::` casts are left alone.
    pub fn new(
        sql: &str,
        backend: Backend,
        allowed: &[&'static str],
        required: &[&'static str],
    ) -> Result<Self, QueryError> {
        let chars: Vec<char> = sql.chars().collect();
        let mut out = String::with_capacity(sql.len() + 16);
        let mut params: Vec<&'static str> = Vec::new();
        let mut segments = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match c {
                '\'' | '"' | '`' => {
                    let end = quoted_end(&chars, i, backend);
                    out.extend(&chars[i..end]);
                    i = end;
                }
                '-' if next == Some('-') => {
                    let end = chars[i..]
                        .iter()
                        .position(|&c| c == '\n')
                        .map_or(chars.len(), |p| i + p);
                    out.extend(&chars[i..end]);
                    i = end;
                }
                '/' if next == Some('*') => {
                    let end = (i + 2..chars.len().saturating_sub(1))
                        .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                        .map_or(chars.len(), |j| j + 2);
                    out.extend(&chars[i..end]);
                    i = end;
                }
                ':' if next == Some(':') => {
                    out.push_str("::");
                    i += 2;
                }
                ':' if next.is_some_and(|n| n.is_ascii_alphabetic() || n == '_') => {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len()
                        && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                    {
                        end += 1;
                    }
                    let name: String = chars[start..end].iter().collect();
                    let Some(&known) = allowed.iter().find(|&&a| a == name) else {
                        return Err(QueryError::UnknownParam(name, allowed.join(", ")));
                    };
                    params.push(known);
                    segments.push(Segment::Sql(std::mem::take(&mut out)));
                    segments.push(Segment::Param(known));
                    i = end;
                }
                '?' => return Err(QueryError::Positional("?".into())),
                '$' if next.is_some_and(|n| n.is_ascii_digit()) => {
                    return Err(QueryError::Positional(format!("${}", next.unwrap_or('1'))));
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        if let Some(missing) = required.iter().find(|r| !params.contains(r)) {
            return Err(QueryError::MissingParam(missing));
        }
        segments.push(Segment::Sql(out));
        let mut query = Self {
            backend,
            segments,
            sql: Arc::from(""),
        };
        query.sql = query.render(&[]).0;
        Ok(query)
    }

    /// The SQL as sent when no parameter is a list.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The SQL for these values (lists expanded) and the scalars to bind, in order. A parameter
    /// without a value is bound as NULL.
    pub(super) fn render(&self, values: &[(&str, Param)]) -> (Arc<str>, Vec<Bind>) {
        let has_list = values
            .iter()
            .any(|(_, v)| matches!(v, Param::Ints(_) | Param::Texts(_)));
        let mut sql = String::new();
        let mut binds = Vec::new();
        let backend = self.backend;
        let placeholder = |sql: &mut String, n: usize| match backend {
            Backend::Postgres => sql.push_str(&format!("${n}")),
            Backend::MySql | Backend::Sqlite => sql.push('?'),
        };
        for segment in &self.segments {
            let name = match segment {
                Segment::Sql(text) => {
                    sql.push_str(text);
                    continue;
                }
                Segment::Param(name) => name,
            };
            match values.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
                Some(Param::Ints(list)) => {
                    for (i, v) in list.iter().enumerate() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        binds.push(Bind::Int(Some(*v)));
                        placeholder(&mut sql, binds.len());
                    }
                }
                Some(Param::Texts(list)) => {
                    for (i, v) in list.iter().enumerate() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        binds.push(Bind::Text(Some(v.clone())));
                        placeholder(&mut sql, binds.len());
                    }
                }
                Some(Param::Text(v)) => {
                    binds.push(Bind::Text(v.clone()));
                    placeholder(&mut sql, binds.len());
                }
                Some(Param::Int(v)) => {
                    binds.push(Bind::Int(*v));
                    placeholder(&mut sql, binds.len());
                }
                None => {
                    binds.push(Bind::Int(None));
                    placeholder(&mut sql, binds.len());
                }
            }
        }
        // Without lists the text never changes: reuse it (and the server's statement cache).
        if !has_list && !self.sql.is_empty() {
            return (Arc::clone(&self.sql), binds);
        }
        (sql.into(), binds)
    }
}

/// Where a quoted string or identifier that opens at `start` ends (one past the closing quote).
fn quoted_end(chars: &[char], start: usize, backend: Backend) -> usize {
    let quote = chars[start];
    let mut j = start + 1;
    while j < chars.len() {
        if chars[j] == '\\' && quote == '\'' && backend == Backend::MySql {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            // A doubled quote is an escaped quote inside the literal.
            if chars.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    chars.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::PRUNE_PARAMS;

    const ALL: &[&str] = &["talk_id", "program_id", "after_id"];

    #[test]
    fn named_parameters_become_each_backends_placeholders() {
        let sql = "SELECT * FROM t WHERE a = :talk_id AND b > :after_id OR a = :talk_id";
        let pg = PreparedQuery::new(sql, Backend::Postgres, ALL, &[]).unwrap();
        assert_eq!(
            pg.sql(),
            "SELECT * FROM t WHERE a = $1 AND b > $2 OR a = $3"
        );
        let my = PreparedQuery::new(sql, Backend::MySql, ALL, &[]).unwrap();
        assert_eq!(my.sql(), "SELECT * FROM t WHERE a = ? AND b > ? OR a = ?");
        let (_, binds) = my.render(&[
            ("after_id", Param::Int(Some(9))),
            ("talk_id", Param::Int(Some(4))),
        ]);
        let ints: Vec<_> = binds
            .iter()
            .map(|b| match b {
                Bind::Int(v) => *v,
                Bind::Text(_) => None,
            })
            .collect();
        assert_eq!(ints, vec![Some(4), Some(9), Some(4)]);
    }

    #[test]
    fn a_list_parameter_becomes_one_placeholder_per_element() {
        let sql = "UPDATE d SET r = :reason WHERE id IN (:device_ids) AND x = :reason";
        let q = PreparedQuery::new(sql, Backend::Postgres, PRUNE_PARAMS, &["device_ids"]).unwrap();
        let values = [
            ("device_ids", Param::Ints(vec![7, 8, 9])),
            ("reason", Param::Text(Some("r".into()))),
        ];
        let (rendered, binds) = q.render(&values);
        assert_eq!(
            &*rendered,
            "UPDATE d SET r = $1 WHERE id IN ($2, $3, $4) AND x = $5"
        );
        assert_eq!(binds.len(), 5);
        let my = PreparedQuery::new(sql, Backend::MySql, PRUNE_PARAMS, &[]).unwrap();
        assert_eq!(
            &*my.render(&values).0,
            "UPDATE d SET r = ? WHERE id IN (?, ?, ?) AND x = ?"
        );
    }

    #[test]
    fn literals_comments_and_casts_are_not_parameters() {
        let sql =
            "SELECT ':talk_id', \"a:b\", x::text -- :nope\n /* :nope */ FROM t WHERE id = :talk_id";
        let q = PreparedQuery::new(sql, Backend::Postgres, ALL, &[]).unwrap();
        assert_eq!(
            q.sql(),
            "SELECT ':talk_id', \"a:b\", x::text -- :nope\n /* :nope */ FROM t WHERE id = $1"
        );
        let doubled = PreparedQuery::new(
            "SELECT 'it''s :x' WHERE a = :talk_id",
            Backend::Sqlite,
            ALL,
            &[],
        );
        assert_eq!(doubled.unwrap().sql(), "SELECT 'it''s :x' WHERE a = ?");
    }

    #[test]
    fn unknown_missing_and_positional_parameters_are_refused() {
        let unknown = PreparedQuery::new("WHERE a = :user", Backend::Sqlite, ALL, &[]);
        assert!(matches!(unknown, Err(QueryError::UnknownParam(n, _)) if n == "user"));
        let missing = PreparedQuery::new("WHERE a = :talk_id", Backend::Sqlite, ALL, &["after_id"]);
        assert_eq!(missing.unwrap_err(), QueryError::MissingParam("after_id"));
        assert!(PreparedQuery::new("WHERE a = ?", Backend::MySql, ALL, &[]).is_err());
        assert!(PreparedQuery::new("WHERE a = $1", Backend::Postgres, ALL, &[]).is_err());
    }
}

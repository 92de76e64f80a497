//! How secrets look when a URL is shown: in logs, in `notifier check` and in error messages. A
//! leaf, so that every module may hide a password without importing the settings; a new way a
//! secret can sit in a URL is handled here, with a test row.

/// Hides the password of a URL like `postgres://user:secret@host/db`, including one given as a
/// `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (userinfo, after) = match userinfo_end(rest) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:***@")),
            // redis://secret@host: for Redis a lone userinfo is the password.
            None if scheme.starts_with("redis") && !userinfo.is_empty() => out.push_str("***@"),
            None if userinfo.is_empty() => {}
            None => out.push_str(&format!("{userinfo}@")),
        }
    }
    match after.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", query.join("&")));
        }
        None => out.push_str(after),
    }
    out
}

/// Where the userinfo of `rest` (a URL after `scheme://`) ends: its last '@' before the path, or,
/// when a password holds '/', '?' or '#' itself, the last '@' of all. In doubt it reports more as
/// userinfo, which only hides more.
fn userinfo_end(rest: &str) -> Option<usize> {
    let at = rest.rfind('@')?;
    let prefix = &rest[..at];
    let Some(special) = prefix.find(['/', '?', '#']) else {
        return Some(at);
    };
    match prefix[..special].rfind('@') {
        Some(before_path) => Some(before_path),
        None if prefix[..special].contains(':') => Some(at),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact_url("redis://:pw@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(redact_url("redis://pw@cache"), "redis://***@cache");
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        assert_eq!(redact_url("sqlite://notifier.db"), "sqlite://notifier.db");
        assert_eq!(
            redact_url("postgres://app@db/x?sslmode=require&password=s3cret"),
            "postgres://app@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgres://app:p/a?s#s@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("mysql://db/x"), "mysql://db/x");
        assert_eq!(
            redact_url("postgres://app:pw@db/x?email=a@b"),
            "postgres://app:***@db/x?email=a@b"
        );
    }
}

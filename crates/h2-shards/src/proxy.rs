//! `HTTPS_PROXY` and `NO_PROXY`, read as reqwest and curl read them: an `http://` proxy reached
//! with CONNECT, credentials from the URL sent as Basic auth, and host-name suffix exemptions.
//! hyper-util's proxy matcher reads the same variables but differs at the edges (it accepts IP
//! ranges, and drops an unusable proxy URL silently where this refuses to start); what may change
//! here is the set of accepted forms, with the README line that lists them.

use base64::Engine;
use percent_encoding::percent_decode_str;

use crate::SetupError;

/// An HTTP proxy reached with CONNECT, for `https://` endpoints.
#[derive(Clone)]
pub struct Proxy {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Proxy-Authorization`, from the URL's user and password.
    pub(crate) authorization: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        write!(f, "Proxy({}:{})", self.host, self.port)
    }
}

impl Proxy {
    /// The proxy `https_proxy` (`HTTPS_PROXY`) names for `host`, unless `no_proxy` (`NO_PROXY`)
    /// exempts it; as reqwest and curl read them.
    pub fn from_vars(
        https_proxy: Option<&str>,
        no_proxy: Option<&str>,
        host: &str,
    ) -> Result<Option<Proxy>, SetupError> {
        let Some(url) = https_proxy.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        if exempt(no_proxy.unwrap_or(""), host) {
            return Ok(None);
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        if rest.contains("://") {
            return Err(SetupError::Proxy); // https:// or socks proxies are not supported
        }
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((c, a)) => (Some(c), a),
            None => (None, rest),
        };
        let authority: http::uri::Authority = address.parse().map_err(|_| SetupError::Proxy)?;
        let decode = |part: &str| percent_decode_str(part).decode_utf8_lossy().into_owned();
        let authorization = credentials.map(|c| {
            let (user, password) = c.split_once(':').unwrap_or((c, ""));
            let pair = format!("{}:{}", decode(user), decode(password));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(Some(Proxy {
            host: authority.host().to_string(),
            port: authority.port_u16().unwrap_or(80),
            authorization,
        }))
    }

    /// The proxy's `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Whether a `NO_PROXY` rule names `host` or a parent domain of it (`*` names every host).
fn exempt(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|rule| {
        let rule = rule.trim_start_matches('.').to_ascii_lowercase();
        rule == "*" || (!rule.is_empty() && (host == rule || host.ends_with(&format!(".{rule}"))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(https_proxy: &str, no_proxy: &str, host: &str) -> Option<Proxy> {
        Proxy::from_vars(Some(https_proxy), Some(no_proxy), host).unwrap()
    }

    #[test]
    fn https_proxy_is_used_unless_no_proxy_names_the_host_or_a_parent_domain() {
        let p = proxy("http://proxy.internal:3128", "", "fcm.googleapis.com").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.authorization),
            ("proxy.internal", 3128, None)
        );
        assert_eq!(proxy("proxy:8080/", "", "h").unwrap().port, 8080);
        assert_eq!(proxy("http://proxy", "", "h").unwrap().port, 80);
        for no_proxy in [
            "googleapis.com",
            ".googleapis.com",
            "x.org, FCM.googleapis.com",
            "*",
        ] {
            assert!(
                proxy("http://p:1", no_proxy, "fcm.googleapis.com").is_none(),
                "{no_proxy}"
            );
        }
        for no_proxy in ["apis.com", "fcm.googleapis.co", ""] {
            assert!(
                proxy("http://p:1", no_proxy, "fcm.googleapis.com").is_some(),
                "{no_proxy}"
            );
        }
        assert!(Proxy::from_vars(None, None, "h").unwrap().is_none());
        assert!(Proxy::from_vars(Some("  "), None, "h").unwrap().is_none());
    }

    #[test]
    fn proxy_credentials_become_basic_auth_and_never_show_in_debug() {
        let p = proxy("http://us%3Aer:p%40ss@proxy:3128", "", "h").unwrap();
        // base64("us:er:p@ss")
        assert_eq!(p.authorization.as_deref(), Some("Basic dXM6ZXI6cEBzcw=="));
        assert_eq!(format!("{p:?}"), "Proxy(proxy:3128)");
        let user_only = proxy("http://user@proxy:3128", "", "h").unwrap();
        // base64("user:")
        assert_eq!(user_only.authorization.as_deref(), Some("Basic dXNlcjo="));
    }

    #[test]
    fn proxies_other_than_http_are_refused() {
        for url in [
            "https://proxy:443",
            "socks5://proxy:1080",
            "http://",
            "http://bad host:1",
        ] {
            assert!(Proxy::from_vars(Some(url), None, "h").is_err(), "{url}");
        }
    }
}

//! The one place a `redis::Client` is made from the settings: plain `redis://` or TLS `rediss://`
//! (contract §7), with the CA file and the client certificate, so that the subscriber, the claims,
//! the stream input and the commands all reach Redis the same way.
//!
//! Start-up builds a client once to check the settings (config/validate.rs), which reads and
//! parses the PEM files then; a wrong file stops the process with one line naming its variable.
//! The `[redis]` settings and the names of their variables live here, so the config module
//! composes them without this module reaching back into it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use redis::{ClientTlsConfig, ConnectionAddr, TlsCertificates};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::redact::redact_url;

/// The variables of the `[redis]` settings, named here because this module's errors name them.
pub(crate) const REDIS_URL: &str = "REDIS_URL";
pub(crate) const CA_FILE: &str = "REDIS_CA_FILE";
pub(crate) const CERT_FILE: &str = "REDIS_CLIENT_CERT_FILE";
pub(crate) const KEY_FILE: &str = "REDIS_CLIENT_KEY_FILE";

/// Where Redis is and how the connection to it is kept (`[redis]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    pub ping_interval_secs: u64,
    pub timeout_secs: u64,
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// PEM roots trusted for `rediss://` in addition to the system's (`REDIS_CA_FILE`).
    #[serde(skip)]
    pub ca_file: Option<PathBuf>,
    /// The client certificate and key, for servers that require one (`REDIS_CLIENT_CERT_FILE`,
    /// `REDIS_CLIENT_KEY_FILE`).
    #[serde(skip)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(skip)]
    pub client_key_file: Option<PathBuf>,
}

impl RedisSettings {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Redis settings that cannot make a client, named the way the operator would set them. The
/// config module reports it as a `RedisConfigError`; the inputs and the claims return it as is.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct RedisConfigError {
    pub setting: &'static str,
    pub reason: String,
}

impl RedisConfigError {
    fn new(setting: &'static str, reason: impl fmt::Display) -> Self {
        Self {
            setting,
            reason: reason.to_string(),
        }
    }
}

/// The client the settings describe. Every error names the setting to fix.
pub fn open(settings: &RedisSettings) -> Result<redis::Client, RedisConfigError> {
    let url = settings.url.as_str();
    let bad_url = |e: &dyn fmt::Display| {
        RedisConfigError::new(
            REDIS_URL,
            format!("{} is not a usable Redis URL: {e}", redact_url(url)),
        )
    };
    let plain = redis::Client::open(url).map_err(|e| bad_url(&e))?;
    let ConnectionAddr::TcpTls { insecure, .. } = plain.get_connection_info().addr() else {
        if let Some(setting) = tls_files_set(settings) {
            // The operator expects encryption: sending the password in the clear instead would
            // be worse than not starting.
            return Err(RedisConfigError::new(
                REDIS_URL,
                format!(
                    "{} is not TLS but {setting} is set; use rediss:// (or unset {setting})",
                    redact_url(url)
                ),
            ));
        }
        return Ok(plain);
    };
    if *insecure {
        return Err(bad_url(
            &"#insecure (no certificate check) is not supported; set REDIS_CA_FILE to the server's CA",
        ));
    }
    let client_tls = client_identity(settings)?;
    let root_cert = match &settings.ca_file {
        Some(path) => Some(roots_with(path)?),
        None => None,
    };
    if client_tls.is_none() && root_cert.is_none() {
        // The crate's default for rediss://: the system's roots.
        return Ok(plain);
    }
    redis::Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| bad_url(&e))
}

fn tls_files_set(settings: &RedisSettings) -> Option<&'static str> {
    [
        (CA_FILE, &settings.ca_file),
        (CERT_FILE, &settings.client_cert_file),
        (KEY_FILE, &settings.client_key_file),
    ]
    .into_iter()
    .find_map(|(name, path)| path.as_ref().map(|_| name))
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, RedisConfigError> {
    std::fs::read(path)
        .map_err(|e| RedisConfigError::new(setting, format!("cannot read {}: {e}", path.display())))
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, RedisConfigError> {
    let not_pem = |reason: String| {
        RedisConfigError::new(
            setting,
            format!("{} is not a PEM certificate file: {reason}", path.display()),
        )
    };
    let certs = CertificateDer::pem_slice_iter(&read(setting, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(not_pem("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

/// The system's roots and the CA file's, as one PEM bundle.
///
/// Why not just the CA file: given `root_cert`, redis-rs trusts ONLY those roots (it starts from
/// an empty `RootCertStore`, redis 1.8 src/tls.rs), and it takes no rustls config or verifier of
/// ours. The contract trusts REDIS_CA_FILE in addition to the system's roots, so the system's are
/// loaded here (rustls-native-certs, what redis-rs itself reads without `root_cert`) and passed
/// along. A system certificate that rustls cannot use is left out, as a verifier would ignore it;
/// one in the CA file is an error, since the operator named that file for a reason.
fn roots_with(ca_file: &Path) -> Result<Vec<u8>, RedisConfigError> {
    let extra = certificates(CA_FILE, ca_file)?;
    for cert in &extra {
        RootCertStore::empty().add(cert.clone()).map_err(|e| {
            RedisConfigError::new(
                CA_FILE,
                format!(
                    "{} holds an unusable CA certificate: {e}",
                    ca_file.display()
                ),
            )
        })?;
    }
    let system = rustls_native_certs::load_native_certs().certs;
    let usable = system
        .into_iter()
        .filter(|cert| RootCertStore::empty().add(cert.clone()).is_ok());
    let mut bundle = String::new();
    for cert in usable.chain(extra) {
        bundle.push_str(&pem_certificate(&cert));
    }
    Ok(bundle.into_bytes())
}

fn pem_certificate(der: &[u8]) -> String {
    let base64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for (i, c) in base64.chars().enumerate() {
        if i > 0 && i % 64 == 0 {
            pem.push('\n');
        }
        pem.push(c);
    }
    pem.push_str("\n-----END CERTIFICATE-----\n");
    pem
}

/// The client certificate and key, both or neither, checked to belong together.
fn client_identity(settings: &RedisSettings) -> Result<Option<ClientTlsConfig>, RedisConfigError> {
    let (cert_path, key_path) = match (&settings.client_cert_file, &settings.client_key_file) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(RedisConfigError::new(
                KEY_FILE,
                format!("must be set when {CERT_FILE} is"),
            ));
        }
        (None, Some(_)) => {
            return Err(RedisConfigError::new(
                CERT_FILE,
                format!("must be set when {KEY_FILE} is"),
            ));
        }
        (Some(cert), Some(key)) => (cert, key),
    };
    let chain = certificates(CERT_FILE, cert_path)?;
    let key_pem = read(KEY_FILE, key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        RedisConfigError::new(
            KEY_FILE,
            format!("{} is not a PEM private key: {e}", key_path.display()),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        RedisConfigError::new(
            KEY_FILE,
            format!(
                "{} does not go with the certificate in {CERT_FILE}: {e}",
                key_path.display()
            ),
        )
    })?;
    Ok(Some(ClientTlsConfig {
        client_cert: read(CERT_FILE, cert_path)?,
        client_key: key_pem,
    }))
}

/// A Redis error told so that an operator can act on it: a TLS failure says what went wrong and
/// names the setting that fixes it, where redis-rs would print rustls' terse reason.
pub struct Explained<'a>(pub &'a redis::RedisError);

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match tls_error(self.0).map(diagnose) {
            Some(diagnosis) => write!(f, "Redis TLS: {diagnosis}"),
            None => write!(f, "Redis: {}", self.0),
        }
    }
}

fn diagnose(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    match e {
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for the host in REDIS_URL".into()
        }
        Error::InvalidCertificate(
            Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet,
        ) => "the server's certificate has expired or is not valid yet".into(),
        Error::InvalidCertificate(_) => {
            "the server's certificate is not trusted (set REDIS_CA_FILE to its CA)".into()
        }
        Error::AlertReceived(Alert::CertificateRequired) => {
            format!("the server requires a client certificate (set {CERT_FILE} and {KEY_FILE})")
        }
        Error::AlertReceived(
            Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown,
        ) => format!("the server rejected the client certificate ({CERT_FILE})"),
        other => other.to_string(),
    }
}

/// The rustls error behind a Redis error, if there is one. redis-rs keeps an I/O error as an
/// `Arc<dyn Error>`, and `io::Error::source` skips the error it wraps, so the chain is walked by
/// hand.
fn tls_error(e: &redis::RedisError) -> Option<&rustls::Error> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(shared) = err.downcast_ref::<Shared>() {
            next = Some(&**shared);
            continue;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            next = Some(inner);
            continue;
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_with as load;

    /// A CA and a client certificate and key, and a key of no certificate, as PEM files.
    fn pem_files() -> (tempfile::TempDir, [String; 4]) {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["notifier".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let files = [
            ("ca.pem", ca.pem()),
            ("client.pem", cert.pem()),
            ("client.key", key.serialize_pem()),
            (
                "other.key",
                rcgen::KeyPair::generate().unwrap().serialize_pem(),
            ),
        ]
        .map(|(name, pem)| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path.display().to_string()
        });
        (dir, files)
    }

    #[test]
    fn a_wrong_tls_file_or_combination_names_the_setting() {
        let (dir, [ca, cert, key, other_key]) = pem_files();
        let not_pem = dir.path().join("not.pem").display().to_string();
        std::fs::write(&not_pem, "just text").unwrap();
        let tls = ("REDIS_URL", "rediss://cache:6380");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[tls, (CA_FILE, "/nonexistent/ca.pem")], CA_FILE),
            (&[tls, (CA_FILE, &not_pem)], CA_FILE),
            (&[tls, (CA_FILE, &key)], CA_FILE),
            (&[tls, (CERT_FILE, &cert)], KEY_FILE),
            (&[tls, (KEY_FILE, &key)], CERT_FILE),
            (&[tls, (CERT_FILE, &not_pem), (KEY_FILE, &key)], CERT_FILE),
            (&[tls, (CERT_FILE, &cert), (KEY_FILE, &not_pem)], KEY_FILE),
            (&[tls, (CERT_FILE, &cert), (KEY_FILE, &other_key)], KEY_FILE),
            (&[(CA_FILE, &ca)], "REDIS_URL"),
            (
                &[
                    ("REDIS_URL", "redis://cache"),
                    (CERT_FILE, &cert),
                    (KEY_FILE, &key),
                ],
                "REDIS_URL",
            ),
            (
                &[("REDIS_URL", "rediss://cache:6380/#insecure")],
                "REDIS_URL",
            ),
        ];
        for (vars, named) in cases {
            let err = load(vars)
                .err()
                .unwrap_or_else(|| panic!("{vars:?} must not load"));
            assert_eq!(err.setting, *named, "{vars:?}: {err}");
        }
        let all = [tls, (CA_FILE, &ca), (CERT_FILE, &cert), (KEY_FILE, &key)];
        assert!(load(&all).is_ok(), "the right files load");
        assert!(load(&[("REDIS_URL", "rediss://u:p@cache:6380/2")]).is_ok());
    }

    #[test]
    fn the_ca_file_is_trusted_in_addition_to_the_system_roots() {
        let (_dir, [ca, ..]) = pem_files();
        let system: Vec<_> = rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .filter(|c| RootCertStore::empty().add(c.clone()).is_ok())
            .collect();
        assert!(
            !system.is_empty(),
            "this machine has system roots (ca-certificates)"
        );

        let bundle = roots_with(Path::new(&ca)).unwrap();

        let roots: Vec<_> = CertificateDer::pem_slice_iter(&bundle)
            .collect::<Result<_, _>>()
            .unwrap();
        let from_file = certificates(CA_FILE, Path::new(&ca)).unwrap();
        assert_eq!(roots.len(), system.len() + 1);
        assert!(roots.contains(&from_file[0]), "the CA file's root");
        assert!(
            system.iter().all(|c| roots.contains(c)),
            "every system root"
        );
    }

    #[test]
    fn a_rustls_error_inside_a_redis_error_is_found_and_named() {
        let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let redis = redis::RedisError::from(io);
        let text = Explained(&redis).to_string();
        assert_eq!(
            text,
            "Redis TLS: the server's certificate is not trusted (set REDIS_CA_FILE to its CA)"
        );
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(Explained(&refused).to_string().starts_with("Redis: "));
    }

    #[test]
    fn a_der_certificate_round_trips_through_the_pem_written_for_redis() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = pem_certificate(&der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, [CertificateDer::from(der)]);
    }
}

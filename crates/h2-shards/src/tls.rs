//! The TLS side of a dial: TLS 1.2/1.3 with ALPN `h2`, verified by the platform's verifier
//! against its roots plus an optional PEM bundle (a stand-in's or a proxy's CA). What may change
//! here: which roots are trusted; nothing else ever skips verification.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::SetupError;

/// What a server's certificate is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    /// The platform's own roots and verifier (the system trust store on Linux).
    pub platform_roots: bool,
    /// Certificates added from the extra CA file.
    pub extra_roots: usize,
}

/// Why the extra CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
    #[error("not a PEM certificate bundle")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("no certificate in the file")]
    Empty,
}

/// A TLS connector and what it trusts.
pub(crate) struct Connector {
    pub(crate) tls: tokio_rustls::TlsConnector,
    pub(crate) trust: Trust,
}

/// The connector for `https://` endpoints, trusting the platform's roots and those in `extra_ca`.
pub(crate) fn connector(extra_ca: Option<&Path>) -> Result<Connector, SetupError> {
    let mut extra = Vec::new();
    if let Some(path) = extra_ca {
        let bad = |source| SetupError::ExtraCa {
            path: path.to_path_buf(),
            source,
        };
        let pem = std::fs::read(path).map_err(|e| bad(CaFileError::Read(e)))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            extra.push(cert.map_err(|e| bad(CaFileError::Pem(e)))?);
        }
        if extra.is_empty() {
            return Err(bad(CaFileError::Empty));
        }
    }
    let trust = Trust {
        platform_roots: true,
        extra_roots: extra.len(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(SetupError::Tls)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Tls)?
        .dangerous() // not dangerous: the platform verifier, with the extra roots
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Connector {
        tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        trust,
    })
}

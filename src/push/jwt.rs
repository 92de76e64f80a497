//! ES256 JSON Web Tokens, as two providers sign them: APNs' provider token and Web Push's VAPID
//! token (RFC 8292) are both `base64url(header).base64url(claims).base64url(signature)` signed
//! with a P-256 key read from a PEM file, and dated by a [`Clock`] tests can move.
//!
//! Here: [`Es256Key`] (the key, from PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY` PEM, and
//! signing), and the clock. What each token claims and how long it lives is its provider's. What
//! may change here: the PEM forms accepted.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

/// Where token sources read the time.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn unix_now(&self) -> u64;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Why a PEM file holds no usable P-256 signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM private key")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("not an EC key: PKCS#8 (PRIVATE KEY) or SEC1 (EC PRIVATE KEY) PEM expected")]
    Kind,
    #[error("not a usable P-256 key (with its public key)")]
    Key(#[source] ring::error::KeyRejected),
}

/// A P-256 key that signs ES256 tokens.
pub(crate) struct Es256Key {
    key: EcdsaKeyPair,
    random: SystemRandom,
}

impl std::fmt::Debug for Es256Key {
    /// The public half only: the private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let public = URL_SAFE_NO_PAD.encode(self.public_key());
        f.debug_struct("Es256Key").field("public", &public).finish()
    }
}

impl Es256Key {
    /// The key in `pem`: PKCS#8 (Apple's .p8, `openssl genpkey`) or SEC1 (`openssl ecparam
    /// -genkey`), which ring reads once wrapped in the PKCS#8 envelope it would have had.
    pub(crate) fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let pkcs8 = match PrivateKeyDer::from_pem_slice(pem).map_err(KeyError::Pem)? {
            PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
            PrivateKeyDer::Sec1(der) => sec1_in_pkcs8(der.secret_sec1_der()),
            _ => return Err(KeyError::Kind),
        };
        let random = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &random)
            .map_err(KeyError::Key)?;
        Ok(Self { key, random })
    }

    /// The public key, uncompressed (65 bytes: `04 || x || y`).
    pub(crate) fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// `base64url(header).base64url(claims).base64url(signature)`: header and claims are JSON
    /// the caller wrote.
    pub(crate) fn sign(
        &self,
        header: &str,
        claims: &str,
    ) -> Result<String, ring::error::Unspecified> {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.key.sign(&self.random, signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// RFC 5915's `ECPrivateKey` inside RFC 5208's `PrivateKeyInfo` for id-ecPublicKey on P-256:
/// what `openssl pkcs8 -topk8` writes. ring checks the inner key's curve (if named) and public
/// key itself; this only adds the envelope.
fn sec1_in_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // version 0, then AlgorithmIdentifier { id-ecPublicKey, prime256v1 }.
    const VERSION_AND_ALGORITHM: &[u8] = &[
        0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
        0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut inner = VERSION_AND_ALGORITHM.to_vec();
    der_element(&mut inner, 0x04, sec1);
    let mut pkcs8 = Vec::with_capacity(inner.len() + 4);
    der_element(&mut pkcs8, 0x30, &inner);
    pkcs8
}

/// Appends a DER tag, its definite length and `content`.
fn der_element(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A clock tests move by hand.
    pub(crate) struct ManualClock(pub(crate) AtomicU64);

    impl Clock for ManualClock {
        fn unix_now(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    /// A fresh key as SEC1 PEM with its curve named, as `openssl ecparam -genkey` writes it,
    /// cut out of rcgen's PKCS#8 (version, algorithm, then the ECPrivateKey without parameters).
    pub(crate) fn sec1_pem() -> (String, Vec<u8>) {
        let pair = rcgen::KeyPair::generate().unwrap();
        let pkcs8 = pair.serialize_der();
        let d_at = pkcs8
            .windows(4)
            .position(|w| w == [0x02, 0x01, 0x01, 0x04])
            .unwrap()
            + 5;
        assert_eq!(pkcs8[d_at - 1], 32);
        let d = &pkcs8[d_at..d_at + 32];
        let public = pair.public_key_raw();
        let mut content = vec![0x02, 0x01, 0x01];
        der_element(&mut content, 0x04, d);
        let named = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        der_element(&mut content, 0xa0, &named);
        let mut bits = vec![0x00];
        bits.extend_from_slice(public);
        let mut bit_string = Vec::new();
        der_element(&mut bit_string, 0x03, &bits);
        der_element(&mut content, 0xa1, &bit_string);
        let mut sec1 = Vec::new();
        der_element(&mut sec1, 0x30, &content);
        let body = base64::engine::general_purpose::STANDARD.encode(&sec1);
        let pem = format!("-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----\n");
        (pem, public.to_vec())
    }

    fn verifies(key: &Es256Key, public: &[u8]) {
        let token = key.sign(r#"{"alg":"ES256"}"#, r#"{"sub":"x"}"#).unwrap();
        let (signed, signature) = token.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public)
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .expect("the signature verifies with the key's public half");
    }

    #[test]
    fn pkcs8_and_sec1_pem_keys_both_sign_tokens_their_public_key_verifies() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = Es256Key::from_pem(pair.serialize_pem().as_bytes()).unwrap();
        assert_eq!(key.public_key(), pair.public_key_raw());
        verifies(&key, pair.public_key_raw());

        let (pem, public) = sec1_pem();
        let key = Es256Key::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.public_key(), public.as_slice());
        verifies(&key, &public);
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn what_is_not_a_p256_key_is_refused_with_the_reason() {
        assert!(matches!(
            Es256Key::from_pem(b"not pem at all"),
            Err(KeyError::Pem(_))
        ));
        let rsa_like = "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            Es256Key::from_pem(rsa_like.as_bytes()),
            Err(KeyError::Kind)
        ));
        let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(matches!(
            Es256Key::from_pem(ed25519.serialize_pem().as_bytes()),
            Err(KeyError::Key(_))
        ));
    }

    #[test]
    fn der_lengths_use_the_long_form_from_128_bytes() {
        let mut out = Vec::new();
        der_element(&mut out, 0x04, &[0; 0x7f]);
        assert_eq!(&out[..2], &[0x04, 0x7f]);
        out.clear();
        der_element(&mut out, 0x04, &[0; 0x80]);
        assert_eq!(&out[..3], &[0x04, 0x81, 0x80]);
        out.clear();
        der_element(&mut out, 0x30, &[0; 0x1234]);
        assert_eq!(&out[..4], &[0x30, 0x82, 0x12, 0x34]);
    }
}

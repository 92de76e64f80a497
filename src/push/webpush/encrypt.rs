//! The `aes128gcm` content coding of a push (RFC 8188) keyed for one subscription (RFC 8291):
//! a fresh P-256 key pair and salt per push, ECDH with the browser's `p256dh`, the key schedule
//! of RFC 8291 §3.4 over the `auth` secret, and one record, AES-128-GCM sealed.
//!
//! The primitives are ring's (ECDH P-256, HKDF-SHA256, AES-128-GCM); what is written here is only
//! the composition the two RFCs spell out: three HKDF `info` strings and the header's layout.
//! `seal` is that composition alone, so RFC 8291's Appendix A checks it byte for byte; the
//! stand-in and `http_ece` decrypt what `encrypt` makes. What may change here: nothing but the
//! record size, within RFC 8291's rules.

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use ring::hkdf::{HKDF_SHA256, KeyType, Salt};
use ring::rand::SecureRandom;

use super::subscription::{AUTH_LEN, P256_POINT_LEN};

/// Push services accept at least this much body (RFC 8030 §7.2); more is refused with 413.
pub(crate) const MAX_BODY: usize = 4096;
/// salt (16) + rs (4) + idlen (1) + keyid: our public key (65).
const HEADER_LEN: usize = 16 + 4 + 1 + P256_POINT_LEN;
/// The last-record padding delimiter (RFC 8188 §2) and the AES-GCM tag.
const RECORD_OVERHEAD: usize = 1 + 16;
/// The most plaintext one push can carry: 3993 bytes.
pub(crate) const MAX_PLAINTEXT: usize = MAX_BODY - HEADER_LEN - RECORD_OVERHEAD;
/// The header's record size: one record holds any push, as RFC 8291 §4 requires.
const RECORD_SIZE: u32 = 4096;

/// Why a push could not be encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EncryptError {
    #[error("the plaintext is {0} bytes; one push carries at most {MAX_PLAINTEXT} once encrypted")]
    TooLarge(usize),
    /// The point decoded, but is not on the curve: the browser cannot have made it.
    #[error("keys.p256dh is not a P-256 public key")]
    NotOnCurve,
    #[error("no randomness or key from the system")]
    Crypto,
}

/// The encrypted body of one push for the subscription with `p256dh` and `auth`.
pub(crate) fn encrypt(
    plaintext: &[u8],
    p256dh: &[u8; P256_POINT_LEN],
    auth: &[u8; AUTH_LEN],
    random: &dyn SecureRandom,
) -> Result<Vec<u8>, EncryptError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EncryptError::TooLarge(plaintext.len()));
    }
    let mut salt = [0u8; 16];
    random.fill(&mut salt).map_err(|_| EncryptError::Crypto)?;
    // ring's ephemeral keys can be used once only: exactly RFC 8291's rule for the sender's key.
    let private =
        EphemeralPrivateKey::generate(&ECDH_P256, random).map_err(|_| EncryptError::Crypto)?;
    let public = private
        .compute_public_key()
        .map_err(|_| EncryptError::Crypto)?;
    let public: &[u8; P256_POINT_LEN] = public
        .as_ref()
        .try_into()
        .map_err(|_| EncryptError::Crypto)?;
    let browser = UnparsedPublicKey::new(&ECDH_P256, p256dh);
    agree_ephemeral(private, &browser, |secret| {
        seal(secret, public, p256dh, auth, &salt, plaintext)
    })
    .map_err(|_| EncryptError::NotOnCurve)?
}

/// RFC 8291 §3.4 and RFC 8188 §2, from the ECDH secret on: the whole body.
fn seal(
    ecdh_secret: &[u8],
    sender_public: &[u8; P256_POINT_LEN],
    p256dh: &[u8; P256_POINT_LEN],
    auth: &[u8; AUTH_LEN],
    salt: &[u8; 16],
    plaintext: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    let crypto = |_| EncryptError::Crypto;
    // IKM = HKDF(salt = auth, ecdh_secret, "WebPush: info" 0x00 || ua_public || as_public, 32)
    let mut ikm = [0u8; 32];
    Salt::new(HKDF_SHA256, auth)
        .extract(ecdh_secret)
        .expand(
            &[&b"WebPush: info\0"[..], &p256dh[..], &sender_public[..]],
            Len(32),
        )
        .and_then(|okm| okm.fill(&mut ikm))
        .map_err(crypto)?;
    let prk = Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let cek: UnboundKey = prk
        .expand(&[b"Content-Encoding: aes128gcm\0"], &AES_128_GCM)
        .map_err(crypto)?
        .into();
    let mut nonce = [0u8; 12];
    prk.expand(&[b"Content-Encoding: nonce\0"], Len(12))
        .and_then(|okm| okm.fill(&mut nonce))
        .map_err(crypto)?;

    let mut body = Vec::with_capacity(HEADER_LEN + plaintext.len() + RECORD_OVERHEAD);
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(P256_POINT_LEN as u8);
    body.extend_from_slice(sender_public);
    let mut record = Vec::with_capacity(plaintext.len() + RECORD_OVERHEAD);
    record.extend_from_slice(plaintext);
    record.push(0x02); // the last (and only) record's delimiter; no padding after it
    // The salt is fresh per push, so the key and nonce are too: one nonce, used once.
    LessSafeKey::new(cek)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut record,
        )
        .map_err(crypto)?;
    body.extend_from_slice(&record);
    Ok(body)
}

/// An HKDF output length.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;

    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    /// RFC 8291 Appendix A: every input, the ECDH secret, and the message it gives.
    #[test]
    fn the_rfc_8291_example_encrypts_to_the_rfcs_bytes() {
        let plaintext = b64("V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24");
        assert_eq!(plaintext, b"When I grow up, I want to be a watermelon");
        let as_public = b64(
            "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8",
        );
        let ua_public = b64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        let ecdh_secret = b64("kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs");
        let salt = b64("DGv6ra1nlYgDCS1FRnbzlw");
        let auth = b64("BTBZMqHH6r4Tts7J_aSIgg");
        let body = seal(
            &ecdh_secret,
            as_public.as_slice().try_into().unwrap(),
            ua_public.as_slice().try_into().unwrap(),
            auth.as_slice().try_into().unwrap(),
            salt.as_slice().try_into().unwrap(),
            &plaintext,
        )
        .unwrap();
        let expected = b64(concat!(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vC",
            "YLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXL",
            "WyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        ));
        assert_eq!(
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(&expected)
        );
    }

    /// A browser's public key (its private half is not needed to encrypt).
    fn browser_key() -> [u8; 65] {
        let browser = EphemeralPrivateKey::generate(&ECDH_P256, &SystemRandom::new()).unwrap();
        let public = browser.compute_public_key().unwrap();
        public.as_ref().try_into().unwrap()
    }

    #[test]
    fn each_push_has_its_own_key_and_salt_and_the_size_is_header_plus_record() {
        let (random, p256dh) = (SystemRandom::new(), browser_key());
        let auth = [7u8; 16];
        let a = encrypt(b"hello", &p256dh, &auth, &random).unwrap();
        let b = encrypt(b"hello", &p256dh, &auth, &random).unwrap();
        assert_eq!(a.len(), HEADER_LEN + 5 + RECORD_OVERHEAD);
        assert_eq!(&a[16..21], &[0, 0, 0x10, 0, 65]);
        assert_ne!(a[..16], b[..16], "salt");
        assert_ne!(a[21..86], b[21..86], "sender key");
    }

    #[test]
    fn a_plaintext_that_would_not_fit_in_4096_bytes_is_refused() {
        let (random, p256dh) = (SystemRandom::new(), browser_key());
        let fits = encrypt(&[b'x'; MAX_PLAINTEXT], &p256dh, &[0; 16], &random).unwrap();
        assert_eq!(fits.len(), MAX_BODY);
        assert_eq!(
            encrypt(&[b'x'; MAX_PLAINTEXT + 1], &p256dh, &[0; 16], &random),
            Err(EncryptError::TooLarge(MAX_PLAINTEXT + 1))
        );
    }

    #[test]
    fn a_point_off_the_curve_is_refused_not_used() {
        let mut p256dh = [0x04; 65];
        p256dh[1..].fill(0x11);
        assert_eq!(
            encrypt(b"x", &p256dh, &[0; 16], &SystemRandom::new()),
            Err(EncryptError::NotOnCurve)
        );
    }
}

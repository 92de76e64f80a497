//! One push from the notifier decrypted by pywebpush's `http_ece` (PyPI), run by
//! `tests/notifier/webpush_decrypt.py`: an implementation neither the notifier nor the stand-in
//! shares code with, so the two cannot agree on a mistake.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

/// `http_ece`'s interpreter: the venv `scripts/test` installs it into, or
/// `NOTIFIER_HTTP_ECE_PYTHON`.
fn http_ece_python() -> PathBuf {
    let python = std::env::var_os("NOTIFIER_HTTP_ECE_PYTHON").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/notifier-http-ece/bin/python")
        },
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "Python with http_ece (PyPI) is missing at {}: run scripts/test, which installs it into \
         ~/.cache/notifier-http-ece, or set NOTIFIER_HTTP_ECE_PYTHON",
        python.display()
    );
    python
}

#[tokio::test]
async fn a_push_from_the_notifier_decrypts_with_pywebpushs_http_ece() {
    let python = http_ece_python();
    let s = setup(false).await;
    let sub = s.subscribe("ivan");
    assert_eq!(s.send(&sub.json()).await, PushOutcome::Delivered);
    let message = s
        .stand_in
        .webpush_messages("ivan")
        .pop()
        .expect("the push arrived");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notifier/webpush_decrypt.py");
    let decrypt = |body: &[u8]| {
        std::process::Command::new(&python)
            .arg(&script)
            .arg(file("body", body))
            .arg(file("key", &sub.private_key))
            .arg(file("auth", &sub.auth))
            .output()
            .expect("python runs")
    };
    let output = decrypt(&message.body);
    assert!(
        output.status.success(),
        "http_ece could not decrypt the push: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.stdout, message.plaintext,
        "http_ece and the stand-in read the same"
    );
    let plaintext: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plaintext["title"], "Rust入門に新しいトークが投稿されました");
    s.assert_all_decrypted();
    // And http_ece does check: one byte changed in the ciphertext, and it refuses.
    let mut tampered = message.body.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(
        !decrypt(&tampered).status.success(),
        "a tampered body must not decrypt"
    );
}

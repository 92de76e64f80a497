//! The console (contract §13) in a real browser: headless Chromium (Debian's `chromium`) driven
//! by Playwright for Python (`console_page.py` beside this file), against a live replica sending
//! a split event to a slow stand-in: no events without a token, a running row that advances, its
//! Cancel button, and screenshots of both states under `target/ui-shots/`. `scripts/test`
//! installs Chromium and Playwright; without them this test fails and names what is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notifier::Backend;

use crate::faults::Cluster;
use crate::gaurun::start_api_replica;

const TOKEN: &str = "console-test-token-0123456789";

/// The Python with Playwright: `NOTIFIER_PLAYWRIGHT_PYTHON`, or the venv `scripts/test` makes.
fn playwright_python() -> PathBuf {
    if let Some(python) = std::env::var_os("NOTIFIER_PLAYWRIGHT_PYTHON") {
        return python.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/notifier-playwright/bin/python")
}

#[tokio::test]
async fn the_console_shows_a_running_event_advance_and_cancels_it_in_a_real_browser() {
    notifier::install_crypto_provider();
    let python = playwright_python();
    assert!(
        python.exists(),
        "Playwright for Python is needed at {} (scripts/test installs it, with Debian's chromium)",
        python.display()
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed at /usr/bin/chromium (scripts/test installs it)"
    );
    let mut cluster = Cluster::new(Backend::Postgres, 20_000, 200, "").await;
    let env = [
        ("NOTIFIER_JOB_SIZE", "2000"),
        ("NOTIFIER_API_TOKENS", TOKEN),
    ];
    let base = start_api_replica(&mut cluster, &env).await;
    cluster.wait_subscribed(1).await;
    cluster.publish(r#"{"talk_id": 1}"#).await;
    cluster.wait_delivered(200, Duration::from_secs(30)).await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notifier/console_page.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .args([&base, TOKEN, "talk_posted:1"])
        .arg(&shots)
        .output()
        .await
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}\n{}", cluster.logs());
    for shot in ["running.png", "finished.png", "phone.png"] {
        let size = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "{shot} was saved ({size} bytes)");
    }
    assert!(cluster.delivered() < 20_000, "cancelled before the end");
}

//! The `notifier` binary as an operator runs it: demo, run, publish, SIGTERM, bad settings, help.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_notifier");

/// The binary with a clean environment: only what the test sets (and PATH).
fn notifier(dir: &Path, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NOTIFIER_CONFIG", config_path())
        .current_dir(dir)
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

fn terminate(child: &Child) {
    let pid = child.id().expect("the child is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn the_demo_then_a_publish_prints_dry_run_pushes_and_a_summary_and_sigterm_exits_0() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let channel = unique("talk_posted");
    let vars = [
        ("DATABASE_URL", "sqlite://demo.db"),
        ("NOTIFIER_CHANNEL", channel.as_str()),
        ("LOG_FORMAT", "json"),
    ];

    let demo = notifier(dir.path(), &vars)
        .arg("demo")
        .output()
        .await
        .unwrap();
    let demo_out = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{demo_out}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(
        demo_out.contains(&format!("redis-cli PUBLISH {channel} '{{\"talk_id\": 1}}'")),
        "{demo_out}"
    );
    assert!(
        demo_out.contains("json_encode([\"talk_id\" => 1])"),
        "{demo_out}"
    );
    let again = notifier(dir.path(), &vars)
        .arg("demo")
        .output()
        .await
        .unwrap();
    assert!(again.status.success(), "a second demo is harmless");

    let mut run = notifier(dir.path(), &vars);
    run.arg("run").stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = run.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    wait_for_subscriber(REDIS_URL, &channel).await;

    let published = notifier(dir.path(), &vars)
        .args(["publish", "1"])
        .output()
        .await
        .unwrap();
    assert!(published.status.success());
    assert!(String::from_utf8_lossy(&published.stdout).contains("1 subscriber(s)"));

    let mut pushes = Vec::new();
    let mut everything = String::new();
    let summary = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            everything.push_str(&line);
            everything.push('\n');
            let json: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            match json["message"].as_str() {
                Some("Dry run: would push.") => pushes.push(json),
                Some("Event processed.") => return json,
                _ => {}
            }
        }
        panic!("the worker ended before the summary:\n{everything}");
    })
    .await
    .expect("a summary within 20 s");

    assert_eq!(pushes.len(), 4);
    for push in &pushes {
        assert_eq!(push["event_id"], "talk_posted:1");
        assert!(push["provider"] == "fcm" || push["provider"] == "apns");
        let token = push["token"].as_str().unwrap();
        assert!(
            token.ends_with('…') && token.chars().count() == 9,
            "masked: {token}"
        );
        assert!(push["title"].as_str().unwrap().contains("Morning Radio"));
        assert_eq!(push["body"], "Episode 1: おはようございます");
    }
    for field in [
        "event_id",
        "talk_id",
        "recipients",
        "sent",
        "failed",
        "pruned",
        "skipped",
        "dry_run",
        "elapsed_ms",
    ] {
        assert!(
            summary.get(field).is_some(),
            "summary has {field}: {summary}"
        );
    }
    assert_eq!(summary["recipients"], 4);
    assert_eq!(summary["sent"], 4);
    assert_eq!(summary["dry_run"], true);
    for token in [
        "demo-fcm-token-ben-galaxy-0002",
        "b3f1c0de00000000000000000000000000000000000000000000000000000003",
    ] {
        assert!(!everything.contains(token), "a whole token reached the log");
    }

    terminate(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_wrong_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("NOTIFIER_CONCURRENCY", "zero"),
        ("DATABASE_URL", "oracle://db"),
        ("NOTIFIER_SEND_MODE", "loud"),
    ] {
        let out = notifier(dir.path(), &[(var, value)])
            .arg("run")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} must not start");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var), "{stderr}");
    }
}

#[tokio::test]
async fn production_without_provider_credentials_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = notifier(
        dir.path(),
        &[("APP_ENV", "production"), ("DATABASE_URL", "sqlite://x.db")],
    )
    .arg("run")
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GOOGLE_APPLICATION_CREDENTIALS"));
}

#[tokio::test]
async fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for command in [
        &[][..],
        &["run"],
        &["migrate"],
        &["publish"],
        &["demo"],
        &["send"],
        &["check"],
    ] {
        let out = notifier(dir.path(), &[])
            .args(command)
            .arg("--help")
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{command:?} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{command:?}"
        );
    }
}

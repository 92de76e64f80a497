//! The `notifier` binary as an operator runs it: demo, run, publish, SIGTERM, bad settings, help.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_notifier");

/// The binary with a clean environment: only what the test sets (and PATH).
pub(crate) fn notifier(dir: &Path, vars: &[(&str, &str)]) -> Command {
    // Event claims live in the shared Redis: a key prefix of this test's own keeps runs apart.
    let config = dir.join("notifier.toml");
    if !config.exists() {
        std::fs::write(
            &config,
            format!("[claims]\nkey_prefix = \"{}:\"\n", unique("cli")),
        )
        .unwrap();
    }
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NOTIFIER_CONFIG", &config)
        // Processes run side by side: each listens on a port of its own.
        .env("NOTIFIER_HTTP_ADDR", "127.0.0.1:0")
        // The shared Redis the test publishes to (TEST_REDIS_URL), not the binary's default.
        .env("REDIS_URL", redis_url())
        .current_dir(dir)
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// `notifier run` spawned from `command`, its stdout's lines piped back, once it has subscribed
/// to `channel`.
async fn run_subscribed(
    mut command: Command,
    channel: &str,
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = command.arg("run").stdout(Stdio::piped()).spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    wait_for_subscriber(&redis_url(), channel).await;
    (child, lines)
}

/// Reads JSON log lines into `everything` until one has `message`; returns that line.
async fn read_until(
    lines: &mut Lines<BufReader<ChildStdout>>,
    message: &str,
    everything: &mut String,
    mut also: impl FnMut(&Value),
) -> Value {
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            everything.push_str(&line);
            everything.push('\n');
            let json: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            // LOG_FORMAT=json: every line an object with these stable fields.
            for field in ["timestamp", "level", "message"] {
                assert!(json.get(field).is_some(), "{field} in {line}");
            }
            if json["message"] == message {
                return Some(json);
            }
            also(&json);
        }
        None
    };
    match tokio::time::timeout(Duration::from_secs(30), read).await {
        Ok(Some(json)) => json,
        Ok(None) => panic!("the process ended before {message:?}:\n{everything}"),
        Err(_) => panic!("no {message:?} within 30 s:\n{everything}"),
    }
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
    wait_for_subscriber(&redis_url(), &channel).await;

    let published = notifier(dir.path(), &vars)
        .args(["publish", "1"])
        .output()
        .await
        .unwrap();
    assert!(published.status.success());
    assert!(String::from_utf8_lossy(&published.stdout).contains("1 subscriber(s)"));

    let mut pushes = Vec::new();
    let mut everything = String::new();
    let summary = read_until(&mut lines, "Event processed.", &mut everything, |json| {
        if json["message"] == "Dry run: would push." {
            pushes.push(json.clone());
        }
    })
    .await;

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
async fn every_json_line_of_an_event_carries_its_span_fields_even_in_push_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let db = scenario_db(notifier::Backend::Sqlite).await;
    let channel = unique("talk_posted");
    let vars = [
        ("DATABASE_URL", db.url.as_str()),
        ("NOTIFIER_CHANNEL", channel.as_str()),
        ("LOG_FORMAT", "json"),
    ];
    let (child, mut lines) = run_subscribed(notifier(dir.path(), &vars), &channel).await;
    publish(
        &redis_url(),
        &channel,
        r#"{"talk_id": 100, "event_id": "span-check-1"}"#,
    )
    .await;

    let (mut pushes, mut outside) = (Vec::new(), Vec::new());
    let mut everything = String::new();
    read_until(
        &mut lines,
        "Event processed.",
        &mut everything,
        |json| match json["message"].as_str() {
            Some("Dry run: would push.") => pushes.push(json.clone()),
            Some("Starting notifier.") => outside.push(json.clone()),
            _ => {}
        },
    )
    .await;
    terminate(&child);

    // Logged in the push tasks the fan-out spawns; the line names none of these fields itself.
    assert_eq!(pushes.len(), SCENARIO_RECIPIENTS.len(), "{everything}");
    for push in &pushes {
        assert_eq!(push["event_id"], "span-check-1", "{push}");
        assert_eq!(push["talk_id"], 100, "{push}");
        assert_eq!(push["dry_run"], true, "{push}");
    }
    assert_eq!(outside.len(), 1, "{everything}");
    assert!(outside[0].get("event_id").is_none(), "{}", outside[0]);
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

/// A stand-in in this process, and the variables that point the binary at it.
async fn stand_in(dir: &Path) -> (stand_in::StandIn, Vec<(&'static str, String)>) {
    stand_in_with(dir, Default::default()).await
}

async fn stand_in_with(
    dir: &Path,
    config: stand_in::StandInConfig,
) -> (stand_in::StandIn, Vec<(&'static str, String)>) {
    let stand_in = stand_in::StandIn::start(config).await.unwrap();
    let (ca, account) = stand_in.write_files(&dir.join("stand-in")).unwrap();
    let vars = vec![
        ("FCM_ENDPOINT", stand_in.tls_endpoint()),
        ("NOTIFIER_EXTRA_CA_FILE", ca.display().to_string()),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            account.display().to_string(),
        ),
    ];
    (stand_in, vars)
}

fn refs<'a>(
    vars: &'a [(&'static str, String)],
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend(more.iter().copied());
    all
}

/// Strings that must never appear in any output: the key, a password, the bearer token.
fn assert_no_secret(output: &str) {
    let key_line = stand_in::SERVICE_ACCOUNT_KEY.lines().nth(3).unwrap();
    for secret in ["PRIVATE KEY", key_line, "hunter2-secret", "ya29.stand-in"] {
        assert!(
            !output.contains(secret),
            "{secret:?} reached the output:\n{output}"
        );
    }
}

#[tokio::test]
async fn check_passes_against_the_stand_in_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (_stand_in, vars) = stand_in(dir.path()).await;
    let db = TestDb::new(notifier::Backend::Postgres).await;
    let url = db.url.replace("postgres@", "postgres:hunter2-secret@");
    let out = notifier(
        dir.path(),
        &refs(&vars, &[("DATABASE_URL", &url), ("APP_ENV", "production")]),
    )
    .arg("check")
    .output()
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok      FCM"), "{text}");
    assert!(text.contains("ok      database"), "{text}");
    assert!(
        text.contains("postgres:***@"),
        "the password is masked: {text}"
    );
    assert_no_secret(&text);

    // A broken service account fails the check, naming the setting.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{}").unwrap();
    let out = notifier(
        dir.path(),
        &refs(
            &vars,
            &[
                ("DATABASE_URL", &url),
                ("GOOGLE_APPLICATION_CREDENTIALS", broken.to_str().unwrap()),
            ],
        ),
    )
    .arg("check")
    .output()
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        text.contains("FAILED  FCM (GOOGLE_APPLICATION_CREDENTIALS)"),
        "{text}"
    );
}

#[tokio::test]
async fn send_delivers_one_push_and_shows_only_a_masked_token() {
    let dir = tempfile::tempdir().unwrap();
    let (stand_in, vars) = stand_in(dir.path()).await;
    let token = "tok-abcdefghijklmnopqrstuvwxyz";
    let out = notifier(dir.path(), &refs(&vars, &[("APP_ENV", "production")]))
        .args([
            "send",
            "--provider",
            "fcm",
            "--token",
            token,
            "--title",
            "Hello",
            "--body",
            "From the notifier",
        ])
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("tok-abcd…") && text.contains("delivered"),
        "{text}"
    );
    assert!(!text.contains(token), "{text}");
    assert_eq!(stand_in.counters.snapshot()["delivered"], 1);

    // Outside production the same command is a dry run: nothing reaches the stand-in.
    let out = notifier(dir.path(), &refs(&vars, &[]))
        .args([
            "send",
            "--provider",
            "fcm",
            "--token",
            token,
            "--title",
            "t",
            "--body",
            "b",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stand_in.counters.snapshot()["requests"], 1);
}

#[tokio::test]
async fn a_live_run_delivers_and_its_output_holds_no_secret_and_no_whole_token() {
    let dir = tempfile::tempdir().unwrap();
    let (stand_in, vars) = stand_in(dir.path()).await;
    let db = scenario_db(notifier::Backend::Postgres).await;
    db.execute(&["INSERT INTO devices (id, user_id, provider, platform, token) VALUES
        (21, 2, 'fcm', 'android', 'tok-unregistered-device-21'), (22, 2, 'fcm', 'android', 'tok-flaky-device-22')"])
        .await;
    let url = db.url.replace("postgres@", "postgres:hunter2-secret@");
    let channel = unique("talk_posted");
    let all = refs(
        &vars,
        &[
            ("DATABASE_URL", &url),
            ("APP_ENV", "production"),
            ("NOTIFIER_CHANNEL", &channel),
            ("LOG_FORMAT", "json"),
        ],
    );

    let mut command = notifier(dir.path(), &all);
    command.stderr(Stdio::piped());
    let (mut child, mut lines) = run_subscribed(command, &channel).await;
    publish(&redis_url(), &channel, r#"{"talk_id": 100}"#).await;

    let mut everything = String::new();
    let summary = read_until(&mut lines, "Event processed.", &mut everything, |_| {}).await;
    terminate(&child);
    let status = child.wait().await.unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    everything.push_str(&stderr);

    // FCM devices 2, 6 and the flaky 22 delivered, 21 pruned; the APNs ones skipped.
    let stats = stand_in.counters.snapshot();
    assert_eq!(summary["sent"], 3, "{summary}");
    assert_eq!(summary["sent"], stats["delivered"], "{stats}");
    assert_eq!(summary["pruned"], 1);
    assert_eq!(summary["dry_run"], false);
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        db.disabled().await,
        ["5:fcm:UNREGISTERED", "21:fcm:UNREGISTERED"]
    );
    assert_no_secret(&everything);
    for token in [
        "token-ben-android-02",
        "token-dan-browser-006",
        "tok-unregistered-device-21",
        "tok-flaky-device-22",
        "token-ben-iphone-0003",
    ] {
        assert!(
            !everything.contains(token),
            "{token} reached the log:\n{everything}"
        );
    }
}

/// An audience read is one statement, open for as long as its lane sends; sqlx's WARN for any
/// statement over a second named the audience query slow on every event of more than a second.
#[tokio::test]
async fn an_audience_read_open_for_seconds_is_not_logged_as_a_slow_statement() {
    let dir = tempfile::tempdir().unwrap();
    let config = stand_in::StandInConfig {
        latency: Duration::from_millis(100),
        ..Default::default()
    };
    let (stand_in, vars) = stand_in_with(dir.path(), config).await;
    let db = scenario_db(notifier::Backend::Postgres).await;
    // Forty more devices of a listener. In pages of two, the lane holds six of them and two in
    // flight, so the read stays open until the last eight: two seconds at least, at 100 ms each
    // and at most two at a time.
    db.execute(&["INSERT INTO devices (id, user_id, provider, platform, token)
        SELECT 100 + i, 2, 'fcm', 'android', 'tok-long-read-' || i FROM generate_series(1, 40) AS i"])
        .await;
    let config = format!(
        "[claims]\nkey_prefix = \"{}:\"\n[database]\npage_size = 2\n",
        unique("cli")
    );
    std::fs::write(dir.path().join("notifier.toml"), config).unwrap();
    let channel = unique("talk_posted");
    let all = refs(
        &vars,
        &[
            ("DATABASE_URL", &db.url),
            ("APP_ENV", "production"),
            ("NOTIFIER_CHANNEL", &channel),
            ("NOTIFIER_CONCURRENCY", "2"),
            ("LOG_FORMAT", "json"),
        ],
    );
    let (child, mut lines) = run_subscribed(notifier(dir.path(), &all), &channel).await;
    publish(&redis_url(), &channel, r#"{"talk_id": 100}"#).await;

    let mut everything = String::new();
    let mut warnings = Vec::new();
    let summary = read_until(&mut lines, "Event processed.", &mut everything, |json| {
        if json["level"] == "WARN" {
            warnings.push(json.clone());
        }
    })
    .await;
    terminate(&child);

    assert_eq!(summary["sent"], 42, "{summary}");
    assert_eq!(stand_in.counters.snapshot()["delivered"], 42);
    let elapsed_ms = summary["elapsed_ms"].as_u64().unwrap();
    assert!(
        elapsed_ms >= 2_000,
        "the read was open {elapsed_ms} ms at most"
    );
    assert!(warnings.is_empty(), "{warnings:#?}");
}

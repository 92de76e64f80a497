//! The monitoring kit users import: the Grafana dashboard, the Prometheus alert rules and the
//! compose profile that runs both. Checked with promtool, against the compose file (read as a
//! file: there is no Docker engine here) and against what a real notifier exports after a live
//! event.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use notifier::Backend;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::delivery::Live;
use crate::helpers::*;
use crate::operations::{compose, get, sample, spawn_run, wait_for};
use crate::promql::{Exported, Reads};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn read(file: &str) -> String {
    let path = deploy(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(file: &str) -> Yaml {
    YamlLoader::load_from_str(&read(file))
        .unwrap_or_else(|e| panic!("{file} is YAML: {e}"))
        .remove(0)
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/notifier.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/notifier.json is JSON: {e}"))
}

/// Runs promtool; its output when it succeeds, a panic with its output when it does not.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed (Debian package prometheus: apt-get install prometheus): {e}"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Every alert rule, as (name, rule).
fn alert_rules() -> Vec<(String, Yaml)> {
    let doc = yaml("prometheus/alerts.yml");
    let groups = doc["groups"].as_vec().expect("alerts.yml has groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_vec().cloned().unwrap_or_default())
        .map(|rule| {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            (name.to_string(), rule)
        })
        .collect()
}

/// Every PromQL expression the dashboard runs, with its panel's title.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            queries.push((title.to_string(), expr.to_string()));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            // `label_values(metric{…}, label)`: the metric is what must exist.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map_or(query, |(metric, _)| metric);
            queries.push((format!("${}", variable["name"]), inner.to_string()));
        }
    }
    queries
}

/// The dashboard's expression with Grafana's variables as Prometheus would receive them.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "6h")
        .replace("$instance", ".*")
}

#[test]
fn the_alert_rules_pass_promtool_and_their_own_unit_tests() {
    let rules = deploy("prometheus/alerts.yml").display().to_string();
    assert!(promtool(&["check", "rules", &rules]).contains("SUCCESS: 5 rules found"));
    promtool(&[
        "test",
        "rules",
        &deploy("prometheus/alerts_test.yml").display().to_string(),
    ]);
    let config = deploy("prometheus/prometheus.yml").display().to_string();
    assert!(promtool(&["check", "config", &config]).contains("1 rule files found"));

    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    for needed in [
        "NotifierPushFailures",
        "NotifierCredentialsRejected",
        "NotifierWebPushSkipped",
        "NotifierNoEvents",
        "NotifierDown",
    ] {
        assert!(
            names.contains(&needed),
            "alerts.yml has {needed}: {names:?}"
        );
    }
    for (name, rule) in &rules {
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name} has a severity: {severity:?}"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.len() > 10, "{name} has a {annotation}");
        }
    }
    // The readiness rule watches the job the shipped Prometheus configuration scrapes.
    let job = yaml("prometheus/prometheus.yml")["scrape_configs"][0]["job_name"]
        .as_str()
        .map(str::to_string);
    let (_, down) = rules.iter().find(|(n, _)| n == "NotifierDown").unwrap();
    let expr = down["expr"].as_str().unwrap();
    assert!(
        expr.contains(&format!("job=\"{}\"", job.clone().unwrap_or_default())),
        "{expr} watches job {job:?}"
    );
}

#[test]
fn the_dashboard_has_the_panels_operators_need_and_valid_queries() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    assert_eq!(dashboard["uid"], "notifier");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a data-source variable, so the dashboard imports onto any Prometheus"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64()), "panel ids are unique");
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{panel}");
        }
    }
    // Each panel an operator asks for, with the metric (and grouping) that answers it.
    for (title, needle) in [
        (
            "Events by result",
            "sum by (result) (rate(notifier_events_total",
        ),
        (
            "Pushes by provider and outcome",
            "by (app, provider, outcome)",
        ),
        (
            "Push latency quantiles",
            "histogram_quantile(0.99, sum by (le, provider) (rate(notifier_push_duration_seconds_bucket",
        ),
        ("Pushes in flight", "notifier_pushes_in_flight"),
        ("Retries by reason", "by (app, provider, reason)"),
        ("Pruned tokens", "notifier_tokens_pruned_total"),
        ("Redis reconnects", "notifier_redis_reconnects_total"),
        ("Skipped pushes", "outcome=\"skipped\""),
        (
            "Pushes held by the fence",
            "sum by (instance, reason) (increase(notifier_fence_holds_total",
        ),
    ] {
        let panel = panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("a panel titled {title:?}"));
        let exprs: Vec<&str> = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .collect();
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "{title}: {exprs:?} has {needle}"
        );
    }

    // promtool parses every query, as recording rules in a file of their own.
    let dir = tempfile::tempdir().unwrap();
    let rules: String = dashboard_queries(&dashboard)
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = serde_json::to_string(&as_sent(expr)).unwrap();
            format!("      - record: dashboard:query{i}\n        expr: {expr}\n")
        })
        .collect();
    let file = dir.path().join("dashboard.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    promtool(&["check", "rules", &file.display().to_string()]);
}

#[test]
fn the_monitoring_profile_runs_prometheus_and_grafana_on_the_shipped_files() {
    let doc = compose();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let services = &doc["services"];
    // Every file a monitoring service mounts exists, as the file or directory it stands for.
    let mut mounted = BTreeMap::new();
    for name in ["prometheus", "grafana"] {
        let service = &services[name];
        let profiles = service["profiles"].as_vec().expect("profiles");
        assert_eq!(profiles, &[Yaml::String("monitoring".into())], "{name}");
        for volume in service["volumes"].as_vec().expect("volumes") {
            let spec = volume.as_str().unwrap();
            let mut parts = spec.split(':');
            let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
            if let Some(relative) = source.strip_prefix("./") {
                assert!(root.join(relative).exists(), "{name} mounts {source}");
                mounted.insert(target.to_string(), root.join(relative));
            }
        }
    }
    let in_container = |path: &str| -> PathBuf {
        let (target, source) = mounted
            .iter()
            .filter(|(t, _)| Path::new(path).starts_with(t))
            .max_by_key(|(t, _)| t.len())
            .unwrap_or_else(|| panic!("nothing mounted at {path}: {mounted:?}"));
        match Path::new(path).strip_prefix(target).unwrap() {
            rest if rest.as_os_str().is_empty() => source.clone(),
            rest => source.join(rest),
        }
    };
    // Prometheus reads its configuration and, beside it, the rules.
    let command = services["prometheus"]["command"].as_vec().unwrap();
    let config = command
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--config.file="))
        .expect("--config.file");
    let config = in_container(config);
    assert_eq!(config, deploy("prometheus/prometheus.yml"));
    assert!(config.with_file_name("alerts.yml").exists());
    // It scrapes the notifier services, on the port they listen on.
    let scrape = &yaml("prometheus/prometheus.yml")["scrape_configs"][0]["dns_sd_configs"][0];
    assert_eq!(scrape["port"].as_i64(), Some(9464));
    for target in scrape["names"].as_vec().unwrap() {
        let target = target.as_str().unwrap();
        let addr = services[target]["environment"]["NOTIFIER_HTTP_ADDR"].as_str();
        assert_eq!(addr, Some("0.0.0.0:9464"), "service {target}");
    }
    // Grafana: the data source is that Prometheus; the dashboard provider's folder holds the
    // dashboard.
    let provisioning = in_container("/etc/grafana/provisioning");
    let datasource = YamlLoader::load_from_str(
        &std::fs::read_to_string(provisioning.join("datasources/prometheus.yml")).unwrap(),
    )
    .unwrap()
    .remove(0);
    let url = datasource["datasources"][0]["url"].as_str().unwrap();
    assert_eq!(url, "http://prometheus:9090");
    assert!(services["prometheus"]["ports"].as_vec().unwrap()[0].as_str() == Some("9090:9090"));
    let providers = YamlLoader::load_from_str(
        &std::fs::read_to_string(provisioning.join("dashboards/notifier.yml")).unwrap(),
    )
    .unwrap()
    .remove(0);
    let folder = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(
        in_container(&format!("{folder}/notifier.json")),
        deploy("grafana/notifier.json")
    );
}

/// `notifier run` sending live to the stand-in for FCM, APNs and Web Push, on the scenario's
/// devices plus a dead FCM token (pruned), a flaky APNs one (retried once) and a browser of user
/// 2's, on a channel of its own.
struct LiveNotifier {
    child: tokio::process::Child,
    base: String,
    channel: String,
    _live: Live,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

impl LiveNotifier {
    async fn start() -> Self {
        let live = Live::start().await;
        let db = scenario_db(Backend::Sqlite).await;
        let vapid_key = rcgen::KeyPair::generate().unwrap();
        let browser = live
            .stand_in
            .webpush_subscribe("mon-63", Some(vapid_key.public_key_raw()))
            .json();
        db.execute(&[&format!(
            "INSERT INTO devices (id, user_id, provider, platform, token) VALUES
            (61, 2, 'fcm', 'android', 'tok-unregistered-61'),
            (62, 2, 'apns', 'ios', 'apns-flaky-62'),
            (63, 2, 'webpush', 'web', '{browser}')"
        )])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let vapid = dir.path().join("vapid.pem");
        std::fs::write(&vapid, vapid_key.serialize_pem()).unwrap();
        let vapid = vapid.display().to_string();
        let config = dir.path().join("n.toml");
        std::fs::write(
            &config,
            format!(
                "[claims]\nkey_prefix = \"{}:\"\n\n[retry]\ninitial_backoff_ms = 20\n\n\
                 [webpush]\nallowed_hosts = [\"localhost\"]\n",
                unique("mon")
            ),
        )
        .unwrap();
        let config = config.display().to_string();
        let channel = unique("talk_posted");
        let http_addr = format!("127.0.0.1:{}", free_port());
        let base = format!("http://{http_addr}");
        let apns_key = live.dir.path().join("apns-key.p8").display().to_string();
        let endpoint = live.stand_in.tls_endpoint();
        let live_vars = live.vars();
        let redis = redis_url();
        let mut vars: Vec<(&str, &str)> = live_vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.extend([
            ("NOTIFIER_CONFIG", config.as_str()),
            ("DATABASE_URL", &db.url),
            ("REDIS_URL", redis.as_str()),
            ("NOTIFIER_CHANNEL", &channel),
            ("NOTIFIER_HTTP_ADDR", &http_addr),
            ("APNS_ENDPOINT", &endpoint),
            ("APNS_KEY_PATH", &apns_key),
            ("APNS_KEY_ID", "STANDIN123"),
            ("APNS_TEAM_ID", "TEAM123456"),
            ("APNS_TOPIC", "com.example.talks"),
            ("WEBPUSH_VAPID_PRIVATE_KEY_PATH", &vapid),
            ("WEBPUSH_VAPID_SUBJECT", "mailto:ops@example.com"),
        ]);
        let child = spawn_run(&vars);
        wait_for(&format!("{base}/readyz"), 200).await;
        Self {
            child,
            base,
            channel,
            _live: live,
            _db: db,
            _dir: dir,
        }
    }

    async fn metrics(&self) -> String {
        get(&format!("{}/metrics", self.base)).await.1
    }
}

#[tokio::test]
async fn every_metric_and_label_the_dashboard_and_the_rules_read_is_exported_after_a_live_event() {
    // Arrange
    let mut notifier = LiveNotifier::start().await;

    // Before any event: the series with known labels exist at zero, so Prometheus's increase()
    // sees their first change and the no-events alert has a series to test.
    let before = notifier.metrics().await;
    for line in [
        "notifier_redis_reconnects_total 0",
        "notifier_events_total{result=\"processed\"} 0",
        "notifier_pushes_total{app=\"default\",provider=\"apns\",outcome=\"credentials_rejected\"} 0",
        "notifier_tokens_pruned_total{app=\"default\",provider=\"fcm\"} 0",
        "notifier_pushes_total{app=\"default\",provider=\"webpush\",outcome=\"skipped\"} 0",
        "notifier_fence_holds_total{reason=\"checkpoint\"} 0",
    ] {
        assert!(before.lines().any(|l| l == line), "{line} in:\n{before}");
    }

    // Act: one event through the channel.
    let channel = &notifier.channel;
    wait_for_subscriber(&redis_url(), channel).await;
    let now = chrono::Utc::now().to_rfc3339();
    let event = format!(r#"{{"talk_id": 100, "published_at": "{now}"}}"#);
    publish(&redis_url(), channel, &event).await;
    let mut metrics = String::new();
    for _ in 0..150 {
        metrics = notifier.metrics().await;
        if sample(&metrics, "notifier_events_total{result=\"processed\"}") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    notifier.child.start_kill().unwrap();

    // Assert: the event reached every provider, pruned and retried…
    let m = |s: &str| sample(&metrics, s);
    assert_eq!(
        m("notifier_events_total{result=\"processed\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        m("notifier_pushes_total{app=\"default\",provider=\"fcm\",outcome=\"delivered\"}"),
        2.0
    );
    assert_eq!(
        m("notifier_pushes_total{app=\"default\",provider=\"apns\",outcome=\"delivered\"}"),
        4.0
    );
    assert_eq!(
        m("notifier_pushes_total{app=\"default\",provider=\"webpush\",outcome=\"delivered\"}"),
        1.0
    );
    assert_eq!(
        m("notifier_pushes_total{app=\"default\",provider=\"fcm\",outcome=\"unregistered\"}"),
        1.0
    );
    assert_eq!(
        m("notifier_tokens_pruned_total{app=\"default\",provider=\"fcm\"}"),
        1.0
    );
    let retries = metrics
        .lines()
        .filter(|l| {
            l.starts_with("notifier_push_retries_total{app=\"default\",provider=\"apns\",reason=")
        })
        .count();
    assert_eq!(retries, 1, "{metrics}");

    // …and every metric, label and label value the dashboard and the rules read is exported.
    let exported = Exported::parse(&metrics);
    let mut queries = dashboard_queries(&dashboard());
    for (name, rule) in alert_rules() {
        queries.push((name, rule["expr"].as_str().unwrap().to_string()));
    }
    let mut complaints = Vec::new();
    for (place, expr) in &queries {
        let reads = Reads::of(expr);
        assert!(!reads.metrics.is_empty(), "{place}: {expr} reads a metric");
        complaints.extend(
            exported
                .complaints(&reads)
                .iter()
                .map(|c| format!("{place}: {c}")),
        );
    }
    assert!(complaints.is_empty(), "{complaints:#?}\n{metrics}");
    // promtool's linter finds nothing wrong with the exposition either (HELP lines included).
    let lint = promtool_stdin(&["check", "metrics"], &metrics);
    assert!(lint.trim().is_empty(), "{lint}");
}

fn promtool_stdin(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed (Debian package prometheus: apt-get install prometheus): {e}"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

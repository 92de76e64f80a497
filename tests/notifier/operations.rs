//! Running it like a production service: the status listener, Prometheus metrics after a real
//! event, readiness through a Redis outage, JSON logs, and the container files (read as files:
//! there is no Docker engine here).

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use notifier::Backend;
use tokio::process::Command;

use crate::helpers::*;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_notifier");

pub(crate) async fn get(url: &str) -> (u16, String) {
    init_tracing();
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// The value of a sample line `name{labels} value` in Prometheus text, 0 when absent.
pub(crate) fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

pub(crate) async fn wait_for(url: &str, status: u16) -> String {
    for _ in 0..200 {
        let (got, body) = get(url).await;
        if got == status {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered {status}");
}

/// `notifier run` with only these variables (and PATH), as a service manager would start it;
/// killed when dropped.
pub(crate) fn spawn_run(vars: &[(&str, &str)]) -> tokio::process::Child {
    Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the notifier binary starts")
}

#[tokio::test]
async fn health_readiness_and_metrics_follow_a_real_event_and_a_redis_outage() {
    // Arrange: a notifier (dry run) on a Redis of the test's own.
    let mut redis = OwnRedis::start().await;
    let db = scenario_db(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("n.toml"),
        format!("[claims]\nkey_prefix = \"{}:\"\n", unique("ops")),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let channel = unique("talk_posted");
    let config = dir.path().join("n.toml").display().to_string();
    let mut child = spawn_run(&[
        ("NOTIFIER_CONFIG", &config),
        ("DATABASE_URL", &db.url),
        ("REDIS_URL", &redis.url()),
        ("NOTIFIER_CHANNEL", &channel),
        ("NOTIFIER_HTTP_ADDR", &format!("127.0.0.1:{port}")),
        ("LOG_FORMAT", "json"),
    ]);

    // Alive, then ready once subscribed.
    wait_for(&format!("{base}/healthz"), 200).await;
    assert_eq!(wait_for(&format!("{base}/readyz"), 200).await, "ready\n");
    let before = get(&format!("{base}/metrics")).await.1;
    assert_eq!(
        sample(&before, "notifier_build_info{version=\"0.1.0\"}"),
        1.0,
        "{before}"
    );

    // Act: one event through the real channel.
    wait_for_subscriber(&redis.url(), &channel).await;
    publish(
        &redis.url(),
        &channel,
        r#"{"talk_id": 100, "published_at": 1}"#,
    )
    .await; // stale
    let event = format!(
        r#"{{"talk_id": 100, "published_at": "{}"}}"#,
        chrono::Utc::now().to_rfc3339()
    );
    publish(&redis.url(), &channel, &event).await;
    publish(&redis.url(), &channel, &event).await; // a duplicate
    publish(&redis.url(), &channel, "not json").await;

    // Assert: the counters and histograms moved by the expected amounts.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = get(&format!("{base}/metrics")).await.1;
        // Events run concurrently: the duplicate and the rejection may be counted before the
        // event they follow has finished.
        if sample(&metrics, "notifier_events_total{result=\"rejected\"}") >= 1.0
            && sample(&metrics, "notifier_events_total{result=\"duplicate\"}") >= 1.0
            && sample(&metrics, "notifier_events_total{result=\"processed\"}") >= 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = |s: &str| sample(&metrics, s);
    assert_eq!(
        m("notifier_events_total{result=\"processed\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(m("notifier_events_total{result=\"duplicate\"}"), 1.0);
    assert_eq!(m("notifier_events_total{result=\"stale\"}"), 1.0);
    assert_eq!(m("notifier_events_total{result=\"rejected\"}"), 1.0);
    assert_eq!(
        m("notifier_pushes_total{app=\"default\",provider=\"fcm\",outcome=\"delivered\"}"),
        2.0
    );
    assert_eq!(
        m("notifier_pushes_total{app=\"default\",provider=\"apns\",outcome=\"delivered\"}"),
        3.0
    );
    assert_eq!(
        m("notifier_pushes_in_flight{app=\"default\",provider=\"fcm\"}"),
        0.0
    );
    assert_eq!(m("notifier_event_recipients_count"), 1.0);
    assert_eq!(m("notifier_event_recipients_sum"), 5.0);
    assert_eq!(m("notifier_event_fanout_seconds_count"), 1.0);
    assert_eq!(
        m("notifier_push_duration_seconds_count{app=\"default\",provider=\"apns\"}"),
        3.0
    );
    assert_eq!(
        m("notifier_event_lag_seconds_count"),
        1.0,
        "processed events only"
    );
    assert!(
        metrics.contains("# TYPE notifier_event_fanout_seconds histogram"),
        "{metrics}"
    );
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("token-") && !line.contains("talk_posted:"),
            "no ids in labels: {line}"
        );
    }

    // Redis goes away: not ready, still alive; it comes back: ready again.
    redis.stop();
    let body = wait_for(&format!("{base}/readyz"), 503).await;
    assert!(body.contains("not subscribed to Redis"), "{body}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    redis.restart().await;
    wait_for(&format!("{base}/readyz"), 200).await;
    let reconnects = sample(
        &get(&format!("{base}/metrics")).await.1,
        "notifier_redis_reconnects_total",
    );
    assert!(reconnects >= 1.0);

    // The container's health check is the notifier itself.
    let health = Command::new(BIN)
        .env_clear()
        .env("NOTIFIER_CONFIG", dir.path().join("n.toml"))
        .env("NOTIFIER_HTTP_ADDR", format!("0.0.0.0:{port}"))
        .arg("healthcheck")
        .output()
        .await
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let dead = Command::new(BIN)
        .env_clear()
        .env("NOTIFIER_CONFIG", dir.path().join("n.toml"))
        .env("NOTIFIER_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .arg("healthcheck")
        .output()
        .await
        .unwrap();
    assert!(!dead.status.success(), "nothing listens any more");
}

#[tokio::test]
async fn a_taken_listen_address_stops_start_up_naming_the_setting() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let db = TestDb::new(Backend::Sqlite).await;
    let out = Command::new(BIN)
        .env_clear()
        .env("NOTIFIER_CONFIG", config_path())
        .env("DATABASE_URL", &db.url)
        .env("NOTIFIER_HTTP_ADDR", &addr)
        .env("REDIS_URL", redis_url())
        .arg("run")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOTIFIER_HTTP_ADDR"));
}

pub(crate) fn compose() -> yaml_rust2::Yaml {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .unwrap();
    merge_keys(
        yaml_rust2::YamlLoader::load_from_str(&text)
            .unwrap()
            .remove(0),
    )
}

/// Applies YAML merge keys (`<<: *anchor`), which compose files use and yaml-rust2 leaves as
/// plain keys: the mapping's own keys win.
fn merge_keys(yaml: yaml_rust2::Yaml) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    match yaml {
        Yaml::Hash(hash) => {
            let merge = Yaml::String("<<".into());
            let mut out = match hash.get(&merge).cloned().map(merge_keys) {
                Some(Yaml::Hash(base)) => base,
                _ => Default::default(),
            };
            for (k, v) in hash {
                if k != merge {
                    out.insert(k, merge_keys(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(items) => Yaml::Array(items.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

#[test]
fn every_variable_compose_gives_the_notifier_is_one_it_understands() {
    let doc = compose();
    let services = doc["services"].as_hash().expect("services");
    let mut checked = 0;
    for (name, service) in services {
        let image_is_ours = !service["build"].is_badvalue()
            || service["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("notifier"));
        if !image_is_ours {
            continue;
        }
        let Some(env) = service["environment"].as_hash() else {
            continue;
        };
        for key in env.keys() {
            let key = key.as_str().unwrap();
            assert!(
                notifier::ENV_VARS.contains(&key),
                "service {:?} sets {key}, which the notifier does not read",
                name.as_str()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "the compose file gives the notifier its settings ({checked})"
    );
}

#[test]
fn the_dockerfile_builds_the_binaries_that_exist_and_checks_health_with_a_real_command() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    for (package, manifest) in [
        ("notifier", "Cargo.toml"),
        ("notifier-stand-in", "crates/stand-in/Cargo.toml"),
    ] {
        let text =
            std::fs::read_to_string(format!("{}/{manifest}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(
            text.contains(&format!("name = \"{package}\"")),
            "{manifest} has {package}"
        );
        assert!(
            dockerfile.contains(&format!("-p {package}")),
            "the Dockerfile builds {package}"
        );
    }
    // The product image, the last stage, carries no stand-in (its own target does).
    let (_, product) = dockerfile.rsplit_once("\nFROM ").expect("stages");
    assert!(!product.contains("notifier-stand-in"), "{product}");
    assert!(dockerfile.contains(" AS stand-in\n"));
    let healthcheck = dockerfile
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(
        healthcheck.contains("\"notifier\", \"healthcheck\""),
        "{healthcheck}"
    );
    assert!(dockerfile.lines().any(|l| l.trim() == "STOPSIGNAL SIGTERM"));
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert_ne!(user.trim(), "root");
    assert!(dockerfile.contains("ca-certificates"));
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore")).exists());
    // The health check command exists in the binary.
    let out = std::process::Command::new(BIN)
        .args(["healthcheck", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn the_compose_services_and_profiles_the_readme_names_exist() {
    let doc = compose();
    let services = doc["services"].as_hash().unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let names: Vec<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for needed in [
        "redis",
        "postgres",
        "migrate",
        "notifier",
        "demo",
        "mariadb",
        "stand-in",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(&needed), "compose has {needed}: {names:?}");
    }
    // The live notifier starts only once the stand-in has written the files it reads.
    let live = &doc["services"]["notifier-live"]["depends_on"];
    assert_eq!(
        live["stand-in"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(live["redis"]["condition"].as_str(), Some("service_healthy"));
    // Every service a `docker compose exec|run|logs|up` line of the README names exists.
    for line in readme.lines().filter(|l| l.contains("docker compose")) {
        let rest = line.split("docker compose").nth(1).unwrap_or_default();
        for verb in ["exec ", "run --rm ", "logs -f ", "up "] {
            if let Some(after) = rest.split(verb).nth(1) {
                // The first word that is not a flag (`up -d notifier-live`).
                let service = after
                    .split_whitespace()
                    .find(|w| !w.starts_with('-'))
                    .unwrap_or_default()
                    .trim_matches('`');
                if !service.is_empty() && !service.starts_with('#') {
                    assert!(
                        names.contains(&service),
                        "README names compose service {service:?}: {line}"
                    );
                }
            }
        }
    }
    let profiles: Vec<String> = services
        .values()
        .flat_map(|s| s["profiles"].as_vec().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    for profile in ["demo", "mysql", "stand-in", "monitoring"] {
        assert!(profiles.iter().any(|p| p == profile), "profile {profile}");
        assert!(
            readme.contains(&format!("--profile {profile}")),
            "README explains --profile {profile}"
        );
    }
}

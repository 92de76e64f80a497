//! The objects a rendering holds, each core one validated, and how they meet: the ports the
//! settings give the notifier, the Services and NetworkPolicy on them, the probes (asked of a
//! running notifier), the grace period against the drain, and the selectors.

use std::collections::BTreeSet;
use std::process::Command;

use notifier::Backend;
use yaml_rust2::Yaml;

use super::{
    GRACE_MARGIN_SECS, KEDA_KINDS, RENDERS, Rendered, int_at, kubernetes_validate, str_at,
};
use crate::helpers::*;
use crate::operations::{spawn_run, wait_for};

#[test]
fn the_base_and_its_overlays_render_and_every_core_object_passes_strict_validation() {
    let validate = kubernetes_validate();
    let dir = tempfile::tempdir().unwrap();
    for render in RENDERS.map(Rendered::of) {
        let kinds: BTreeSet<&str> = render
            .objects
            .iter()
            .filter_map(|(y, _)| y["kind"].as_str())
            .collect();
        for kind in ["ServiceAccount", "ConfigMap", "Service", "Deployment"]
            .into_iter()
            .chain(["PodDisruptionBudget", "NetworkPolicy"])
            .chain(KEDA_KINDS)
        {
            assert!(kinds.contains(kind), "{} renders a {kind}", render.dir);
        }
        let (keda, core): (Vec<_>, Vec<_>) = render.objects.iter().partition(|(y, _)| {
            y["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("keda.sh/"))
        });
        for (object, _) in &keda {
            let kind = object["kind"].as_str().unwrap_or_default();
            assert!(
                KEDA_KINDS.contains(&kind),
                "{}: unexpected KEDA kind {kind}",
                render.dir
            );
        }
        let file = dir.path().join("core.yaml");
        let texts: Vec<&str> = core.iter().map(|(_, text)| text.as_str()).collect();
        std::fs::write(&file, texts.join("\n---\n")).unwrap();
        let out = Command::new(&validate)
            .arg("--strict")
            .arg(&file)
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{}:\n{report}", render.dir);
        assert_eq!(
            report.matches(" passed for resource ").count(),
            core.len(),
            "{report}"
        );
    }
}

#[test]
fn the_deployment_serves_its_ports_and_outlasts_the_drain_of_the_settings_it_loads() {
    for render in RENDERS.map(Rendered::of) {
        let (settings, container) = (render.settings(), render.container());
        let status = i64::from(settings.service.http_addr.port());
        let pod = &render.deployment()["spec"]["template"]["spec"];
        for probe in ["livenessProbe", "readinessProbe"] {
            let port = render.container_port(&container[probe]["httpGet"]["port"]);
            assert_eq!(
                port, status,
                "{}: the {probe} asks NOTIFIER_HTTP_ADDR's port",
                render.dir
            );
        }
        let grace = int_at(pod, "terminationGracePeriodSeconds");
        let drain = settings.service.drain_timeout_secs as i64;
        assert!(
            grace >= drain + GRACE_MARGIN_SECS,
            "{}: grace {grace} s, drain {drain} s",
            render.dir
        );
        let mut served = vec![status];
        served.extend(settings.api.addr.map(|a| i64::from(a.port())));
        for port in &served {
            let targets = render
                .all("Service")
                .into_iter()
                .flat_map(|s| s["spec"]["ports"].as_vec().cloned().unwrap_or_default());
            let mut targets = targets.map(|p| render.container_port(&p["targetPort"]));
            assert!(
                targets.any(|t| t == *port),
                "{}: a Service targets port {port}",
                render.dir
            );
            let ingress = policy_ports(render.one("NetworkPolicy"), "ingress");
            let open = ingress.contains(&(*port, "TCP".to_string()));
            assert!(open, "{}: ingress to {port}", render.dir);
        }
    }
}

/// Ports and protocols a NetworkPolicy's rules of one direction let through.
fn policy_ports(policy: &Yaml, direction: &str) -> Vec<(i64, String)> {
    let rules = policy["spec"][direction]
        .as_vec()
        .cloned()
        .unwrap_or_default();
    let ports = rules
        .iter()
        .flat_map(|r| r["ports"].as_vec().cloned().unwrap_or_default());
    let protocol = |p: &Yaml| p["protocol"].as_str().unwrap_or("TCP").to_string();
    ports.map(|p| (int_at(&p, "port"), protocol(&p))).collect()
}

#[test]
fn every_object_selects_the_deployments_pods_and_the_network_policy_lets_through_what_they_use() {
    for render in RENDERS.map(Rendered::of) {
        let labels = &render.deployment()["spec"]["selector"]["matchLabels"];
        for (kind, selector) in [
            ("Service", &["spec", "selector"][..]),
            ("PodDisruptionBudget", &["spec", "selector", "matchLabels"]),
            ("NetworkPolicy", &["spec", "podSelector", "matchLabels"]),
        ] {
            for object in render.all(kind) {
                let found = selector.iter().fold(object, |y, key| &y[*key]);
                let dir = render.dir;
                assert_eq!(
                    found, labels,
                    "{dir}: the {kind} selects the Deployment's pods"
                );
            }
        }
        let budget = &render.one("PodDisruptionBudget")["spec"];
        assert_eq!(
            int_at(budget, "maxUnavailable"),
            1,
            "one replica evicted at a time"
        );
        // DNS, Redis, PostgreSQL, MySQL, and HTTPS for FCM, Google's OAuth and APNs.
        let policy = render.one("NetworkPolicy");
        let types = policy["spec"]["policyTypes"].as_vec().expect("policyTypes");
        assert!(
            types.contains(&Yaml::String("Egress".into())),
            "{}",
            render.dir
        );
        let egress = policy_ports(policy, "egress");
        for (port, protocol) in [(53, "UDP"), (53, "TCP"), (6379, "TCP"), (5432, "TCP")]
            .into_iter()
            .chain([(3306, "TCP"), (443, "TCP")])
        {
            let open = egress.contains(&(port, protocol.to_string()));
            assert!(open, "{}: egress to {port}/{protocol}", render.dir);
        }
    }
}

#[tokio::test]
async fn the_probes_ask_a_running_notifier_for_routes_it_serves() {
    let render = Rendered::of(RENDERS[0]);
    let container = render.container();
    let db = scenario_db(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("n.toml");
    std::fs::write(
        &config,
        format!("[claims]\nkey_prefix = \"{}:\"\n", unique("k8s")),
    )
    .unwrap();
    let port = free_port();
    // A dry run on loopback: the routes are the status listener's whatever the send mode.
    let _child = spawn_run(&[
        ("NOTIFIER_CONFIG", &config.display().to_string()),
        ("DATABASE_URL", &db.url),
        ("REDIS_URL", &redis_url()),
        ("NOTIFIER_CHANNEL", &unique("talk_posted")),
        ("NOTIFIER_HTTP_ADDR", &format!("127.0.0.1:{port}")),
    ]);
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = str_at(&container[probe]["httpGet"], "path");
        wait_for(&format!("http://127.0.0.1:{port}{path}"), 200).await;
    }
    let annotations = &render.deployment()["spec"]["template"]["metadata"]["annotations"];
    let metrics = str_at(annotations, "prometheus.io/path");
    let body = wait_for(&format!("http://127.0.0.1:{port}{metrics}"), 200).await;
    assert!(
        body.contains("notifier_events_total"),
        "{metrics} is the metrics route"
    );
    assert_eq!(
        str_at(annotations, "prometheus.io/port"),
        render.settings().service.http_addr.port().to_string()
    );
}

//! The ScaledObject: on the streams `notifier check` prints for the Deployment's environment,
//! by their length, one replica per `service.max_concurrent_events` jobs, with KEDA reaching the
//! Redis of REDIS_URL's Secret, and never scaling down faster than a lease.

use std::collections::BTreeSet;
use std::process::Command;

use super::{RENDERS, Rendered, int_at, str_at};
use crate::operations::BIN;

/// `notifier check` with the Deployment's environment: each `stream ROLE = KEY (group GROUP)`.
fn checked_streams(render: &Rendered) -> Vec<(String, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("check.db").display());
    let out = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(render.process_env(&database))
        .arg("check")
        .output()
        .expect("the notifier binary runs");
    // It fails on the credential files, which exist only in the pod, after printing the streams.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let parse = |line: &str| {
        let (role, rest) = line.strip_prefix("stream ")?.split_once(" = ")?;
        let (key, group) = rest.strip_suffix(')')?.split_once(" (group ")?;
        Some((role.to_string(), key.to_string(), group.to_string()))
    };
    let streams: Vec<_> = text.lines().filter_map(parse).collect();
    assert!(
        !streams.is_empty(),
        "{}: notifier check printed no stream:\n{text}",
        render.dir
    );
    assert!(
        text.contains("Work in Redis (live mode)"),
        "{}: the Deployment sends live:\n{text}",
        render.dir
    );
    streams
}

#[test]
fn the_scaled_object_watches_the_streams_notifier_check_prints_for_the_deployments_environment() {
    for render in RENDERS.map(Rendered::of) {
        let settings = render.settings();
        let streams = checked_streams(&render);
        let scaled = &render.one("ScaledObject")["spec"];
        assert_eq!(
            scaled["scaleTargetRef"]["name"],
            render.deployment()["metadata"]["name"]
        );
        // The job stream always; the push backlog where the API is on (elsewhere no replica
        // creates it, and a trigger on a missing stream fails, which stops every scale-down).
        let mut expected = BTreeSet::from(["jobs".to_string()]);
        expected.extend(settings.api.addr.map(|_| "push".to_string()));
        let mut watched = BTreeSet::new();
        for trigger in scaled["triggers"].as_vec().expect("triggers") {
            assert_eq!(trigger["type"].as_str(), Some("redis-streams"));
            let metadata = &trigger["metadata"];
            let key = str_at(metadata, "stream");
            let (role, _, _) = streams
                .iter()
                .find(|(_, k, _)| *k == key)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: {key} is not a stream notifier check prints: {streams:?}",
                        render.dir
                    )
                });
            // Its length, not a group's count: each group's entries are deleted once acknowledged,
            // so the length is what is running (pending) plus what waits (lag).
            assert!(
                metadata["consumerGroup"].is_badvalue(),
                "{}: {key} by length",
                render.dir
            );
            let threshold = int_at(metadata, "streamLength");
            assert!(threshold > 0);
            if role == "jobs" {
                let events = settings.service.max_concurrent_events as i64;
                assert_eq!(
                    threshold, events,
                    "one replica per service.max_concurrent_events jobs"
                );
            }
            check_authentication(&render, &str_at(&trigger["authenticationRef"], "name"));
            watched.insert(role.clone());
        }
        assert_eq!(
            watched, expected,
            "{}: the streams this Deployment's replicas read",
            render.dir
        );
        let lease = settings.claims.lease_secs as i64;
        let down = &scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"];
        assert!(
            int_at(scaled, "cooldownPeriod") > lease,
            "cooldown longer than a lease ({lease} s)"
        );
        assert!(
            int_at(down, "stabilizationWindowSeconds") > lease,
            "scale-down window longer than a lease"
        );
        let (min, max) = (
            int_at(scaled, "minReplicaCount"),
            int_at(scaled, "maxReplicaCount"),
        );
        assert!(
            min >= 2 && max > min,
            "{}: {min}..{max} replicas",
            render.dir
        );
    }
}

/// The TriggerAuthentication gives KEDA the server and password of the Secret REDIS_URL comes from.
fn check_authentication(render: &Rendered, name: &str) {
    let auth = render
        .all("TriggerAuthentication")
        .into_iter()
        .find(|a| a["metadata"]["name"].as_str() == Some(name));
    let auth = auth.unwrap_or_else(|| panic!("{}: a TriggerAuthentication {name}", render.dir));
    let redis = render
        .env()
        .into_iter()
        .find(|(n, _)| n == "REDIS_URL")
        .expect("REDIS_URL");
    let (secret, _) = redis.1.expect_err("REDIS_URL from a Secret");
    let refs = auth["spec"]["secretTargetRef"]
        .as_vec()
        .expect("secretTargetRef");
    for parameter in ["address", "password"] {
        let found = refs
            .iter()
            .find(|r| r["parameter"].as_str() == Some(parameter));
        let found = found.unwrap_or_else(|| panic!("{name} gives KEDA the Redis {parameter}"));
        assert_eq!(
            str_at(found, "name"),
            secret,
            "{parameter} from REDIS_URL's Secret"
        );
    }
}

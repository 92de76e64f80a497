//! deploy/kubernetes (the kustomize base) and its overlays (api, webpush), checked without a cluster: each is
//! rendered by kubectl's kustomize, every core object passes `kubernetes-validate --strict`, KEDA's
//! objects (custom resources it has no schema for) are checked field by field here, and all of it
//! is held to what the notifier does with the environment the Deployment gives it: the settings
//! that environment loads (ports, drain, lease), the routes a running notifier serves, and the
//! streams `notifier check` prints. A missing kubectl or kubernetes-validate fails the test and
//! names it; scripts/test installs both. This file renders and reads; [`objects`] checks the
//! objects and their ports, [`pod`] the pod's security and where its settings come from,
//! [`scaling`] the ScaledObject. A new rule for the manifests goes in the one it concerns.

mod objects;
mod pod;
mod scaling;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use notifier::Settings;
use yaml_rust2::{Yaml, YamlLoader};

use crate::helpers::*;

pub(super) const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The base and the overlays, as a user applies them.
pub(super) const RENDERS: [&str; 3] = [
    "deploy/kubernetes",
    "deploy/kubernetes/overlays/api",
    "deploy/kubernetes/overlays/webpush",
];
/// KEDA's custom resources: no schema in kubernetes-validate, so skipped there and checked here.
pub(super) const KEDA_KINDS: [&str; 2] = ["ScaledObject", "TriggerAuthentication"];
/// The pod's grace period exceeds the drain by at least this: the checkpoint writes and the exit.
pub(super) const GRACE_MARGIN_SECS: i64 = 5;

/// Where a variable's value comes from: the Deployment's own, or `(Secret, key)`.
pub(super) type Source = Result<String, (String, String)>;

/// One rendering: each object with the text kubectl printed for it.
pub(super) struct Rendered {
    pub(super) dir: &'static str,
    pub(super) objects: Vec<(Yaml, String)>,
}

impl Rendered {
    pub(super) fn of(dir: &'static str) -> Self {
        let out = Command::new("kubectl")
            .args(["kustomize", dir])
            .current_dir(ROOT)
            .output()
            .unwrap_or_else(|e| {
                panic!("kubectl is needed (Debian: apt-get install kubernetes-client; scripts/test installs it): {e}")
            });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl kustomize {dir}:\n{stderr}");
        let text = String::from_utf8(out.stdout).expect("kubectl prints UTF-8");
        let objects = text
            .split("\n---\n")
            .map(|doc| {
                let yaml = YamlLoader::load_from_str(doc)
                    .unwrap_or_else(|e| panic!("{dir} renders YAML: {e}\n{doc}"))
                    .remove(0);
                (yaml, doc.to_string())
            })
            .collect();
        Self { dir, objects }
    }

    pub(super) fn all(&self, kind: &str) -> Vec<&Yaml> {
        let of_kind = self.objects.iter().map(|(y, _)| y);
        of_kind
            .filter(|y| y["kind"].as_str() == Some(kind))
            .collect()
    }

    pub(super) fn one(&self, kind: &str) -> &Yaml {
        let found = self.all(kind);
        assert_eq!(found.len(), 1, "{} renders one {kind}", self.dir);
        found[0]
    }

    pub(super) fn deployment(&self) -> &Yaml {
        self.one("Deployment")
    }

    /// The notifier's container.
    pub(super) fn container(&self) -> &Yaml {
        let containers = self.deployment()["spec"]["template"]["spec"]["containers"].as_vec();
        let mut named = containers.into_iter().flatten();
        named
            .find(|c| c["name"].as_str() == Some("notifier"))
            .unwrap_or_else(|| panic!("{}: a container named notifier", self.dir))
    }

    /// The Deployment's environment: a value, or the Secret and key it comes from.
    pub(super) fn env(&self) -> Vec<(String, Source)> {
        let vars = self.container()["env"].as_vec().expect("env");
        let pair = |v: &Yaml| {
            let name = v["name"].as_str().expect("a name").to_string();
            let secret = &v["valueFrom"]["secretKeyRef"];
            let source = match v["value"].as_str() {
                Some(value) => Ok(value.to_string()),
                None => Err((str_at(secret, "name"), str_at(secret, "key"))),
            };
            (name, source)
        };
        vars.iter().map(pair).collect()
    }

    /// What the process sees: the Deployment's values, `from-SECRET-KEY` for each Secret's, the
    /// test's Redis and this database, and the file the ConfigMap is made of (checked identical)
    /// for NOTIFIER_CONFIG.
    pub(super) fn process_env(&self, database_url: &str) -> BTreeMap<String, String> {
        let value = |(name, source): (String, Source)| {
            let value = match name.as_str() {
                "REDIS_URL" => redis_url(),
                "DATABASE_URL" => database_url.to_string(),
                "NOTIFIER_CONFIG" => config_path().display().to_string(),
                // Checked for its form at load: a value of that form stands for the Secret's.
                "WEBPUSH_VAPID_SUBJECT" => "mailto:ops@example.com".to_string(),
                _ => source.unwrap_or_else(|(secret, key)| format!("from-{secret}-{key}")),
            };
            (name, value)
        };
        self.env().into_iter().map(value).collect()
    }

    pub(super) fn settings(&self) -> Settings {
        let env = self.process_env("sqlite::memory:");
        Settings::load(|name| env.get(name).cloned())
            .unwrap_or_else(|e| panic!("{}: the Deployment's environment loads: {e}", self.dir))
    }

    /// The volume mounted at `path` or at a directory above it.
    pub(super) fn volume_at(&self, path: &str) -> &Yaml {
        let container = self.container();
        let mounts = container["volumeMounts"].as_vec().expect("volumeMounts");
        let under = |m: &&Yaml| {
            let at = str_at(m, "mountPath");
            path == at || path.starts_with(&format!("{at}/"))
        };
        let mount = mounts.iter().find(under);
        let mount = mount.unwrap_or_else(|| panic!("{}: {path} is mounted", self.dir));
        let volumes = self.deployment()["spec"]["template"]["spec"]["volumes"].as_vec();
        let mut volumes = volumes.into_iter().flatten();
        volumes
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume")
    }

    /// The value the Deployment gives a variable (not a Secret's).
    pub(super) fn value_of(&self, name: &str) -> Option<String> {
        let found = self.env().into_iter().find(|(n, _)| n == name);
        found.and_then(|(_, source)| source.ok())
    }

    /// The container port a Service or probe names (by name or number).
    pub(super) fn container_port(&self, port: &Yaml) -> i64 {
        if let Some(number) = port.as_i64() {
            return number;
        }
        let name = port.as_str().expect("a port name or number");
        let ports = self.container()["ports"].as_vec().expect("ports");
        let named = ports.iter().find(|p| p["name"].as_str() == Some(name));
        named.and_then(|p| p["containerPort"].as_i64()).expect(name)
    }
}

pub(super) fn str_at(yaml: &Yaml, key: &str) -> String {
    let value = yaml[key].as_str();
    value
        .unwrap_or_else(|| panic!("{key} in {yaml:?}"))
        .to_string()
}

pub(super) fn int_at(yaml: &Yaml, key: &str) -> i64 {
    let value = &yaml[key];
    let parsed = value.as_str().and_then(|s| s.parse().ok());
    value
        .as_i64()
        .or(parsed)
        .unwrap_or_else(|| panic!("{key} in {yaml:?}"))
}

/// On PATH, or where scripts/test installs it.
pub(super) fn kubernetes_validate() -> PathBuf {
    let on_path = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return PathBuf::from("kubernetes-validate");
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let venv = Path::new(&home).join(".cache/notifier-kubernetes-validate/bin/kubernetes-validate");
    assert!(
        venv.exists(),
        "kubernetes-validate is needed (PyPI; scripts/test installs it into {})",
        venv.display()
    );
    venv
}

//! The pod: the image's user on a read-only root that writes only to an emptyDir at /tmp, no
//! capabilities, no service-account token, credentials only from Secrets (files from secret
//! volumes), and the config file as the ConfigMap made of config/notifier.toml.

use std::collections::BTreeSet;
use std::path::Path;

use yaml_rust2::Yaml;

use super::{RENDERS, ROOT, Rendered, int_at, str_at};
use crate::helpers::config_path;

/// Variables that hold credentials: never a literal value.
const SECRET_VARS: [&str; 5] = [
    "REDIS_URL",
    "DATABASE_URL",
    "APNS_KEY_ID",
    "APNS_TEAM_ID",
    "NOTIFIER_API_TOKENS",
];
/// Variables naming a credential file: in a secret volume.
const SECRET_FILES: [&str; 2] = ["GOOGLE_APPLICATION_CREDENTIALS", "APNS_KEY_PATH"];
/// The same, set only by the overlay that turns its provider on.
const OVERLAY_SECRET_FILES: [&str; 1] = ["WEBPUSH_VAPID_PRIVATE_KEY_PATH"];

/// The last `INSTRUCTION value` of the Dockerfile: the product image's.
fn dockerfile(instruction: &str) -> String {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let prefix = format!("{instruction} ");
    let found = text.lines().rev().find_map(|l| l.strip_prefix(&prefix));
    found
        .unwrap_or_else(|| panic!("the Dockerfile has {instruction}"))
        .trim()
        .to_string()
}

#[test]
fn the_pod_runs_as_the_images_user_on_a_read_only_root_and_writes_only_to_an_empty_dir() {
    let user = dockerfile("USER");
    let uid: i64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    for render in RENDERS.map(Rendered::of) {
        let pod = &render.deployment()["spec"]["template"]["spec"];
        for context in [
            &pod["securityContext"],
            &render.container()["securityContext"],
        ] {
            assert_eq!(
                context["runAsNonRoot"].as_bool(),
                Some(true),
                "{}",
                render.dir
            );
            assert_eq!(int_at(context, "runAsUser"), uid, "the Dockerfile's USER");
        }
        let container = &render.container()["securityContext"];
        assert_eq!(container["readOnlyRootFilesystem"].as_bool(), Some(true));
        assert_eq!(container["allowPrivilegeEscalation"].as_bool(), Some(false));
        let all = Yaml::Array(vec![Yaml::String("ALL".into())]);
        assert_eq!(container["capabilities"]["drop"], all, "no capabilities");
        // The only writable place is the image's working directory, where SQLite's default file
        // (sqlite://notifier.db) and its temporary files go.
        let workdir = dockerfile("WORKDIR");
        assert_eq!(workdir, "/tmp", "the image works in /tmp");
        assert!(
            !render.volume_at(&workdir)["emptyDir"].is_badvalue(),
            "{}",
            render.dir
        );
        assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
        let account = render.one("ServiceAccount");
        assert_eq!(
            account["automountServiceAccountToken"].as_bool(),
            Some(false)
        );
        assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    }
}

#[test]
fn credentials_come_only_from_secrets_and_the_config_file_from_the_shipped_defaults() {
    let shipped = std::fs::read_to_string(config_path()).unwrap();
    let copy = Path::new(ROOT).join("deploy/kubernetes/base/notifier.toml");
    assert!(
        std::fs::read_to_string(&copy).unwrap() == shipped,
        "{} differs from config/notifier.toml: cp config/notifier.toml deploy/kubernetes/base/",
        copy.display()
    );
    let mut overlay_files = 0;
    for render in RENDERS.map(Rendered::of) {
        for (name, source) in render.env() {
            assert!(
                notifier::ENV_VARS.contains(&name.as_str()),
                "the notifier reads {name}"
            );
            let secret = SECRET_VARS.contains(&name.as_str());
            assert!(
                !secret || source.is_err(),
                "{}: {name} from a Secret only",
                render.dir
            );
        }
        let overlays = OVERLAY_SECRET_FILES
            .iter()
            .filter(|n| render.value_of(n).is_some());
        let overlays: Vec<&str> = overlays.copied().collect();
        overlay_files += overlays.len();
        for name in SECRET_FILES.into_iter().chain(overlays) {
            let path = render
                .value_of(name)
                .unwrap_or_else(|| panic!("{name} is set"));
            let volume = render.volume_at(&path);
            assert!(
                !volume["secret"].is_badvalue(),
                "{name}: {path} in a secret volume"
            );
        }
        let config = render.value_of("NOTIFIER_CONFIG").expect("NOTIFIER_CONFIG");
        let map = render.one("ConfigMap");
        let volume = render.volume_at(&config);
        assert_eq!(
            volume["configMap"]["name"], map["metadata"]["name"],
            "{config}"
        );
        let key = Path::new(&config).file_name().unwrap().to_str().unwrap();
        let data = map["data"][key].as_str();
        assert!(
            data == Some(shipped.as_str()),
            "{}: the ConfigMap's {key} is config/notifier.toml",
            render.dir
        );
    }
    assert_eq!(
        overlay_files,
        OVERLAY_SECRET_FILES.len(),
        "each overlay's credential file is checked in its overlay"
    );
}

/// The Secrets and keys the README's `kubectl create secret generic` commands make.
fn readme_secrets() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    // Each command with its continuation lines, as one line.
    let joined = readme.replace("\\\n", " ");
    let mut made = BTreeSet::new();
    for command in joined
        .lines()
        .filter_map(|l| l.split("kubectl create secret generic ").nth(1))
    {
        let mut words = command.split_whitespace();
        let name = words.next().expect("a Secret's name").to_string();
        for word in words {
            let source = word
                .strip_prefix("--from-literal=")
                .or(word.strip_prefix("--from-file="));
            if let Some(key) = source.and_then(|s| s.split('=').next()) {
                made.insert((name.clone(), key.to_string()));
            }
        }
    }
    made
}

#[test]
fn the_readme_creates_every_secret_and_key_the_manifests_read() {
    let made = readme_secrets();
    for render in RENDERS.map(Rendered::of) {
        let mut read: BTreeSet<(String, String)> = render
            .env()
            .into_iter()
            .filter_map(|(_, s)| s.err())
            .collect();
        for name in SECRET_FILES {
            let path = render
                .value_of(name)
                .unwrap_or_else(|| panic!("{name} is set"));
            let secret = str_at(&render.volume_at(&path)["secret"], "secretName");
            let file = Path::new(&path).file_name().unwrap().to_str().unwrap();
            read.insert((secret, file.to_string()));
        }
        for auth in render.all("TriggerAuthentication") {
            for target in auth["spec"]["secretTargetRef"]
                .as_vec()
                .expect("secretTargetRef")
            {
                read.insert((str_at(target, "name"), str_at(target, "key")));
            }
        }
        let missing: Vec<_> = read.difference(&made).collect();
        assert!(
            missing.is_empty(),
            "{}: the README creates no {missing:?}",
            render.dir
        );
    }
}

//! The README's test command, `scripts/test`: the services it starts through compose's `test`
//! profile (read as a file: there is no Docker engine here), the URLs it and the tests share, and
//! what it does for a service named by a TEST_*_URL variable.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test");

fn compose() -> yaml_rust2::Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml");
    yaml_rust2::YamlLoader::load_from_str(&text)
        .expect("docker-compose.yml is YAML")
        .remove(0)
}

/// `scripts/test --services-only` with these variables on top of the test's environment.
fn run_script(vars: &[(&str, &str)], tmp: &Path) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(SCRIPT).arg("--services-only").env("TMPDIR", tmp);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("bash runs scripts/test")
}

#[test]
fn the_compose_test_profile_publishes_each_service_where_the_tests_look_by_default() {
    let doc = compose();
    let services = &doc["services"];
    for (name, default_url, image) in [
        ("test-redis", DEFAULT_REDIS_URL, "redis:7"),
        ("test-postgres", DEFAULT_POSTGRES_URL, "postgres:15"),
        ("test-mariadb", DEFAULT_MYSQL_URL, "mariadb:10.11"),
    ] {
        let service = &services[name];
        assert!(!service.is_badvalue(), "compose has {name}");
        assert_eq!(
            service["profiles"].as_vec().map(Vec::as_slice),
            Some(&[yaml_rust2::Yaml::String("test".into())][..]),
            "{name} is in the `test` profile only"
        );
        let port = address(default_url).rsplit(':').next().unwrap();
        let ports: Vec<&str> = service["ports"]
            .as_vec()
            .map(|p| p.iter().filter_map(|p| p.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            ports,
            [format!("127.0.0.1:{port}:{port}")],
            "{name} publishes on loopback only, where the tests' default URL points"
        );
        let service_image = service["image"].as_str().unwrap_or_default();
        assert!(
            service_image.starts_with(image),
            "{name} runs {image} like the CI machine, not {service_image}"
        );
        // scripts/test waits on `up --wait`, which needs a health check to wait for.
        assert!(
            service["healthcheck"]["test"].as_vec().is_some(),
            "{name} has a health check"
        );
    }

    let postgres = &services["test-postgres"]["environment"];
    assert_eq!(
        postgres["POSTGRES_HOST_AUTH_METHOD"].as_str(),
        Some("trust")
    );
    // The image's superuser is `postgres` unless POSTGRES_USER renames it.
    assert!(postgres["POSTGRES_USER"].is_badvalue());
    assert!(DEFAULT_POSTGRES_URL.starts_with("postgres://postgres@"));

    let mariadb = &services["test-mariadb"]["environment"];
    assert_eq!(
        mariadb["MARIADB_ALLOW_EMPTY_ROOT_PASSWORD"].as_str(),
        Some("1")
    );
    assert!(mariadb["MARIADB_ROOT_PASSWORD"].is_badvalue());
    assert_eq!(
        Some(mariadb["MARIADB_DATABASE"].as_str().unwrap_or_default()),
        DEFAULT_MYSQL_URL.rsplit('/').next()
    );
    assert!(DEFAULT_MYSQL_URL.starts_with("mysql://root@"));

    // The names the script derives (`test-` and the service) and the profile it asks for.
    let script = std::fs::read_to_string(SCRIPT).expect("scripts/test");
    assert!(script.contains(r#"services+=("test-$service")"#));
    assert!(script.contains("docker compose --profile test up -d --wait"));
    for service in ["redis", "postgres", "mariadb"] {
        assert!(script.contains(&format!("test-{service}")));
    }
}

#[test]
fn urls_the_tests_build_keep_the_server_and_credentials_and_messages_hide_passwords() {
    assert_eq!(
        with_database(
            "postgres://app:pw@db.local:5433/postgres?sslmode=disable",
            "t1"
        ),
        "postgres://app:pw@db.local:5433/t1?sslmode=disable"
    );
    assert_eq!(
        with_database("mysql://root@127.0.0.1:3306", "t2"),
        "mysql://root@127.0.0.1:3306/t2"
    );
    assert_eq!(
        address("postgres://app:pw@db.local:5433/x"),
        "db.local:5433"
    );
    assert_eq!(address("redis://127.0.0.1:6390"), "127.0.0.1:6390");
}

#[test]
fn the_test_script_names_a_service_of_a_test_url_that_does_not_answer_and_starts_nothing() {
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let tmp = tempfile::tempdir().expect("a temp dir");

    let out = run_script(&[("TEST_POSTGRES_URL", &url)], tmp.path());

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port}")))
        .unwrap_or_else(|| panic!("a line names the address: {stderr}"));
    assert!(line.contains("TEST_POSTGRES_URL"), "{line}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing was started on {port}"
    );
}

/// Shuts down a redis-server the script started for a test.
struct StartedRedis(u16);

impl Drop for StartedRedis {
    fn drop(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.0.to_string(), "shutdown", "nosave"])
            .output();
    }
}

#[tokio::test]
async fn the_test_script_starts_a_redis_where_a_loopback_test_redis_url_finds_none() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().expect("a temp dir");

    let out = run_script(&[("TEST_REDIS_URL", &url)], tmp.path());
    let _started = StartedRedis(port);

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("Redis at 127.0.0.1:{port}: down")),
        "{stdout}"
    );
    let mut conn = redis_connection(&url).await;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
    assert!(
        tmp.path()
            .join(format!("notifier-test-redis-{port}"))
            .is_dir()
    );
}

//! Redis over TLS (contract §7): a real redis-server serving only TLS, with a CA and certificates
//! made here, reached with a password, an ACL user and a client certificate, by the worker (pub/sub
//! and stream input, claims included) and by the binary (`check`, `run`).

use std::path::{Path, PathBuf};

use notifier::Backend;
use notifier::EventOutcome;
use notifier::Settings;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

use crate::cli::notifier;
use crate::helpers::*;

/// A CA, a server certificate for localhost (only) signed by it, a client certificate signed by it, and
/// a second CA that signed nothing of this server's.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca = new_ca("notifier test Redis CA");
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["notifier".to_string()]).unwrap();
        client_params.insert_extended_key_usage(ExtendedKeyUsagePurpose::ClientAuth);
        let client = client_params.signed_by(&client_key, &ca).unwrap();
        write("ca.pem", ca.pem());
        write("server.pem", server.pem());
        write("server.key", server_key.serialize_pem());
        write("client.pem", client.pem());
        write("client.key", client_key.serialize_pem());
        write("other-ca.pem", new_ca("some other CA").pem());
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn server_tls(&self, client_certificates: bool) -> ServerTls {
        ServerTls {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            ca: self.path("ca.pem"),
            client_certificates,
        }
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A TLS-only redis-server with `args`, ready once `userinfo` (`:pass@`, `alice:secret@`, or
/// empty) gets a PING through, trusting the test CA. With `client_certificates` the server asks
/// for one, and the PING shows the test's.
async fn tls_redis(
    pki: &Pki,
    args: &[&str],
    userinfo: &str,
    client_certificates: bool,
) -> OwnRedis {
    let options = OwnRedisOptions {
        tls: Some(pki.server_tls(client_certificates)),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    OwnRedis::start_with(options, |port| {
        let url = tls_url(userinfo, port);
        let ca = pki.file("ca.pem");
        let (cert, key) = (pki.file("client.pem"), pki.file("client.key"));
        let mut vars = vec![("REDIS_URL", url.as_str()), ("REDIS_CA_FILE", ca.as_str())];
        if client_certificates {
            vars.push(("REDIS_CLIENT_CERT_FILE", cert.as_str()));
            vars.push(("REDIS_CLIENT_KEY_FILE", key.as_str()));
        }
        notifier::open_redis(&settings_with(&vars).redis).expect("the TLS settings load")
    })
    .await
}

/// The default user off and `alice` allowed everything: only `alice:alice-secret-77@` gets in.
/// (One word an argument: redis-server quotes each, so "default off" would name a user.)
const ACL_ALICE: &[&str] = &[
    "--user",
    "default",
    "off",
    "--user",
    "alice",
    "on",
    ">alice-secret-77",
    "~*",
    "&*",
    "+@all",
];

fn tls_url(userinfo: &str, port: u16) -> String {
    format!("rediss://{userinfo}localhost:{port}")
}

/// Publishes through the library's own client: TLS, the CA file and the credentials included.
async fn publish_over(settings: &Settings, message: &str) {
    let client = notifier::open_redis(&settings.redis).expect("Redis settings");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("a TLS connection for publishing");
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(&settings.service.channel)
        .arg(message)
        .query_async(&mut conn)
        .await
        .expect("PUBLISH");
    assert_eq!(receivers, 1, "the worker is subscribed over TLS");
}

async fn processed(worker: &mut RunningWorker) -> notifier::Summary {
    match worker.next_outcome().await {
        EventOutcome::Processed(summary) => summary,
        other => panic!("expected a processed event, got {other:?}"),
    }
}

/// Publishes talk 100 twice under one event id: the first reaches the scenario's five devices,
/// the second is found claimed and skipped. Returns the claims' key prefix.
async fn an_event_and_its_duplicate_over(url: &str, pki: &Pki) -> String {
    let test_db = scenario_db(Backend::Sqlite).await;
    let channel = unique("talk_posted_tls");
    let ca = pki.file("ca.pem");
    let settings = settings_with(&[
        ("REDIS_URL", url),
        ("REDIS_CA_FILE", &ca),
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_CHANNEL", &channel),
    ]);
    let recorder = RecordingPusher::new();
    let mut worker = RunningWorker::start(
        settings.clone(),
        test_db.db.clone(),
        dry_run_pushers(&recorder),
    )
    .await;

    let event = r#"{"talk_id": 100, "event_id": "tls-once"}"#;
    publish_over(&settings, event).await;
    let summary = processed(&mut worker).await;
    publish_over(&settings, event).await;
    let again = worker.next_outcome().await;

    assert_eq!(summary.event_id, "tls-once");
    assert!(summary.dry_run);
    let r = &summary.report;
    assert_eq!((r.recipients, r.sent, r.failed), (5, 5, 0));
    assert_eq!(recorder.device_ids(), SCENARIO_RECIPIENTS);
    assert!(
        matches!(again, EventOutcome::Duplicate { done: true }),
        "the claim in the TLS Redis skips the duplicate: {again:?}"
    );
    assert_eq!(recorder.taken().len(), 5, "no device pushed twice");
    let prefix = worker.worker.settings().claims.key_prefix.clone();
    worker.stop().await;
    prefix
}

/// The claim keys under `prefix` in the database that `settings` reach.
async fn claim_keys(settings: &Settings, prefix: &str) -> Vec<String> {
    let client = notifier::open_redis(&settings.redis).expect("Redis settings");
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS")
}

#[tokio::test]
async fn a_worker_over_tls_with_a_password_processes_an_event_and_skips_its_duplicate() {
    init_tracing();
    let pki = Pki::new();
    let server = tls_redis(
        &pki,
        &["--requirepass", "tls-pass-0451"],
        ":tls-pass-0451@",
        false,
    )
    .await;

    an_event_and_its_duplicate_over(&tls_url(":tls-pass-0451@", server.port), &pki).await;
}

#[tokio::test]
async fn an_acl_user_over_tls_is_enough_when_the_default_user_is_off() {
    init_tracing();
    let pki = Pki::new();
    let ca = pki.file("ca.pem");
    let server = tls_redis(&pki, ACL_ALICE, "alice:alice-secret-77@", false).await;

    let url = tls_url("alice:alice-secret-77@", server.port);
    an_event_and_its_duplicate_over(&url, &pki).await;
    // The database index in the URL is honoured over TLS too.
    let db3 = format!("{url}/3");
    let prefix = an_event_and_its_duplicate_over(&db3, &pki).await;

    let on = |url: &str| settings_with(&[("REDIS_URL", url), ("REDIS_CA_FILE", &ca)]);
    assert!(
        !claim_keys(&on(&db3), &prefix).await.is_empty(),
        "claims in db 3"
    );
    assert!(
        claim_keys(&on(&url), &prefix).await.is_empty(),
        "none in db 0"
    );
}

#[tokio::test]
async fn the_stream_input_reads_and_acknowledges_over_tls() {
    init_tracing();
    let pki = Pki::new();
    let ca = pki.file("ca.pem");
    let server = tls_redis(&pki, ACL_ALICE, "alice:alice-secret-77@", false).await;
    let test_db = scenario_db(Backend::Sqlite).await;
    let stream = unique("talk_posted_tls_stream");
    let url = tls_url("alice:alice-secret-77@", server.port);
    let settings = settings_with(&[
        ("REDIS_URL", &url),
        ("REDIS_CA_FILE", &ca),
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_INPUT", "stream"),
        ("NOTIFIER_STREAM", &stream),
    ]);
    let recorder = RecordingPusher::new();
    let mut worker = RunningWorker::start(
        settings.clone(),
        test_db.db.clone(),
        dry_run_pushers(&recorder),
    )
    .await;

    let client = notifier::open_redis(&settings.redis).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let event = r#"{"talk_id": 100, "event_id": "tls-stream"}"#;
    let _: String = redis::AsyncCommands::xadd(&mut conn, &stream, "*", &[("event", event)])
        .await
        .expect("XADD over TLS");
    let summary = processed(&mut worker).await;

    assert_eq!(summary.event_id, "tls-stream");
    assert_eq!(summary.report.sent, 5);
    let group = &settings.work_group();
    let mut pending = -1;
    for _ in 0..100 {
        let reply: redis::Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(group)
            .query_async(&mut conn)
            .await
            .expect("XPENDING");
        pending = match reply {
            redis::Value::Array(items) => redis::from_redis_value(items[0].clone()).unwrap(),
            other => panic!("XPENDING replied {other:?}"),
        };
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 0, "the entry is acknowledged over TLS");
    worker.stop().await;
}

/// `notifier check` against the server, with these variables; its exit status and all output.
async fn check(dir: &Path, vars: &[(&str, &str)]) -> (bool, String) {
    let mut all = vec![("DATABASE_URL", "sqlite://check.db")];
    all.extend_from_slice(vars);
    let out = notifier(dir, &all).arg("check").output().await.unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), output)
}

#[tokio::test]
async fn a_server_that_requires_client_certificates_refuses_us_without_them_and_takes_us_with_them()
{
    init_tracing();
    let pki = Pki::new();
    let (ca, cert, key) = (
        pki.file("ca.pem"),
        pki.file("client.pem"),
        pki.file("client.key"),
    );
    let identity = [
        ("REDIS_CA_FILE", ca.as_str()),
        ("REDIS_CLIENT_CERT_FILE", cert.as_str()),
        ("REDIS_CLIENT_KEY_FILE", key.as_str()),
    ];
    let server = tls_redis(&pki, &[], "", true).await;
    let url = tls_url("", server.port);
    let dir = tempfile::tempdir().unwrap();

    let (without_ok, without) =
        check(dir.path(), &[("REDIS_URL", &url), ("REDIS_CA_FILE", &ca)]).await;
    let mut with_vars = vec![("REDIS_URL", url.as_str())];
    with_vars.extend_from_slice(&identity);
    let (with_ok, with) = check(dir.path(), &with_vars).await;

    assert!(!without_ok, "no client certificate, no Redis:\n{without}");
    let failed = without
        .lines()
        .find(|l| l.starts_with("FAILED  Redis"))
        .unwrap_or_else(|| panic!("a FAILED line for Redis:\n{without}"));
    assert!(
        failed.contains("REDIS_CLIENT_CERT_FILE"),
        "the line names the setting: {failed}"
    );
    assert!(with_ok, "with the client certificate:\n{with}");
    assert!(
        with.contains(&format!("ok      Redis (REDIS_URL): PONG from {url}")),
        "{with}"
    );
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_stops_run_and_check_with_one_line_naming_redis_ca_file()
 {
    init_tracing();
    let pki = Pki::new();
    let server = tls_redis(&pki, &[], "", false).await;
    let url = tls_url("", server.port);
    let dir = tempfile::tempdir().unwrap();
    let other_ca = pki.file("other-ca.pem");
    let wrong = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_CA_FILE", other_ca.as_str()),
        ("DATABASE_URL", "sqlite://run.db"),
    ];

    let run = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        notifier(dir.path(), &wrong).arg("run").output(),
    )
    .await
    .expect("run gives up within 60 s")
    .unwrap();
    let (check_ok, check_output) = check(dir.path(), &wrong).await;

    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "run must not start: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert_eq!(
        stderr.matches("certificate").count(),
        1,
        "told once: {stderr}"
    );
    assert!(
        stderr.contains("not trusted") && stderr.contains("REDIS_CA_FILE"),
        "{stderr}"
    );
    assert!(!check_ok, "{check_output}");
    let failed = check_output
        .lines()
        .find(|l| l.starts_with("FAILED  Redis"))
        .unwrap_or_else(|| panic!("a FAILED line for Redis:\n{check_output}"));
    assert!(failed.contains("REDIS_CA_FILE"), "{failed}");
}

#[tokio::test]
async fn check_over_tls_passes_and_never_prints_the_password() {
    init_tracing();
    let pki = Pki::new();
    let ca = pki.file("ca.pem");
    let server = tls_redis(&pki, ACL_ALICE, "alice:alice-secret-77@", false).await;
    let dir = tempfile::tempdir().unwrap();
    let url = tls_url("alice:alice-secret-77@", server.port);

    let (ok, output) = check(dir.path(), &[("REDIS_URL", &url), ("REDIS_CA_FILE", &ca)]).await;

    assert!(ok, "{output}");
    assert!(
        !output.contains("alice-secret-77"),
        "the password leaked:\n{output}"
    );
    let masked = format!("rediss://alice:***@localhost:{}", server.port);
    assert!(
        output.contains(&format!("REDIS_URL = {masked}")),
        "{output}"
    );
    assert!(output.contains(&format!("PONG from {masked}")), "{output}");
    assert!(
        output.contains(&format!("REDIS_CA_FILE = {ca}")),
        "{output}"
    );
}

#[tokio::test]
async fn a_host_the_server_certificate_does_not_name_is_told_as_such() {
    init_tracing();
    let pki = Pki::new();
    let server = tls_redis(&pki, &[], "", false).await;
    let ca = pki.file("ca.pem");
    // The same server, by an address its certificate does not name (it names localhost only).
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let settings = settings_with(&[("REDIS_URL", &url), ("REDIS_CA_FILE", &ca)]);
    let client = notifier::open_redis(&settings.redis).unwrap();

    let Err(err) = client.get_multiplexed_async_connection().await else {
        panic!("no connection to a host the certificate does not name");
    };

    let told = notifier::Explained(&err).to_string();
    assert_eq!(
        told,
        "Redis TLS: the server's certificate is not valid for the host in REDIS_URL"
    );
}

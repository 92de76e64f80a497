//! Web Push through the whole notifier (contract §15): browsers' subscriptions, minted by the
//! stand-in's push service (which checks each VAPID token and decrypts each body as the browser
//! would), stored in the devices table of each backend and reached by the real fan-out; a gone
//! subscription pruned; an endpoint off `[webpush] allowed_hosts` never contacted; `notifier
//! check` and `notifier send` on a VAPID key; and a SIGKILL mid fan-out over FCM, APNs and Web
//! Push devices at once, which loses none of them.

use std::path::PathBuf;
use std::time::Duration;

use notifier::{Backend, EventOutcome, FanoutReport, Worker};
use serde_json::Value;
use stand_in::{StandIn, StandInConfig, WebPushSubscription};
use tokio_util::sync::CancellationToken;

use crate::cli::notifier;
use crate::faults::{CRASH_REPEATS, Cluster};
use crate::helpers::*;

const SUBJECT: &str = "mailto:ops@example.com";
/// The shipped templates for program 1's title, in each language.
const JAPANESE: &str = "深夜ラジオに新しいトークが投稿されました";
const ENGLISH: &str = "New talk on 深夜ラジオ";

/// One program and a talk of it by user 1; its listeners: user 2 reads Japanese, 3 English, 4
/// has no locale (the default, English), 5 `ja-JP`. User 6 clipped nothing.
const LISTENERS: &[&str] = &[
    "INSERT INTO users (id, name, locale) VALUES (1, 'author', 'en'), (2, 'chie', 'ja'), (3, 'ben', 'en'), (4, 'dan', NULL), (5, 'fumi', 'ja-JP'), (6, 'emi', 'en')",
    "INSERT INTO programs (id, user_id, title) VALUES (1, 1, '深夜ラジオ')",
    "INSERT INTO talks (id, program_id, user_id, title) VALUES (1, 1, 1, '第1回 Hello')",
    "INSERT INTO clips (user_id, program_id) VALUES (1, 1), (2, 1), (3, 1), (4, 1), (5, 1)",
];

/// A push service with browsers behind it, and the notifier's VAPID key where the settings say.
struct Browsers {
    stand_in: StandIn,
    dir: tempfile::TempDir,
    /// The VAPID public key: every subscription is made with it, so only our tokens pass.
    server_key: Vec<u8>,
}

impl Browsers {
    async fn start() -> Self {
        init_tracing();
        let recording = StandInConfig {
            record: true,
            ..StandInConfig::default()
        };
        let stand_in = StandIn::start(recording).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        stand_in.write_files(dir.path()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("vapid.pem"), key.serialize_pem()).unwrap();
        Self {
            stand_in,
            dir,
            server_key: key.public_key_raw().to_vec(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn subscribe(&self, id: &str) -> WebPushSubscription {
        self.stand_in.webpush_subscribe(id, Some(&self.server_key))
    }

    /// A config file: claims of this test's own, quick retries, the stand-in's host allowed.
    fn config(&self) -> PathBuf {
        let path = self.dir.path().join(format!("{}.toml", unique("notifier")));
        let text = format!(
            "[claims]\nkey_prefix = \"{}:\"\n\n[retry]\ninitial_backoff_ms = 20\n\n\
             [webpush]\nallowed_hosts = [\"localhost\"]\n",
            unique("webpush")
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Web Push alone, live, toward the stand-in.
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFIER_CONFIG", self.config().display().to_string()),
            ("NOTIFIER_SEND_MODE", "live".into()),
            ("WEBPUSH_VAPID_PRIVATE_KEY_PATH", self.path("vapid.pem")),
            ("WEBPUSH_VAPID_SUBJECT", SUBJECT.into()),
            ("NOTIFIER_EXTRA_CA_FILE", self.path("ca.pem")),
        ]
    }

    /// Talk 1's event through a worker with the pushers the settings configure.
    async fn one_event(&self, test_db: &TestDb) -> FanoutReport {
        let vars = self.vars();
        let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.push(("DATABASE_URL", &test_db.url));
        let settings = settings_with(&vars);
        let pushers = notifier::configured_pushers(&settings, RecordingPusher::new())
            .expect("the Web Push pusher");
        let worker = Worker::new(settings, test_db.db.clone(), pushers).expect("worker");
        let outcome = worker
            .handle_message(br#"{"talk_id": 1}"#, &CancellationToken::new())
            .await;
        match outcome {
            EventOutcome::Processed(summary) => summary.report,
            other => panic!("expected a processed event, got {other:?}"),
        }
    }

    fn stat(&self, name: &str) -> u64 {
        let snapshot = self.stand_in.counters.snapshot();
        snapshot["webpush"][name].as_u64().unwrap()
    }

    /// The one push subscription `id` received, as its browser read it.
    fn only_message(&self, id: &str) -> (Value, stand_in::WebPushMessage) {
        let messages = self.stand_in.webpush_messages(id);
        assert_eq!(messages.len(), 1, "{id} got {} pushes", messages.len());
        let plaintext = serde_json::from_slice(&messages[0].plaintext).unwrap();
        (plaintext, messages[0].clone())
    }
}

/// Web devices: `(device id, user id, token)`.
async fn add_browsers(test_db: &TestDb, devices: &[(i64, i64, String)]) {
    let rows: Vec<String> = devices
        .iter()
        .map(|(id, user, token)| format!("({id}, {user}, 'webpush', 'web', '{token}')"))
        .collect();
    let sql = format!(
        "INSERT INTO devices (id, user_id, provider, platform, token) VALUES {}",
        rows.join(", ")
    );
    test_db.execute(&[&sql]).await;
}

async fn a_talk_reaches_every_browser_decrypted_in_its_users_language(backend: Backend) {
    // Arrange: one browser each, Chie two (her laptop's endpoint longer than a push token's
    // 1,024 characters), Fumi's push service failing once.
    let browsers = Browsers::start().await;
    let test_db = TestDb::new(backend).await;
    test_db.execute(LISTENERS).await;
    let laptop = format!("chie-laptop-{}", "x".repeat(1_200));
    let ids = [
        "author",
        "chie",
        "ben",
        "dan",
        "fumi-flaky",
        laptop.as_str(),
    ];
    let users = [1, 2, 3, 4, 5, 2];
    let devices: Vec<(i64, i64, String)> = (0..ids.len())
        .map(|i| (i as i64 + 1, users[i], browsers.subscribe(ids[i]).json()))
        .collect();
    assert!(devices[5].2.len() > 1_024, "{}", devices[5].2.len());
    add_browsers(&test_db, &devices).await;

    // Act
    let r = browsers.one_event(&test_db).await;

    // Assert: each listener's browsers, once, in their language; never the author's.
    assert_eq!((r.sent, r.failed, r.pruned, r.skipped), (5, 0, 0, 0));
    assert_eq!(r.retries, 1, "the flaky push service's 503");
    let expected = [
        ("chie", JAPANESE),
        ("ben", ENGLISH),
        ("dan", ENGLISH),
        ("fumi-flaky", JAPANESE),
        (laptop.as_str(), JAPANESE),
    ];
    for (id, title) in expected {
        let (plaintext, message) = browsers.only_message(id);
        assert_eq!(plaintext["title"], title, "{id}");
        assert_eq!(plaintext["body"], "第1回 Hello", "{id}");
        assert_eq!(plaintext["data"]["talk_id"], "1", "{id}");
        assert_eq!(plaintext["data"]["program_id"], "1", "{id}");
        assert_eq!(plaintext["data"]["event_id"], "talk_posted:1", "{id}");
        assert_eq!(
            (message.ttl, message.urgency.as_deref()),
            (86_400, Some("normal"))
        );
    }
    assert!(browsers.stand_in.webpush_messages("author").is_empty());
    assert_eq!(browsers.stat("decrypted"), 5);
    assert_eq!(browsers.stat("decrypt_failures"), 0, "every body decrypts");
    assert_eq!(browsers.stat("vapid_rejected"), 0, "every token verifies");
}

#[tokio::test]
async fn a_talk_reaches_every_browser_decrypted_in_its_users_language_on_postgres() {
    a_talk_reaches_every_browser_decrypted_in_its_users_language(Backend::Postgres).await;
}

#[tokio::test]
async fn a_talk_reaches_every_browser_decrypted_in_its_users_language_on_mariadb() {
    a_talk_reaches_every_browser_decrypted_in_its_users_language(Backend::MySql).await;
}

#[tokio::test]
async fn a_talk_reaches_every_browser_decrypted_in_its_users_language_on_sqlite() {
    a_talk_reaches_every_browser_decrypted_in_its_users_language(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_subscription_the_push_service_calls_gone_is_pruned() {
    let browsers = Browsers::start().await;
    let test_db = TestDb::new(Backend::Sqlite).await;
    test_db.execute(LISTENERS).await;
    let devices = [
        (2, 2, browsers.subscribe("chie-gone").json()),
        (3, 3, browsers.subscribe("ben").json()),
    ];
    add_browsers(&test_db, &devices).await;

    let r = browsers.one_event(&test_db).await;

    assert_eq!((r.sent, r.pruned, r.failed), (1, 1, 0));
    assert_eq!(test_db.disabled().await, ["2:webpush:HTTP 410"]);
    assert_eq!(browsers.only_message("ben").0["title"], ENGLISH);
    // Pruned, so the next event does not try it again.
    assert_eq!(
        browsers.stand_in.counters.snapshot()["errors"]["webpush:gone"],
        1
    );
}

#[tokio::test]
async fn an_endpoint_off_the_allowed_hosts_or_not_https_is_skipped_and_never_contacted() {
    // Arrange: two subscriptions the stand-in would take, reached by names the list lacks.
    let browsers = Browsers::start().await;
    let test_db = TestDb::new(Backend::Sqlite).await;
    test_db.execute(LISTENERS).await;
    let tls = format!("https://localhost:{}", browsers.stand_in.tls_addr.port());
    let by_address = browsers.subscribe("chie").json().replace(
        &tls,
        &format!("https://127.0.0.1:{}", browsers.stand_in.tls_addr.port()),
    );
    let plain = browsers
        .subscribe("dan")
        .json()
        .replace(&tls, &browsers.stand_in.plain_endpoint());
    assert!(by_address.contains("https://127.0.0.1:") && plain.contains("http://127.0.0.1:"));
    let devices = [
        (2, 2, by_address),
        (3, 3, browsers.subscribe("ben").json()),
        (4, 4, plain),
    ];
    add_browsers(&test_db, &devices).await;

    // Act
    let r = browsers.one_event(&test_db).await;

    // Assert: counted as skipped; the stand-in saw the one allowed push and nothing else.
    assert_eq!((r.sent, r.skipped, r.failed, r.pruned), (1, 2, 0, 0));
    assert_eq!(browsers.stand_in.counters.snapshot()["requests"], 1);
    assert!(browsers.stand_in.webpush_messages("chie").is_empty());
    assert!(browsers.stand_in.webpush_messages("dan").is_empty());
    assert!(
        test_db.disabled().await.is_empty(),
        "a skipped device is kept"
    );
}

/// The binary's combined output.
fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `notifier check` with these variables: whether it passed, and what it printed.
async fn check(browsers: &Browsers, vars: &[(&str, &str)]) -> (bool, String) {
    let out = notifier(browsers.dir.path(), vars)
        .arg("check")
        .output()
        .await
        .unwrap();
    (out.status.success(), output(&out))
}

#[tokio::test]
async fn check_loads_the_vapid_key_and_prints_the_key_browsers_subscribe_with() {
    let browsers = Browsers::start().await;
    let test_db = TestDb::new(Backend::Sqlite).await;
    let vars = browsers.vars();
    let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.push(("DATABASE_URL", &test_db.url));

    let (passed, text) = check(&browsers, &vars).await;

    assert!(passed, "{text}");
    use base64::Engine;
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&browsers.server_key);
    assert!(
        text.contains("ok      Web Push (WEBPUSH_VAPID_PRIVATE_KEY_PATH): VAPID key loaded")
            && text.contains(&format!("applicationServerKey {public}")),
        "{text}"
    );
    assert!(text.contains("webpush.allowed_hosts = localhost"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    // A file that is no P-256 key fails the check, naming the variable.
    let broken = browsers.path("broken.pem");
    std::fs::write(&broken, "not a key").unwrap();
    vars.push(("WEBPUSH_VAPID_PRIVATE_KEY_PATH", &broken));
    let (passed, text) = check(&browsers, &vars).await;
    assert!(!passed, "{text}");
    assert!(
        text.contains("FAILED  Web Push (WEBPUSH_VAPID_PRIVATE_KEY_PATH)"),
        "{text}"
    );
}

#[tokio::test]
async fn send_takes_a_subscription_and_validate_mode_encrypts_and_signs_without_sending() {
    let browsers = Browsers::start().await;
    let subscription = browsers.subscribe("send-test").json();
    let vars = browsers.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let send = |mode: &'static str| {
        let mut cmd = notifier(browsers.dir.path(), &vars);
        cmd.env("NOTIFIER_SEND_MODE", mode).args([
            "send",
            "--provider",
            "webpush",
            "--token",
            &subscription,
            "--title",
            "Hello",
            "--body",
            "From the notifier",
        ]);
        cmd
    };

    let out = send("live").output().await.unwrap();
    let text = output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("webpush push to") && text.contains("delivered"),
        "{text}"
    );
    assert!(!text.contains(&subscription), "the token is masked: {text}");
    let (plaintext, _) = browsers.only_message("send-test");
    assert_eq!(
        (plaintext["title"].as_str(), plaintext["body"].as_str()),
        (Some("Hello"), Some("From the notifier"))
    );

    let out = send("validate").output().await.unwrap();
    assert!(out.status.success(), "{}", output(&out));
    assert_eq!(
        browsers.stand_in.counters.snapshot()["requests"],
        1,
        "validate sends nothing"
    );
}

/// Every third device of the cluster's through APNs and every third a browser's (a
/// subscription minted as `tok-NNNNNNNN`, so the stand-in counts it by the same name), the rest
/// FCM's.
async fn mix_providers(cluster: &Cluster, server_key: &[u8]) {
    cluster
        .db
        .execute(&["UPDATE devices SET provider = 'apns', platform = 'ios' WHERE id % 3 = 2"])
        .await;
    let web: Vec<u64> = (1..=cluster.devices).filter(|i| i % 3 == 0).collect();
    for chunk in web.chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|i| {
                let id = format!("tok-{i:08}");
                let json = cluster
                    .stand_in
                    .webpush_subscribe(&id, Some(server_key))
                    .json();
                format!("({i}, '{json}')")
            })
            .collect();
        cluster
            .db
            .execute(&[&format!(
                "UPDATE devices SET provider = 'webpush', platform = 'web', token = v.token
                 FROM (VALUES {}) AS v(id, token) WHERE devices.id = v.id",
                rows.join(", ")
            )])
            .await;
    }
}

#[tokio::test]
async fn a_worker_killed_mid_fan_out_over_fcm_apns_and_web_push_devices_loses_none() {
    // Arrange: 12,000 devices, a third each; one stand-in is all three services.
    let extra = "[webpush]\nallowed_hosts = [\"localhost\"]\n";
    let mut cluster = Cluster::new(Backend::Postgres, 12_000, 5, extra).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let dir = cluster.dir.path().to_path_buf();
    std::fs::write(dir.join("vapid.pem"), key.serialize_pem()).unwrap();
    mix_providers(&cluster, key.public_key_raw()).await;
    let (tls, key_path) = (cluster.stand_in.tls_endpoint(), dir.join("apns-key.p8"));
    let (vapid, key_path) = (dir.join("vapid.pem"), key_path.display().to_string());
    let vapid = vapid.display().to_string();
    let vars = [
        ("APNS_ENDPOINT", tls.as_str()),
        ("APNS_KEY_PATH", key_path.as_str()),
        ("APNS_KEY_ID", "STANDIN123"),
        ("APNS_TEAM_ID", "TEAM123456"),
        ("APNS_TOPIC", "com.example.talks"),
        ("WEBPUSH_VAPID_PRIVATE_KEY_PATH", vapid.as_str()),
        ("WEBPUSH_VAPID_SUBJECT", SUBJECT),
    ];

    // Act: killed a quarter of the way in, then started again.
    cluster.start_replica(&vars).await;
    cluster.wait_subscribed(1).await;
    cluster.publish(r#"{"talk_id": 1}"#).await;
    cluster.wait_delivered(3_000, Duration::from_secs(60)).await;
    cluster.kill(0);
    assert!(
        cluster.delivered() < 12_000,
        "the fan-out was still running"
    );
    cluster.start_replica(&vars).await;

    // Assert: every device once (the repeats bounded as for FCM alone), through its provider.
    cluster
        .assert_everyone_got("talk_posted:1", 1, CRASH_REPEATS, Duration::from_secs(90))
        .await;
    assert!(
        cluster.log(1).contains("\"resumed\":true"),
        "{}",
        cluster.logs()
    );
    let stats = cluster.stand_in.counters.snapshot();
    assert!(
        stats["webpush"]["decrypted"].as_u64().unwrap() >= 4_000,
        "{stats}"
    );
    assert_eq!(stats["webpush"]["decrypt_failures"], 0, "{stats}");
    for (i, provider) in [(1, "fcm"), (2, "apns"), (3, "webpush")] {
        let token = format!("tok-{i:08}");
        assert!(
            cluster
                .stand_in
                .counters
                .deliveries(&token, "talk_posted:1")
                >= 1,
            "{provider} device {token}"
        );
    }
}

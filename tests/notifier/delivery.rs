//! Real delivery against the FCM stand-in over TLS (its own CA, its own token endpoint), and
//! APNs through the transport seam: what reaches the provider, pruning on every backend, retries,
//! paused providers, and the send modes that must never prune.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use notifier::Backend;
use notifier::PerProvider;
use notifier::Pushers;
use notifier::{ApnsPusher, ApnsRequest, ApnsResponse, ApnsTransport, TransportError};
use notifier::{EventOutcome, Summary, Worker};
use serde_json::Value;
use stand_in::{StandIn, StandInConfig};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// Devices of user 2 (a clipper of program 10) whose tokens ask the stand-in for failures.
const FCM_CASES: &[&str] = &[
    "INSERT INTO devices (id, user_id, provider, platform, token) VALUES
        (21, 2, 'fcm', 'android', 'tok-unregistered-21'),
        (22, 2, 'fcm', 'android', 'tok-flaky-22'),
        (23, 2, 'fcm', 'android', 'tok-mismatch-23'),
        (24, 2, 'fcm', 'android', 'tok-invalid-24'),
        (25, 2, 'fcm', 'ios', 'tok-iphone-through-fcm-25')",
];

/// A stand-in over TLS and the variables that point the notifier at it.
pub(crate) struct Live {
    pub(crate) stand_in: StandIn,
    pub(crate) dir: tempfile::TempDir,
}

impl Live {
    pub(crate) async fn start() -> Self {
        init_tracing();
        let stand_in = StandIn::start(StandInConfig {
            record: true,
            ..Default::default()
        })
        .await
        .expect("the stand-in starts");
        let dir = tempfile::tempdir().unwrap();
        stand_in.write_files(dir.path()).unwrap();
        Self { stand_in, dir }
    }

    pub(crate) fn vars(&self) -> Vec<(&'static str, String)> {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            ("APP_ENV", "production".into()),
            ("FCM_ENDPOINT", self.stand_in.tls_endpoint()),
            ("NOTIFIER_EXTRA_CA_FILE", path("ca.pem")),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                path("service-account.json"),
            ),
        ]
    }

    fn stats(&self) -> Value {
        self.stand_in.counters.snapshot()
    }

    fn messages(&self) -> Vec<Value> {
        self.stand_in.counters.messages.lock().unwrap().clone()
    }
}

fn with<'a>(
    vars: &'a [(&'static str, String)],
    more: &[(&'static str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend(more.iter().copied());
    all
}

/// A worker with the pushers the settings configure (FCM at the stand-in; APNs not configured).
fn live_worker(settings: notifier::Settings, test_db: &TestDb) -> Worker {
    let providers = notifier::providers(&settings).expect("providers from the settings");
    let pushers = Pushers::new(providers, RecordingPusher::new());
    Worker::new(settings, test_db.db.clone(), pushers).expect("worker")
}

/// One event through a worker on SQLite with the scenario and the FCM cases, the stand-in as FCM.
async fn one_live_event(extra: &[(&'static str, &str)], message: &[u8]) -> (Live, TestDb, Summary) {
    let live = Live::start().await;
    let test_db = scenario_db(Backend::Sqlite).await;
    test_db.execute(FCM_CASES).await;
    let vars = live.vars();
    let mut more = vec![("DATABASE_URL", test_db.url.as_str())];
    more.extend_from_slice(extra);
    let settings = settings_with(&with(&vars, &more));
    let worker = live_worker(settings, &test_db);
    let summary = processed(
        worker
            .handle_message(message, &CancellationToken::new())
            .await,
    );
    (live, test_db, summary)
}

fn processed(outcome: EventOutcome) -> Summary {
    match outcome {
        EventOutcome::Processed(summary) => summary,
        other => panic!("expected a processed event, got {other:?}"),
    }
}

async fn live_delivery_reaches_the_stand_in_prunes_and_retries(backend: Backend) {
    // Arrange
    let live = Live::start().await;
    let test_db = scenario_db(backend).await;
    test_db.execute(FCM_CASES).await;
    let channel = unique("talk_posted");
    let vars = live.vars();
    let mut settings = settings_with(&with(
        &vars,
        &[
            ("DATABASE_URL", &test_db.url),
            ("NOTIFIER_CHANNEL", &channel),
        ],
    ));
    settings.retry.initial_backoff_ms = 20;
    let providers = notifier::providers(&settings).unwrap();
    let pushers = Pushers::new(
        PerProvider {
            fcm: providers.fcm,
            ..PerProvider::default()
        },
        RecordingPusher::new(),
    );
    let mut worker = RunningWorker::start(settings, test_db.db.clone(), pushers).await;

    // Act: through a real channel, as the PHP app would.
    publish(&redis_url(), &channel, r#"{"talk_id": 100}"#).await;
    let summary = processed(worker.next_outcome().await);
    worker.stop().await;

    // Assert: the summary…
    let r = &summary.report;
    assert!(!summary.dry_run);
    // Sent: devices 2, 6, 25 and the flaky 22 after a retry. Pruned: 21 and 23. Failed: 24.
    // Skipped: the APNs devices 3, 4 and 8 (APNs is not configured here).
    assert_eq!(
        (r.sent, r.pruned, r.failed, r.skipped, r.recipients),
        (4, 2, 1, 3, 10),
        "{r:?}"
    );
    assert_eq!(r.retries, 1);

    // …matches what the stand-in counted…
    let stats = live.stats();
    assert_eq!(stats["delivered"], r.sent, "{stats}");
    assert_eq!(stats["duplicates"], 0);
    assert_eq!(stats["errors"]["UNREGISTERED"], 1);
    assert_eq!(stats["errors"]["SENDER_ID_MISMATCH"], 1);
    assert_eq!(stats["errors"]["INVALID_ARGUMENT"], 1);
    assert_eq!(stats["errors"]["UNAVAILABLE"], 1);
    assert!(
        stats["errors"].get("UNAUTHENTICATED").is_none(),
        "every request carried a token the stand-in issued"
    );
    assert_eq!(stats["token_requests"], 1, "the access token is cached");
    // 256 FCM pushes in flight at most (its share gives way while APNs has nothing to send),
    // about 100 streams a connection: three connections, opened once for the whole event.
    assert_eq!(
        stats["connections"]["tls"], 3,
        "a handful of HTTP/2 connections, not one per push"
    );

    // …each message is what FCM expects…
    let messages = live.messages();
    let by_token = |t: &str| {
        messages
            .iter()
            .find(|m| m["token"] == t)
            .unwrap_or_else(|| panic!("no message to {t}"))
    };
    let ben = by_token("token-ben-android-02");
    assert_eq!(ben["notification"]["title"], "New talk on 深夜ラジオ");
    assert_eq!(ben["notification"]["body"], "第1回 Hello");
    assert_eq!(ben["data"]["talk_id"], "100");
    assert_eq!(ben["data"]["url"], "notifier-demo://talks/100");
    assert_eq!(ben["android"]["priority"], "high");
    assert_eq!(ben["android"]["ttl"], "86400s");
    assert_eq!(ben["android"]["collapse_key"], "talk_posted:100");
    assert_eq!(ben["android"]["notification"]["tag"], "talk_posted:100");
    assert!(
        ben.get("apns").is_none(),
        "no APNs block for an Android device"
    );
    let iphone = by_token("tok-iphone-through-fcm-25");
    assert_eq!(
        iphone["apns"]["headers"]["apns-collapse-id"],
        "talk_posted:100"
    );
    assert_eq!(iphone["apns"]["payload"]["aps"]["thread-id"], "program-10");
    assert_eq!(messages.len(), 4);

    // …and the dead tokens are disabled, the invalid one kept.
    assert_eq!(
        test_db.disabled().await,
        [
            "5:fcm:UNREGISTERED",
            "21:fcm:UNREGISTERED",
            "23:fcm:SENDER_ID_MISMATCH"
        ]
    );
}

#[tokio::test]
async fn live_delivery_reaches_the_stand_in_prunes_and_retries_on_postgres() {
    live_delivery_reaches_the_stand_in_prunes_and_retries(Backend::Postgres).await;
}

#[tokio::test]
async fn live_delivery_reaches_the_stand_in_prunes_and_retries_on_mysql() {
    live_delivery_reaches_the_stand_in_prunes_and_retries(Backend::MySql).await;
}

#[tokio::test]
async fn live_delivery_reaches_the_stand_in_prunes_and_retries_on_sqlite() {
    live_delivery_reaches_the_stand_in_prunes_and_retries(Backend::Sqlite).await;
}

#[tokio::test]
async fn validate_asks_fcm_to_check_without_delivering_and_never_prunes() {
    let (live, test_db, summary) = one_live_event(
        &[("NOTIFIER_SEND_MODE", "validate")],
        br#"{"talk_id": 100}"#,
    )
    .await;

    let stats = live.stats();
    assert_eq!(stats["delivered"], 0, "{stats}");
    assert!(stats["validated"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(summary.report.pruned, 0);
    assert_eq!(
        test_db.disabled().await,
        ["5:fcm:UNREGISTERED"],
        "nothing new disabled"
    );
}

#[tokio::test]
async fn a_dry_run_contacts_no_provider_and_never_prunes() {
    // Production, but the event asks for a dry run.
    let (live, test_db, summary) =
        one_live_event(&[], br#"{"talk_id": 100, "dry_run": true}"#).await;

    assert!(summary.dry_run);
    assert_eq!(summary.report.sent, 10);
    let stats = live.stats();
    assert_eq!(
        (stats["requests"].as_u64(), stats["token_requests"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(stats["connections"]["tls"], 0, "not even a connection");
    assert_eq!(test_db.disabled().await, ["5:fcm:UNREGISTERED"]);
}

#[tokio::test]
async fn rejected_credentials_pause_the_provider_for_the_rest_of_the_event() {
    // A project the service account may not send for: 403 PERMISSION_DENIED for every push.
    let (live, test_db, summary) = one_live_event(
        &[
            ("FCM_PROJECT_ID", "someone-elses-project"),
            ("NOTIFIER_CONCURRENCY", "1"),
        ],
        br#"{"talk_id": 100}"#,
    )
    .await;

    let r = &summary.report;
    assert_eq!(r.paused, ["fcm"]);
    assert_eq!(r.failed, 1, "only the first FCM push was tried");
    assert_eq!(r.skipped, 10 - 1);
    assert_eq!(live.stats()["requests"], 1);
    assert_eq!(live.stats()["errors"]["PERMISSION_DENIED"], 1);
    assert_eq!(
        test_db.disabled().await,
        ["5:fcm:UNREGISTERED"],
        "credentials errors never prune"
    );
}

/// APNs as Apple answers: 410 with a timestamp for tokens containing `gone`, 400 BadDeviceToken
/// for `bad`, 200 otherwise.
#[derive(Default)]
struct FakeApns {
    seen: Mutex<Vec<ApnsRequest>>,
}

const UNREGISTERED_AT_MS: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z

#[async_trait::async_trait]
impl ApnsTransport for FakeApns {
    async fn send(&self, request: &ApnsRequest) -> Result<ApnsResponse, TransportError> {
        self.seen.lock().unwrap().push(request.clone());
        let token = &request.device_token;
        let (status, reason, timestamp_ms) = if token.contains("gone") {
            (
                410,
                Some("Unregistered".to_string()),
                Some(UNREGISTERED_AT_MS as u64),
            )
        } else if token.contains("bad") {
            (400, Some("BadDeviceToken".to_string()), None)
        } else {
            (200, None, None)
        };
        Ok(ApnsResponse {
            status,
            reason,
            timestamp_ms,
        })
    }
}

async fn apns_410_prunes_only_tokens_not_registered_again_since(backend: Backend) {
    let test_db = scenario_db(backend).await;
    test_db
        .execute(&[
            "INSERT INTO devices (id, user_id, provider, platform, token, updated_at) VALUES
            (31, 2, 'apns', 'ios', 'apns-gone-registered-before', '2020-01-01 00:00:00'),
            (32, 2, 'apns', 'ios', 'apns-gone-registered-again-after', '2026-06-01 00:00:00'),
            (33, 2, 'apns', 'ios', 'apns-bad-token', '2020-01-01 00:00:00')",
        ])
        .await;
    let settings = settings_with(&[
        ("DATABASE_URL", &test_db.url),
        ("NOTIFIER_SEND_MODE", "live"),
        ("APNS_KEY_PATH", "/not/read/by/this/test.p8"),
        ("APNS_KEY_ID", "ABC123DEFG"),
        ("APNS_TEAM_ID", "DEF123GHIJ"),
        ("APNS_TOPIC", "com.example.talks"),
    ]);
    let transport = Arc::new(FakeApns::default());
    let pushers = Pushers::new(
        PerProvider {
            apns: Some(Arc::new(ApnsPusher::new(transport.clone(), &settings.apns))),
            ..PerProvider::default()
        },
        RecordingPusher::new(),
    );
    let worker = Worker::new(settings, test_db.db.clone(), pushers).unwrap();

    let summary = processed(
        worker
            .handle_message(br#"{"talk_id": 100}"#, &CancellationToken::new())
            .await,
    );

    // APNs devices 3, 4, 8 and 31–33 were tried; FCM devices 2 and 6 skipped (not configured).
    let r = &summary.report;
    assert_eq!(
        (r.sent, r.pruned, r.failed, r.skipped),
        (3, 2, 1, 2),
        "{r:?}"
    );
    assert_eq!(
        test_db.disabled().await,
        [
            "5:fcm:UNREGISTERED",
            "31:apns:Unregistered",
            "33:apns:BadDeviceToken"
        ]
    );
    let seen = transport.seen.lock().unwrap();
    assert_eq!(seen.len(), 6);
    assert!(
        seen.iter()
            .all(|r| r.topic == "com.example.talks" && r.collapse_id == "talk_posted:100")
    );
    // apns-expiration is now + the TTL (a day), as unix seconds.
    let due = Utc::now().timestamp() as u64 + 86_400;
    assert!(
        seen.iter().all(|r| r.expiration.abs_diff(due) < 120),
        "{}",
        seen[0].expiration
    );
}

#[tokio::test]
async fn apns_410_prunes_only_tokens_not_registered_again_since_on_postgres() {
    apns_410_prunes_only_tokens_not_registered_again_since(Backend::Postgres).await;
}

#[tokio::test]
async fn apns_410_prunes_only_tokens_not_registered_again_since_on_mysql() {
    apns_410_prunes_only_tokens_not_registered_again_since(Backend::MySql).await;
}

#[tokio::test]
async fn apns_410_prunes_only_tokens_not_registered_again_since_on_sqlite() {
    apns_410_prunes_only_tokens_not_registered_again_since(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_bad_apns_key_in_firebase_pauses_apple_and_web_devices_but_not_android() {
    let live = Live::start().await;
    let test_db = scenario_db(Backend::Sqlite).await;
    test_db
        .execute(&[
            "INSERT INTO devices (id, user_id, provider, platform, token) VALUES
            (41, 2, 'fcm', 'ios', 'tok-thirdpartyauth-41'),
            (42, 2, 'fcm', 'ios', 'tok-iphone-42'),
            (43, 2, 'fcm', 'android', 'tok-android-43')",
        ])
        .await;
    let vars = live.vars();
    // One push at a time, so the order is known: 2 (android), 6 (web), 41, 42, 43.
    let settings = settings_with(&with(
        &vars,
        &[
            ("DATABASE_URL", &test_db.url),
            ("NOTIFIER_CONCURRENCY", "1"),
        ],
    ));
    let worker = live_worker(settings, &test_db);

    let summary = processed(
        worker
            .handle_message(br#"{"talk_id": 100}"#, &CancellationToken::new())
            .await,
    );

    let r = &summary.report;
    assert_eq!(r.paused, ["fcm:ios+web"]);
    // Sent: 2, 6 (before the error) and 43 (Android, after it). Failed: 41. Skipped: 42 and the
    // three APNs devices (APNs is not configured here).
    assert_eq!((r.sent, r.failed, r.skipped), (3, 1, 4), "{r:?}");
    let delivered: Vec<String> = live
        .messages()
        .iter()
        .map(|m| m["token"].as_str().unwrap().to_string())
        .collect();
    assert!(
        delivered.contains(&"tok-android-43".to_string()),
        "{delivered:?}"
    );
    assert!(!delivered.contains(&"tok-iphone-42".to_string()));
}

#[tokio::test]
async fn apns_through_the_stand_in_delivers_prunes_and_retries_beside_fcm() {
    let live = Live::start().await;
    let test_db = scenario_db(Backend::Sqlite).await;
    test_db
        .execute(&[
            "INSERT INTO devices (id, user_id, provider, platform, token, updated_at) VALUES
            (51, 2, 'apns', 'ios', 'apns-unregistered-51', '2020-01-01 00:00:00'),
            (52, 2, 'apns', 'ios', 'apns-bad-token-52', '2020-01-01 00:00:00'),
            (53, 2, 'apns', 'ios', 'apns-flaky-53', '2020-01-01 00:00:00')",
        ])
        .await;
    let key = live.dir.path().join("apns-key.p8").display().to_string();
    let vars = live.vars();
    let endpoint = live.stand_in.tls_endpoint();
    let mut settings = settings_with(&with(
        &vars,
        &[
            ("DATABASE_URL", &test_db.url),
            ("APNS_ENDPOINT", &endpoint),
            ("APNS_KEY_PATH", &key),
            ("APNS_KEY_ID", "STANDIN123"),
            ("APNS_TEAM_ID", "TEAM123456"),
            ("APNS_TOPIC", "com.example.talks"),
        ],
    ));
    settings.retry.initial_backoff_ms = 20;
    let worker = live_worker(settings, &test_db);

    let summary = processed(
        worker
            .handle_message(br#"{"talk_id": 100}"#, &CancellationToken::new())
            .await,
    );

    // APNs: 3, 4, 8 and the flaky 53 delivered; 51 (410) and 52 (BadDeviceToken) pruned.
    // FCM: 2 and 6 delivered.
    let r = &summary.report;
    assert_eq!(
        (r.sent, r.pruned, r.failed, r.skipped),
        (6, 2, 0, 0),
        "{r:?}"
    );
    assert_eq!(r.retries, 1);
    let stats = live.stats();
    assert_eq!(stats["delivered"], 6, "{stats}");
    assert_eq!(stats["errors"]["Unregistered"], 1);
    assert_eq!(stats["errors"]["BadDeviceToken"], 1);
    assert!(
        stats["errors"].get("InvalidProviderToken").is_none(),
        "the ES256 provider token verified"
    );
    assert_eq!(
        test_db.disabled().await,
        [
            "5:fcm:UNREGISTERED",
            "51:apns:Unregistered",
            "52:apns:BadDeviceToken"
        ]
    );
}

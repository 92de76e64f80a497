//! Several apps in one deployment (contract §10): a lite app beside the default one, with its
//! own FCM project (a second stand-in, its own service account) and its own APNs topic (the same
//! key, as an iPhone and an iPad app of one team have). Each device's push reaches its own app's
//! project or topic; a device of an app not configured is skipped and counted; one app's rejected
//! credentials pause only that app; a crash mid-event resumes both apps' devices exactly; the
//! audience query may or may not return `app`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notifier::{AppId, Backend, EventOutcome, FanoutReport, Worker};
use stand_in::{StandIn, StandInConfig};
use tokio_util::sync::CancellationToken;

use crate::faults::{CRASH_REPEATS, Cluster};
use crate::helpers::*;

const LITE_PROJECT: &str = "lite-project";
const MAIN_TOPIC: &str = "com.example.talks";
const LITE_TOPIC: &str = "com.example.talks.lite";

/// Beside the scenario's devices (all of the default app, NULL `app`): the lite app's, an
/// unknown app's, and one more whose `app` is NULL written out.
const MORE_DEVICES: &str =
    "INSERT INTO devices (id, user_id, provider, platform, token, app) VALUES
    (20, 2, 'fcm', 'android', 'token-lite-android-20', 'lite'),
    (21, 3, 'apns', 'ios', 'token-lite-iphone-0021', 'lite'),
    (22, 4, 'fcm', 'android', 'token-gone-android-22', 'gone'),
    (23, 6, 'apns', 'ios', 'token-gone-iphone-0023', 'gone'),
    (24, 6, 'fcm', 'android', 'token-null-android-24', NULL),
    (25, 2, 'fcm', 'android', 'token-lite-android-25', 'lite'),
    (26, 3, 'fcm', 'android', 'token-lite-android-26', 'lite')";

/// Two stand-ins: the main one (the default app's FCM project, and APNs for both apps) and the
/// lite app's FCM project.
struct TwoApps {
    main: StandIn,
    lite: StandIn,
    dir: tempfile::TempDir,
}

impl TwoApps {
    async fn start() -> Self {
        init_tracing();
        let recording = |project: &str| StandInConfig {
            record: true,
            project: project.into(),
            ..Default::default()
        };
        let main = StandIn::start(recording("stand-in-project")).await.unwrap();
        let lite = StandIn::start(recording(LITE_PROJECT)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        main.write_files(dir.path()).unwrap();
        let lite_account = stand_in::service_account_json(&lite.plain_endpoint(), LITE_PROJECT);
        std::fs::write(dir.path().join("lite-account.json"), lite_account).unwrap();
        Self { main, lite, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The config file: the lite app's FCM at its own stand-in (asking for `lite_project`), its
    /// APNs at the main stand-in with the same key and its own topic.
    fn config(&self, lite_project: &str) -> PathBuf {
        let config = format!(
            "[claims]\nkey_prefix = \"{prefix}:\"\n\n\
             [retry]\ninitial_backoff_ms = 20\n\n\
             [apps.lite.fcm]\nendpoint = \"{lite}\"\ncredentials = \"{account}\"\n\
             project_id = \"{lite_project}\"\n\n\
             [apps.lite.apns]\nendpoint = \"{apns}\"\nkey_path = \"{key}\"\nkey_id = \"STANDIN123\"\n\
             team_id = \"TEAM123456\"\ntopic = \"{LITE_TOPIC}\"\n",
            prefix = unique("apps"),
            lite = self.lite.plain_endpoint(),
            account = self.path("lite-account.json"),
            apns = self.main.tls_endpoint(),
            key = self.path("apns-key.p8"),
        );
        let path = self.dir.path().join(format!("{}.toml", unique("notifier")));
        std::fs::write(&path, config).unwrap();
        path
    }

    /// The default app through the environment, as before there were apps.
    fn vars(&self, config: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFIER_CONFIG", config.display().to_string()),
            ("APP_ENV", "production".into()),
            ("FCM_ENDPOINT", self.main.tls_endpoint()),
            ("NOTIFIER_EXTRA_CA_FILE", self.path("ca.pem")),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                self.path("service-account.json"),
            ),
            ("APNS_ENDPOINT", self.main.tls_endpoint()),
            ("APNS_KEY_PATH", self.path("apns-key.p8")),
            ("APNS_KEY_ID", "STANDIN123".into()),
            ("APNS_TEAM_ID", "TEAM123456".into()),
            ("APNS_TOPIC", MAIN_TOPIC.into()),
        ]
    }

    /// One event (talk 100 of the scenario) through a worker with every app's configured pushers.
    async fn one_event(&self, test_db: &TestDb, lite_project: &str) -> FanoutReport {
        let config = self.config(lite_project);
        let vars = self.vars(&config);
        let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.push(("DATABASE_URL", &test_db.url));
        let settings = settings_with(&vars);
        let pushers = notifier::configured_pushers(&settings, RecordingPusher::new())
            .expect("every app's pushers");
        let worker = Worker::new(settings, test_db.db.clone(), pushers).expect("worker");
        let outcome = worker
            .handle_message(br#"{"talk_id": 100}"#, &CancellationToken::new())
            .await;
        match outcome {
            EventOutcome::Processed(summary) => summary.report,
            other => panic!("expected a processed event, got {other:?}"),
        }
    }
}

/// The FCM tokens a stand-in delivered to, sorted.
fn fcm_tokens(stand_in: &StandIn) -> Vec<String> {
    let messages = stand_in.counters.messages.lock().unwrap();
    let mut tokens: Vec<String> = messages
        .iter()
        // FCM's messages; the APNs requests recorded beside them have no top-level token.
        .filter_map(|m| m["token"].as_str().map(str::to_string))
        .collect();
    tokens.sort();
    tokens
}

/// The APNs deliveries a stand-in saw, as (token, topic), sorted.
fn apns_topics(stand_in: &StandIn) -> Vec<(String, String)> {
    let mut seen = stand_in.counters.apns_topics.lock().unwrap().clone();
    seen.sort();
    seen
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn each_push_reaches_its_apps_project_or_topic_and_an_unknown_apps_devices_are_skipped(
    backend: Backend,
) {
    // Arrange
    let apps = TwoApps::start().await;
    let test_db = scenario_db(backend).await;
    test_db.execute(&[MORE_DEVICES]).await;

    // Act
    let r = apps.one_event(&test_db, LITE_PROJECT).await;

    // Assert: FCM by project (one stand-in each), APNs by topic.
    assert_eq!(
        fcm_tokens(&apps.main),
        [
            "token-ben-android-02",
            "token-dan-browser-006",
            "token-null-android-24"
        ]
    );
    assert_eq!(
        fcm_tokens(&apps.lite),
        [
            "token-lite-android-20",
            "token-lite-android-25",
            "token-lite-android-26"
        ]
    );
    let topics = owned(&[
        ("token-ben-iphone-0003", MAIN_TOPIC),
        ("token-chie-iphone-004", MAIN_TOPIC),
        ("token-fumi-iphone-008", MAIN_TOPIC),
        ("token-lite-iphone-0021", LITE_TOPIC),
    ]);
    assert_eq!(apns_topics(&apps.main), topics);
    assert_eq!((r.sent, r.failed, r.skipped, r.unknown_app), (10, 0, 2, 2));
    assert_eq!(r.recipients, 12, "the unknown app's devices are counted");
    let by_app: Vec<_> = r.apps.iter().map(|a| (a.app.as_str(), a.sent)).collect();
    assert_eq!(by_app, [("default", 6), ("lite", 4)]);
    assert_eq!(
        r.apps_detail().unwrap(),
        "default sent=6 failed=0 pruned=0 skipped=0; lite sent=4 failed=0 pruned=0 skipped=0; \
         unknown skipped=2"
    );
}

#[tokio::test]
async fn each_push_reaches_its_apps_project_or_topic_and_an_unknown_apps_devices_are_skipped_on_postgres()
 {
    each_push_reaches_its_apps_project_or_topic_and_an_unknown_apps_devices_are_skipped(
        Backend::Postgres,
    )
    .await;
}

#[tokio::test]
async fn each_push_reaches_its_apps_project_or_topic_and_an_unknown_apps_devices_are_skipped_on_mariadb()
 {
    each_push_reaches_its_apps_project_or_topic_and_an_unknown_apps_devices_are_skipped(
        Backend::MySql,
    )
    .await;
}

#[tokio::test]
async fn each_push_reaches_its_apps_project_or_topic_and_an_unknown_apps_devices_are_skipped_on_sqlite()
 {
    each_push_reaches_its_apps_project_or_topic_and_an_unknown_apps_devices_are_skipped(
        Backend::Sqlite,
    )
    .await;
}

#[tokio::test]
async fn one_apps_rejected_credentials_pause_only_that_apps_provider() {
    // Arrange: the lite service account asks for a project it has no access to (403).
    let apps = TwoApps::start().await;
    let test_db = scenario_db(Backend::Sqlite).await;
    test_db.execute(&[MORE_DEVICES]).await;

    // Act
    let r = apps.one_event(&test_db, "someone-elses-project").await;

    // Assert: the lite app's FCM is paused; its APNs and the whole default app carry on.
    assert_eq!(r.paused, ["lite/fcm"]);
    assert!(fcm_tokens(&apps.lite).is_empty());
    assert_eq!(fcm_tokens(&apps.main).len(), 3, "the default app's FCM");
    assert_eq!(apns_topics(&apps.main).len(), 4, "both apps' APNs");
    let lite = r.apps.iter().find(|a| a.app == "lite").unwrap();
    assert_eq!((lite.sent, lite.failed + lite.skipped), (1, 3));
    let default = r.apps.iter().find(|a| a.app == "default").unwrap();
    assert_eq!((default.sent, default.failed), (6, 0));
}

/// Devices with an `app` the dry-run worker resolves, read by `audience` (the default query
/// when `None`).
async fn apps_of_devices(audience: Option<&str>) -> Vec<(i64, Option<AppId>)> {
    let test_db = scenario_db(Backend::Sqlite).await;
    test_db.execute(&[MORE_DEVICES]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifier.toml");
    std::fs::write(
        &config,
        "[apps.lite.fcm]\ncredentials = \"/unread-in-a-dry-run.json\"\n",
    )
    .unwrap();
    let mut settings = settings_with(&[
        ("NOTIFIER_CONFIG", config.to_str().unwrap()),
        ("DATABASE_URL", &test_db.url),
    ]);
    if let Some(query) = audience {
        settings.queries.audience = query.to_string();
    }
    let recorder = RecordingPusher::new();
    let worker = Worker::new(settings, test_db.db.clone(), dry_run_pushers(&recorder)).unwrap();
    worker
        .handle_message(br#"{"talk_id": 100}"#, &CancellationToken::new())
        .await;
    recorder
        .taken()
        .iter()
        .map(|r| (r.device_id, r.app))
        .collect()
}

#[tokio::test]
async fn the_audience_query_names_the_app_and_null_or_no_column_means_the_default_app() {
    let lite = Some(
        notifier::AppNames::new([notifier::AppName::parse("lite").unwrap()])
            .resolve(Some("lite"))
            .unwrap(),
    );
    let default = Some(AppId::DEFAULT);

    // The default query reads `app`: NULL is the default app, `gone` is skipped.
    let with_column = apps_of_devices(None).await;
    let expected: Vec<(i64, Option<AppId>)> = [2, 3, 4, 6, 8, 24]
        .into_iter()
        .map(|id| (id, default))
        .chain([20, 21, 25, 26].map(|id| (id, lite)))
        .collect();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(with_column, sorted);

    // A query without the column: every device is the default app's, whatever the table says.
    let without = "
        SELECT d.id AS device_id, d.provider AS provider, d.platform AS platform, d.token AS token
        FROM devices d
        WHERE d.id > :after_id AND d.provider = :provider AND d.disabled_at IS NULL
          AND (:author_id IS NULL OR d.user_id <> :author_id)
          AND EXISTS (SELECT 1 FROM clips c WHERE c.user_id = d.user_id AND c.program_id = :program_id)
        ORDER BY d.id";
    let without_column = apps_of_devices(Some(without)).await;
    let ids: Vec<i64> = without_column.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [2, 3, 4, 6, 8, 20, 21, 22, 23, 24, 25, 26]);
    assert!(without_column.iter().all(|(_, app)| *app == default));
}

#[tokio::test]
async fn a_crash_mid_event_resumes_both_apps_devices_exactly() {
    // Arrange: 20,000 devices, the even ones the lite app's (its own FCM project).
    let lite = StandIn::start(StandInConfig {
        project: LITE_PROJECT.into(),
        latency: Duration::from_millis(5),
        ..Default::default()
    })
    .await
    .unwrap();
    let lite_dir = tempfile::tempdir().unwrap();
    let account = lite_dir.path().join("lite-account.json");
    let json = stand_in::service_account_json(&lite.plain_endpoint(), LITE_PROJECT);
    std::fs::write(&account, json).unwrap();
    let extra = format!(
        "[apps.lite.fcm]\nendpoint = \"{}\"\ncredentials = \"{}\"\n",
        lite.plain_endpoint(),
        account.display()
    );
    let mut cluster = Cluster::new(Backend::Postgres, 20_000, 5, &extra).await;
    cluster
        .db
        .execute(&["UPDATE devices SET app = 'lite' WHERE id % 2 = 0"])
        .await;
    let delivered = |s: &StandIn| s.counters.snapshot()["unique_delivered"].as_u64().unwrap();
    let duplicates = |s: &StandIn| s.counters.snapshot()["duplicates"].as_u64().unwrap();
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(1).await;

    // Act: kill the worker mid-event, then start another.
    cluster.publish(r#"{"talk_id": 1}"#).await;
    cluster.wait_delivered(2_500, Duration::from_secs(60)).await;
    cluster.kill(0);
    assert!(
        delivered(&cluster.stand_in) + delivered(&lite) < 20_000,
        "still running"
    );
    cluster.start_replica(&[]).await;

    // Assert: every device once at its own app's project, repeats within a crash's bound.
    let started = std::time::Instant::now();
    while delivered(&cluster.stand_in) < 10_000 || delivered(&lite) < 10_000 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (delivered(&cluster.stand_in), delivered(&lite)),
        (10_000, 10_000)
    );
    for id in [1_u64, 9_999, 19_999] {
        let token = format!("tok-{id:08}");
        assert_eq!(
            cluster
                .stand_in
                .counters
                .deliveries(&token, "talk_posted:1")
                .min(1),
            1
        );
        assert_eq!(
            lite.counters.deliveries(&token, "talk_posted:1"),
            0,
            "{token}"
        );
    }
    let repeats = duplicates(&cluster.stand_in) + duplicates(&lite);
    assert!(
        repeats <= CRASH_REPEATS,
        "{repeats} repeats:\n{}",
        cluster.logs()
    );
    assert!(
        cluster.log(1).contains("\"resumed\":true"),
        "{}",
        cluster.logs()
    );
}

#[tokio::test]
async fn check_names_the_app_whose_credentials_fail_and_send_takes_an_app() {
    let apps = TwoApps::start().await;
    let config = apps.config(LITE_PROJECT);
    let vars = apps.vars(&config);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    let run = |args: &'static [&'static str], extra: Vec<(&'static str, String)>| {
        let mut all = vars.clone();
        all.push(("DATABASE_URL", &db.url));
        let extra_refs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend(extra_refs);
        let mut cmd = crate::cli::notifier(dir.path(), &all);
        cmd.args(args);
        async move {
            let out = cmd.output().await.unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        }
    };

    let (ok, text) = run(&["check"], vec![]).await;
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "ok      app lite: FCM ([apps.lite.fcm]): access token issued for project lite-project"
        ),
        "{text}"
    );
    assert!(
        text.contains("ok      app lite: APNs ([apps.lite.apns])"),
        "{text}"
    );

    let broken = apps.dir.path().join("broken.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("lite-account.json", "missing.json");
    std::fs::write(&broken, text).unwrap();
    let (ok, text) = run(
        &["check"],
        vec![("NOTIFIER_CONFIG", broken.display().to_string())],
    )
    .await;
    assert!(!ok);
    assert!(
        text.contains("FAILED  app lite: FCM ([apps.lite.fcm])"),
        "{text}"
    );
    assert!(
        text.contains("ok      FCM (GOOGLE_APPLICATION_CREDENTIALS)"),
        "{text}"
    );

    let send = &[
        "send",
        "--app",
        "lite",
        "--provider",
        "fcm",
        "--token",
        "tok-sent-to-lite",
        "--title",
        "t",
        "--body",
        "b",
    ];
    let (ok, text) = run(send, vec![]).await;
    assert!(ok, "{text}");
    assert!(text.contains("fcm of app lite push to tok-sent…"), "{text}");
    assert_eq!(fcm_tokens(&apps.lite), ["tok-sent-to-lite"]);
    assert!(fcm_tokens(&apps.main).is_empty());

    let unknown = &[
        "send",
        "--app",
        "gone",
        "--provider",
        "fcm",
        "--token",
        "t",
        "--title",
        "t",
        "--body",
        "b",
    ];
    let (ok, text) = run(unknown, vec![]).await;
    assert!(!ok && text.contains("--app gone"), "{text}");
}

/// The audience is read outside the event's span (entering it around every row was a cost per
/// push), so the warning about an app nobody configured, written while a row is read, carries
/// the event itself.
#[tokio::test]
async fn the_warning_about_an_unknown_app_names_the_event_whose_rows_named_it() {
    // Arrange: ten devices of the default app, one of an app this notifier does not serve.
    let mut cluster = Cluster::new(Backend::Postgres, 10, 0, "").await;
    cluster
        .db
        .execute(&[
            "INSERT INTO devices (id, user_id, provider, platform, token, app)
             VALUES (11, 2, 'fcm', 'android', 'token-gone-android-11', 'gone')",
        ])
        .await;
    cluster.start_replica(&[]).await;
    cluster.wait_subscribed(1).await;

    // Act
    cluster.publish(r#"{"talk_id": 1}"#).await;

    // Assert
    let started = std::time::Instant::now();
    while cluster.processed_by("talk_posted:1") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cluster.delivered(), 10);
    let log = cluster.log(0);
    let warning = log
        .lines()
        .find(|l| l.contains("does not serve"))
        .unwrap_or_else(|| panic!("no warning about the app:\n{}", cluster.logs()));
    assert!(warning.contains("\"app\":\"gone\""), "{warning}");
    assert!(
        warning.contains("\"event_id\":\"talk_posted:1\""),
        "{warning}"
    );
}

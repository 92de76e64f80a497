//! The `notifier-stand-in` binary as staging and the compose `stand-in` profile run it: it prints
//! where it listens, writes its CA and a service account, issues tokens and takes FCM sends over
//! TLS, and the controls a load run uses (tokens counted, latency changed). (The notifier's own
//! tests push to the library in-process.)

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// What the binary printed: the `KEY=value` lines, and the stats URL under `stats`.
async fn printed_settings(stdout: tokio::process::ChildStdout) -> HashMap<String, String> {
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = HashMap::new();
    while printed.len() < 4 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the stand-in prints its settings")
            .unwrap()
            .expect("a line");
        if let Some((k, v)) = line.trim().split_once('=') {
            printed.insert(k.to_string(), v.to_string());
        } else if let Some(url) = line.trim().strip_prefix("stats: curl ") {
            printed.insert("stats".into(), url.to_string());
        }
    }
    printed
}

#[tokio::test]
async fn the_stand_in_binary_serves_fcm_and_writes_its_ca_and_service_account() {
    stand_in::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_notifier-stand-in"))
        .args(["--tls-addr", "127.0.0.1:0", "--plain-addr", "127.0.0.1:0"])
        .arg("--dir")
        .arg(dir.path().join("sd"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let printed = printed_settings(child.stdout.take().unwrap()).await;
    assert!(printed["FCM_ENDPOINT"].starts_with("https://localhost:"));
    assert!(std::fs::exists(dir.path().join("sd/apns-key.p8")).unwrap());

    // The service account's token endpoint issues an access token for the FCM scope.
    let account: Value = serde_json::from_str(
        &std::fs::read_to_string(&printed["GOOGLE_APPLICATION_CREDENTIALS"]).unwrap(),
    )
    .unwrap();
    assert_eq!(account["project_id"], "stand-in-project");
    let scope = json!({"scope": "https://www.googleapis.com/auth/firebase.messaging"});
    let assertion = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(scope.to_string()));
    let grant = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    );
    let ca = std::fs::read(&printed["NOTIFIER_EXTRA_CA_FILE"]).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let token: Value = client
        .post(account["token_uri"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(grant)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = token["access_token"].as_str().expect("an access token");

    // FCM over TLS, trusted through the CA it wrote, takes a send with that token.
    let url = format!(
        "{}/v1/projects/stand-in-project/messages:send",
        printed["FCM_ENDPOINT"]
    );
    let message = json!({"message": {"token": "tok-from-a-test-0001", "notification": {"title": "t", "body": "b"}}});
    let sent = client
        .post(&url)
        .bearer_auth(access_token)
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    let refused = client.post(&url).bearer_auth("ya29.forged").json(&message);
    assert_eq!(refused.send().await.unwrap().status(), 401);

    let stats: Value = client
        .get(&printed["stats"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["delivered"], 1, "{stats}");
    assert_eq!(stats["token_requests"], 1, "{stats}");
    assert_eq!(stats["errors"]["UNAUTHENTICATED"], 1, "{stats}");
}

/// Starts the binary with `args` (besides free ports and a directory); returns it (killed on
/// drop), what it printed and a client trusting its CA.
async fn started(
    dir: &std::path::Path,
    args: &[&str],
) -> (
    tokio::process::Child,
    HashMap<String, String>,
    reqwest::Client,
) {
    stand_in::install_crypto_provider();
    let mut child = Command::new(env!("CARGO_BIN_EXE_notifier-stand-in"))
        .args(["--tls-addr", "127.0.0.1:0", "--plain-addr", "127.0.0.1:0"])
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let printed = printed_settings(child.stdout.take().unwrap()).await;
    let ca = std::fs::read(&printed["NOTIFIER_EXTRA_CA_FILE"]).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    (child, printed, client)
}

/// Posts `body` as an FCM send (any token accepted) and an APNs push to device `device`;
/// returns both statuses and the stats after them.
async fn send_both(
    printed: &HashMap<String, String>,
    client: &reqwest::Client,
    body: &'static str,
    device: &str,
) -> (u16, u16, Value) {
    let base = &printed["FCM_ENDPOINT"];
    let post = |url: String| {
        client
            .post(url)
            .header("authorization", "Bearer load-generator")
            .header("content-type", "application/json")
            .header("apns-topic", "com.example.notifier")
            .header("apns-push-type", "alert")
            .body(body)
            .send()
    };
    let fcm = post(format!("{base}/v1/projects/stand-in-project/messages:send"));
    let fcm = fcm.await.unwrap().status().as_u16();
    let apns = post(format!("{base}/3/device/{device}"));
    let apns = apns.await.unwrap().status().as_u16();
    let stats = client.get(&printed["stats"]).send().await.unwrap();
    (fcm, apns, stats.json().await.unwrap())
}

#[tokio::test]
async fn by_default_every_send_is_parsed_checked_and_recorded_by_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, printed, client) = started(dir.path(), &["--accept-any-token"]).await;
    let good =
        r#"{"message":{"token":"device-1","notification":{"title":"t","body":"b"}},"aps":{}}"#;
    // FCM refuses the unknown top-level `aps`; APNs finds its `aps` object.
    let (fcm, apns, _) = send_both(&printed, &client, good, "device-1").await;
    assert_eq!((fcm, apns), (400, 200));
    let fcm_only = r#"{"message":{"token":"fcm-device","notification":{"title":"t","body":"b"}}}"#;
    let (fcm, apns, stats) = send_both(&printed, &client, fcm_only, "device-2").await;
    assert_eq!((fcm, apns), (200, 400), "APNs wants an aps object");
    assert_eq!(stats["delivered"], 2, "{stats}");
    assert_eq!(
        stats["unique_delivered"], 2,
        "one FCM and one APNs token: {stats}"
    );
    let (fcm, _, stats) = send_both(&printed, &client, "not json", "device-3").await;
    assert_eq!(fcm, 400);
    assert_eq!(stats["delivered"], 2, "{stats}");
}

#[tokio::test]
async fn with_light_every_send_is_answered_unread_and_only_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, printed, client) = started(dir.path(), &["--light"]).await;
    let (fcm, apns, stats) = send_both(&printed, &client, "not json", "device-1").await;
    assert_eq!((fcm, apns), (200, 200));
    assert_eq!(stats["delivered"], 2, "{stats}");
    assert_eq!(stats["unique_delivered"], 0, "no token recorded: {stats}");
    assert!(stats["last_delivered_ms"].as_u64().unwrap() > 0, "{stats}");
}

/// `GET /stats/tokens`: how often each token was reached.
async fn token_counts(client: &reqwest::Client, base: &str) -> HashMap<String, u32> {
    let response = client.get(format!("{base}/stats/tokens")).send().await;
    response.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn the_stand_in_binary_counts_each_token_and_slows_down_or_fails_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, printed, client) =
        started(dir.path(), &["--accept-any-token", "--count-tokens"]).await;
    let url = format!(
        "{}/v1/projects/stand-in-project/messages:send",
        printed["FCM_ENDPOINT"]
    );
    let send = |token: &str| {
        let message = json!({"message": {"token": token, "android": {"collapse_key": "e1"}}});
        client.post(&url).bearer_auth("any").json(&message).send()
    };
    for token in ["tok-a", "tok-b", "tok-a"] {
        assert_eq!(send(token).await.unwrap().status(), 200);
    }
    let base = printed["stats"].trim_end_matches("/stats").to_string();
    assert_eq!(
        token_counts(&client, &base).await,
        HashMap::from([("tok-a".into(), 2), ("tok-b".into(), 1)])
    );

    // Slowed at run time: the next answer waits the new latency; then fast again.
    let set = |ms: &str| client.post(format!("{base}/latency?ms={ms}")).send();
    assert_eq!(set("1000").await.unwrap().status(), 204);
    let started = std::time::Instant::now();
    assert_eq!(send("tok-c").await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(set("0").await.unwrap().status(), 204);
    let started = std::time::Instant::now();
    assert_eq!(send("tok-d").await.unwrap().status(), 200);
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(set("soon").await.unwrap().status(), 400);

    // An outage answers Apple's side 503 too, until it ends.
    let apns = |token: &str| {
        client
            .post(format!("{}/3/device/{token}", printed["FCM_ENDPOINT"]))
            .header("apns-topic", "com.example.app")
            .header("apns-push-type", "alert")
            .json(&json!({"aps": {"alert": "hi"}}))
            .send()
    };
    let outage = |on: &str| client.post(format!("{base}/outage?on={on}")).send();
    assert_eq!(outage("true").await.unwrap().status(), 204);
    assert_eq!(apns("ios-a").await.unwrap().status(), 503);
    assert_eq!(send("tok-e").await.unwrap().status(), 503);
    assert_eq!(outage("false").await.unwrap().status(), 204);
    assert_eq!(apns("ios-a").await.unwrap().status(), 200);

    // A reset forgets the tokens, as it forgets every count.
    let reset = client.post(format!("{base}/stats/reset")).send().await;
    assert_eq!(reset.unwrap().status(), 204);
    let counts = token_counts(&client, &base).await;
    assert!(counts.is_empty(), "{counts:?}");
}

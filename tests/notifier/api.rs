//! The HTTP API on a running replica: an event posted over HTTP runs through the deployment's
//! input (its stream, or beside a pub/sub channel the API's own stream) and claims, once, and its
//! status follows the claim.

use std::time::Duration;

use notifier::Backend;

use crate::faults::Cluster;
use crate::gaurun::free_addr;

async fn state_of(base: &str, event_id: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{base}/v1/events/{event_id}")).await;
    match r {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

#[tokio::test]
async fn an_event_posted_over_http_reaches_each_device_once_and_its_status_follows_the_claim() {
    let stream = crate::helpers::unique("api_events");
    let input = [
        ("NOTIFIER_INPUT", "stream"),
        ("NOTIFIER_STREAM", stream.as_str()),
    ];
    posted_twice_reaches_each_device_once(&input).await;
}

#[tokio::test]
async fn with_the_pubsub_input_an_event_posted_over_http_reaches_each_device_once() {
    posted_twice_reaches_each_device_once(&[]).await;
}

/// One replica reading `input`, serving the API: an event posted twice is sent once, and its
/// status turns done.
async fn posted_twice_reaches_each_device_once(input: &[(&str, &str)]) {
    notifier::install_crypto_provider();
    let mut cluster = Cluster::new(Backend::Postgres, 40, 0, "").await;
    let addr = free_addr();
    let mut env = input.to_vec();
    env.push(("NOTIFIER_API_ADDR", addr.as_str()));
    cluster.start_replica(&env).await;
    let base = format!("http://{addr}");
    let mut up = false;
    for _ in 0..200 {
        if state_of(&base, "api-1").await.0 == 404 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the API answers: {}", cluster.logs());

    let client = reqwest::Client::new();
    for _ in 0..2 {
        let r = client
            .post(format!("{base}/v1/events"))
            .body(r#"{"talk_id": 1, "event_id": "api-1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }

    cluster.wait_delivered(40, Duration::from_secs(60)).await;
    let mut state = serde_json::Value::Null;
    for _ in 0..100 {
        state = state_of(&base, "api-1").await.1;
        if state["state"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state["state"], "done", "{state}");
    assert_eq!(
        (&state["recipients"], &state["sent"], &state["failed"]),
        (
            &serde_json::json!(40),
            &serde_json::json!(40),
            &serde_json::json!(0)
        ),
        "{state}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((cluster.unique(), cluster.duplicates()), (40, 0));
}

/// The console's routes on a deployment that has run nothing yet: an empty list, not an error
/// (Redis refuses the empty pipeline a naive read would send), and their parameters checked with
/// the native error format, as `openapi.json` describes them (schemathesis found all three).
#[tokio::test]
async fn the_console_s_routes_answer_an_empty_deployment_and_refuse_what_openapi_json_refuses() {
    notifier::install_crypto_provider();
    let mut cluster = Cluster::new(Backend::Postgres, 1, 0, "").await;
    let addr = free_addr();
    cluster
        .start_replica(&[("NOTIFIER_API_ADDR", addr.as_str())])
        .await;
    let base = format!("http://{addr}");
    let get = |query: &'static str| {
        let url = format!("{base}/v1/events{query}");
        async move {
            let r = reqwest::get(url).await.ok()?;
            let status = r.status().as_u16();
            Some((status, r.json::<serde_json::Value>().await.ok()?))
        }
    };
    let mut first = None;
    for _ in 0..200 {
        first = get("").await;
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = first.unwrap_or_else(|| panic!("the API answers: {}", cluster.logs()));
    assert_eq!((status, &body["events"]), (200, &serde_json::json!([])));
    for query in ["?limit=0", "?limit=201", "?limit=-3", "?limit=abc"] {
        let (status, body) = get(query).await.expect("a JSON answer");
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    }
    let push = |body: serde_json::Value| {
        reqwest::Client::new()
            .post(format!("{base}/v1/test-push"))
            .json(&body)
            .send()
    };
    let odd_platform = serde_json::json!({"provider": "fcm", "token": "t", "platform": "tv"});
    let r = push(odd_platform).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let blank_token = serde_json::json!({"provider": "fcm", "token": " \u{3000} "});
    assert_eq!(push(blank_token).await.unwrap().status().as_u16(), 400);
    let null_app = serde_json::json!({"provider": "fcm", "token": "t", "app": null});
    let r = push(null_app).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
}

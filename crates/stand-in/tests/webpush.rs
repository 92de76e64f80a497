//! The Web Push service's own surface, over plain HTTP as the benchmark uses it: minting a
//! subscription, refusing a push without a VAPID token, and counting a body that does not decrypt
//! (the count the notifier's tests assert to be zero must be able to be anything else).

use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use stand_in::{StandIn, StandInConfig};

async fn start(accept_any_token: bool) -> StandIn {
    StandIn::start(StandInConfig {
        accept_any_token,
        ..StandInConfig::default()
    })
    .await
    .unwrap()
}

/// POSTs `body` to subscription `id` as a push, with `aes128gcm` and a TTL; the status.
async fn push(stand_in: &StandIn, id: &str, body: Vec<u8>) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/wp/{id}", stand_in.plain_endpoint()))
        .header("ttl", "60")
        .header("content-encoding", "aes128gcm")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn stats(stand_in: &StandIn) -> Value {
    reqwest::get(format!("{}/stats", stand_in.plain_endpoint()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_subscription_minted_over_http_is_a_browsers_json_on_the_tls_port() {
    let stand_in = start(false).await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/webpush/subscriptions",
            stand_in.plain_endpoint()
        ))
        .json(&json!({"id": "bench-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let subscription: Value = response.json().await.unwrap();
    assert_eq!(
        subscription["endpoint"],
        format!("https://localhost:{}/wp/bench-1", stand_in.tls_addr.port())
    );
    let key = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(subscription["keys"][name].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(
        (key("p256dh").len(), key("p256dh")[0], key("auth").len()),
        (65, 4, 16)
    );
}

#[tokio::test]
async fn a_count_mints_that_many_subscriptions_in_one_request() {
    let stand_in = start(true).await;
    let minted: Value = reqwest::Client::new()
        .post(format!(
            "{}/webpush/subscriptions",
            stand_in.plain_endpoint()
        ))
        .json(&json!({"id": "bench-", "count": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoints: Vec<&str> = minted
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["endpoint"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(endpoints, ["bench-1", "bench-2", "bench-3"]);
    assert_ne!(minted[0]["keys"]["p256dh"], minted[1]["keys"]["p256dh"]);
}

#[tokio::test]
async fn a_push_without_a_vapid_token_is_refused_and_counted() {
    let stand_in = start(false).await;
    stand_in.webpush_subscribe("a", None);
    assert_eq!(push(&stand_in, "a", vec![0; 100]).await, 403);
    assert_eq!(stats(&stand_in).await["webpush"]["vapid_rejected"], 1);
    assert_eq!(push(&stand_in, "unknown", vec![0; 100]).await, 404);
}

#[tokio::test]
async fn a_body_that_does_not_decrypt_is_answered_400_and_counted() {
    let stand_in = start(true).await;
    let subscription = stand_in.webpush_subscribe("b", None);
    // A well-formed header (salt, rs 4096, a 65-byte keyid) around a record made with no key.
    let mut body = vec![0u8; 16];
    body.extend_from_slice(&4096u32.to_be_bytes());
    body.push(65);
    body.extend_from_slice(&subscription.p256dh);
    body.extend_from_slice(&[0x5a; 40]);
    assert_eq!(push(&stand_in, "b", body).await, 400);
    assert_eq!(push(&stand_in, "b", vec![1, 2, 3]).await, 400);
    let counters = &stand_in.counters;
    assert_eq!(counters.webpush_decrypt_failures.load(Ordering::Relaxed), 2);
    assert_eq!(stats(&stand_in).await["webpush"]["decrypt_failures"], 2);
    assert_eq!(counters.webpush_decrypted.load(Ordering::Relaxed), 0);
}

//! A Gaurun client moves by changing its URL: Gaurun's SPEC.md example and the requests a PHP app
//! writes (`null` for unset columns, users without devices, one bad notification in a batch, odd
//! key spelling, trailing bytes) replayed against a running replica, each row with Gaurun's answer
//! (mercari/gaurun 0.14: `PushNotificationHandler`, `enqueueNotifications`), the notifier's, and
//! which tokens must and must not reach the stand-in. A request Gaurun answered 200 is answered
//! 200 here too; a notification Gaurun dropped after its 200 is named under `rejected`.
//!
//! Also: a caller's `identifier` full of newlines still makes one line per event in pretty logs.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::gaurun::{cluster, recorded, start_api_replica};

/// One request and what must come of it.
struct Row {
    what: &'static str,
    body: String,
    /// Gaurun's status (its body was `{"message": "ok"}` for every 200).
    gaurun: u16,
    /// The notifier's status and body; for a 400, the start of its message.
    status: u16,
    answer: Value,
    /// Tokens that must arrive, once each, and tokens that must not.
    sent: &'static [&'static str],
    not_sent: &'static [&'static str],
}

fn ok() -> Value {
    json!({"message": "ok"})
}

fn ok_without(rejected: Value) -> Value {
    json!({"message": "ok", "rejected": rejected})
}

fn notifications(list: Value) -> String {
    json!({ "notifications": list }).to_string()
}

/// SPEC.md's example, tokens renamed so that each row's are its own.
fn spec_md() -> Row {
    Row {
        what: "SPEC.md's example",
        body: notifications(json!([
            {"token": ["spec-ios-1"], "platform": 1, "message": "Hello, iOS!", "badge": 1,
             "sound": "default", "expiry": 10,
             "extend": [{"key": "url", "val": "..."}, {"key": "intent", "val": "..."}]},
            {"token": ["spec-android-1"], "platform": 2, "message": "Hello, Android!",
             "collapse_key": "update", "delay_while_idle": true, "time_to_live": 10}
        ])),
        gaurun: 200,
        status: 200,
        answer: ok(),
        sent: &["spec-ios-1", "spec-android-1"],
        not_sent: &[],
    }
}

/// What `json_encode` writes for a row whose optional columns are NULL.
fn php_nulls() -> Row {
    let nulls = json!({"title": null, "subtitle": null, "badge": null, "sound": null,
        "category": null, "content_available": null, "mutable_content": null, "expiry": null,
        "push_type": null, "collapse_key": null, "delay_while_idle": null, "time_to_live": null,
        "priority": null, "extend": null, "identifier": null});
    let mut android = json!({"token": ["php-null-android"], "platform": 2, "message": "m"});
    let mut ios = json!({"token": ["php-null-ios"], "platform": 1, "message": "m"});
    for n in [&mut android, &mut ios] {
        n.as_object_mut()
            .unwrap()
            .extend(nulls.as_object().unwrap().clone());
    }
    Row {
        what: "null for every unset field",
        body: notifications(json!([android, ios])),
        gaurun: 200,
        status: 200,
        answer: ok(),
        sent: &["php-null-android", "php-null-ios"],
        not_sent: &[],
    }
}

fn rows() -> Vec<Row> {
    let hundred_and_one: Vec<Value> = (0..101)
        .map(|i| json!({"token": [format!("over-{i}")], "platform": 2, "message": "m"}))
        .collect();
    vec![
        spec_md(),
        php_nulls(),
        Row {
            what: "users without devices in a batch: [], null, absent",
            body: notifications(json!([
                {"token": [], "platform": 2, "message": "m"},
                {"token": null, "platform": 1, "message": "m"},
                {"platform": 2, "message": "m"},
                {"token": ["no-devices-neighbour"], "platform": 2, "message": "m"}
            ])),
            gaurun: 200,
            status: 200,
            answer: ok(),
            sent: &["no-devices-neighbour"],
            not_sent: &[],
        },
        Row {
            what: "one notification Gaurun drops in a batch (and our stricter rules)",
            body: notifications(json!([
                {"token": ["mixed-kept-1"], "platform": 2, "message": "m"},
                {"token": ["mixed-out-platform"], "platform": 3, "message": "m"},
                {"token": ["mixed-out-empty", ""], "platform": 2, "message": "m"},
                {"token": ["mixed-out-message"], "platform": 1, "message": ""},
                {"token": ["mixed-out-voip"], "platform": 1, "message": "m", "push_type": "voip"},
                {"token": ["mixed-out-badge"], "platform": 1, "message": "m", "badge": -1},
                {"token": ["mixed-out-key"], "platform": 2, "message": "m",
                 "extend": [{"key": "google.x", "val": "v"}]},
                null,
                {"token": ["mixed-kept-2"], "platform": 1, "message": "m"}
            ])),
            gaurun: 200,
            status: 200,
            answer: ok_without(json!([
                {"index": 1, "reason": "platform 3 is not 1 (iOS) or 2 (Android)"},
                {"index": 2, "reason": "token[1] is an empty string"},
                {"index": 3, "reason": "message is empty"},
                {"index": 4, "reason": "push_type \"voip\" is not alert or background"},
                {"index": 5, "reason": "badge -1 is negative"},
                {"index": 6, "reason": "extend key \"google.x\" is reserved by the provider"},
                {"index": 7, "reason": "platform 0 is not 1 (iOS) or 2 (Android)"}
            ])),
            sent: &["mixed-kept-1", "mixed-kept-2"],
            not_sent: &[
                "mixed-out-platform",
                "mixed-out-empty",
                "mixed-out-message",
                "mixed-out-voip",
                "mixed-out-badge",
                "mixed-out-key",
            ],
        },
        Row {
            what: "keys spelled in any case, bytes after the JSON",
            body: r#"{"Notifications":[{"Token":["odd-case-1"],"PLATFORM":2,"Message":"m"}]}
garbage after the value"#
                .into(),
            gaurun: 200,
            status: 200,
            answer: ok(),
            sent: &["odd-case-1"],
            not_sent: &[],
        },
        Row {
            what: "a whole float as an integer (Gaurun: 400, Go refuses 2.0 for an int)",
            body: notifications(
                json!([{"token": ["float-platform-1"], "platform": 2.0, "message": "m"}]),
            ),
            gaurun: 400,
            status: 200,
            answer: ok(),
            sent: &["float-platform-1"],
            not_sent: &[],
        },
        Row {
            what: "a value of the wrong type fails the request, as in Go",
            body: notifications(json!([
                {"token": ["wrong-type-ok"], "platform": 2, "message": "m"},
                {"token": ["wrong-type-1"], "platform": "2", "message": "m"}
            ])),
            gaurun: 400,
            status: 400,
            answer: json!("Request-body is malformed: "),
            sent: &[],
            not_sent: &["wrong-type-ok", "wrong-type-1"],
        },
        Row {
            what: "PHP's form encoding instead of JSON",
            body:
                "notifications%5B0%5D%5Btoken%5D%5B0%5D=form-1&notifications%5B0%5D%5Bplatform%5D=2"
                    .into(),
            gaurun: 400,
            status: 400,
            answer: json!("Request-body is malformed: "),
            sent: &[],
            not_sent: &["form-1"],
        },
        Row {
            what: "no notifications",
            body: "{}".into(),
            gaurun: 400,
            status: 400,
            answer: json!("empty notification"),
            sent: &[],
            not_sent: &[],
        },
        Row {
            what: "more than notification_max",
            body: notifications(Value::from(hundred_and_one)),
            gaurun: 400,
            status: 400,
            answer: json!("number of notifications(101) over limit(100)"),
            sent: &[],
            not_sent: &["over-0", "over-100"],
        },
    ]
}

/// The token each recorded message went to: FCM's `token`, or the APNs request's.
fn token_of(message: &Value) -> String {
    message["token"]
        .as_str()
        .or(message["apns"]["token"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn gaurun_s_requests_get_gaurun_s_answers_and_reach_the_stand_in_as_they_did() {
    notifier::install_crypto_provider();
    let mut cluster = cluster("").await;
    let status = crate::gaurun::free_addr();
    let base = start_api_replica(&mut cluster, &[("NOTIFIER_HTTP_ADDR", status.as_str())]).await;
    let client = reqwest::Client::new();
    let metrics = || async {
        let r = reqwest::get(format!("http://{status}/metrics"))
            .await
            .unwrap();
        r.text().await.unwrap()
    };
    let platform = "notifier_api_rejected_total{reason=\"platform\"}";
    assert!(
        metrics().await.contains(&format!("{platform} 0")),
        "created at zero"
    );
    let rows = rows();
    for row in &rows {
        let r = client
            .post(format!("{base}/push"))
            .body(row.body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(status, row.status, "{}: {answer}", row.what);
        if row.gaurun == 200 {
            assert_eq!(status, 200, "{}: Gaurun answered 200", row.what);
        }
        match row.status {
            200 => assert_eq!(answer, row.answer, "{}", row.what),
            _ => {
                let text = answer["message"].as_str().unwrap_or_default();
                let start = row.answer.as_str().unwrap();
                assert!(text.starts_with(start), "{}: {answer}", row.what);
            }
        }
    }
    let counted = metrics().await;
    assert!(counted.contains(&format!("{platform} 2")), "{counted}");
    assert!(counted.contains("notifier_api_rejected_total{reason=\"empty_token\"} 1"));
    let expected: usize = rows.iter().map(|r| r.sent.len()).sum();
    let messages = recorded(&cluster, expected).await;
    // Anything else still in flight would have arrived with these.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = {
        let now = cluster.stand_in.counters.messages.lock().unwrap().clone();
        assert!(now.len() >= messages.len());
        now
    };
    let mut arrived: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        *arrived.entry(token_of(m)).or_default() += 1;
    }
    for row in &rows {
        for token in row.sent {
            assert_eq!(arrived.get(*token), Some(&1), "{}: {token} once", row.what);
        }
        for token in row.not_sent {
            assert_eq!(arrived.get(*token), None, "{}: {token} left out", row.what);
        }
    }
    assert_eq!(arrived.len(), expected, "nothing else arrived: {arrived:?}");
    // null is the field absent: the providers get what the same request without them gives.
    let find = |token: &str| {
        messages
            .iter()
            .find(|m| token_of(m) == token)
            .unwrap()
            .clone()
    };
    assert_eq!(
        find("php-null-android"),
        json!({"token": "php-null-android", "data": {"message": "m"}, "android": {}})
    );
    assert_eq!(
        find("php-null-ios")["apns"]["payload"],
        json!({"aps": {"alert": "m", "badge": 0}})
    );
}

#[tokio::test]
async fn an_identifier_full_of_newlines_writes_one_pretty_line_per_event() {
    notifier::install_crypto_provider();
    let mut cluster = cluster("").await;
    let base = start_api_replica(&mut cluster, &[("LOG_FORMAT", "pretty")]).await;
    let forged = "order-7\n2026-01-01T00:00:00Z  INFO Event processed. forged=1\r\n";
    let body = json!({"notifications": [
        {"token": ["nl-left-out"], "platform": 3, "message": "m", "identifier": forged},
        {"token": ["unregistered-nl-1"], "platform": 1, "message": "m", "identifier": forged}
    ]});
    let (status, answer) = crate::gaurun::post(&base, &body).await;
    assert_eq!(status, 200, "{answer}");
    let mut log = String::new();
    for _ in 0..200 {
        log = cluster.log(0);
        if log.contains("is dead") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("forged=1")).collect();
    assert_eq!(
        lines.len(),
        2,
        "the left-out WARN and the dead token's:\n{log}"
    );
    for line in &lines {
        assert!(line.contains(r"order-7\n2026-01-01T00:00:00Z"), "{line}");
    }
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "no forged line:\n{log}"
    );
}

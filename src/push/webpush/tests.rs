//! The Web Push pusher against the stand-in's push service, which checks each request as push
//! services do and decrypts each body as the browser would (with `web-push-native`, not our
//! code), and (in `interop`) one push against pywebpush's `http_ece` as well: three
//! implementations agree.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use stand_in::{StandIn, StandInConfig, WebPushSubscription};

use super::classify::VAPID_SETTINGS;
use super::*;
use crate::audience::Device;
use crate::content::{Notification, Talk, Templates};
use crate::push::http2::Http2Client;

struct Setup {
    stand_in: StandIn,
    pusher: WebPushPusher,
    /// The VAPID public key, as browsers subscribe with it.
    server_key: Vec<u8>,
    dir: tempfile::TempDir,
}

async fn setup(validate_only: bool) -> Setup {
    let stand_in = StandIn::start(StandInConfig {
        record: true,
        ..StandInConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let key_path = dir.path().join("vapid.pem");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let settings = WebPushSettings {
        vapid_private_key_path: key_path.display().to_string(),
        vapid_subject: "mailto:ops@example.com".into(),
        allowed_hosts: AllowedHosts::parse(["localhost"]).unwrap(),
        ..WebPushSettings::default()
    };
    let pusher =
        WebPushPusher::load(&settings, dial(&stand_in, dir.path()), validate_only).unwrap();
    Setup {
        stand_in,
        pusher,
        server_key: key.public_key_raw().to_vec(),
        dir,
    }
}

/// Connections as production makes them, trusting the stand-in's CA.
fn dial(stand_in: &StandIn, dir: &Path) -> Dial {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &stand_in.ca_pem).unwrap();
    Box::new(move |origin| Http2Client::new(origin, 1, Some(&ca), Duration::from_secs(10)))
}

/// The notification the shipped templates render for a talk, in `locale`.
fn notification(locale: &str) -> Arc<Notification> {
    let content: crate::content::ContentSettings = crate::push::shipped("content");
    let talk = Talk {
        talk_id: 42,
        program_id: 7,
        author_id: None,
        talk_title: "所有権を五分で".into(),
        program_title: "Rust入門".into(),
    };
    let rendered = Templates::new(&content)
        .unwrap()
        .render(&talk, "ev-1")
        .unwrap();
    Arc::clone(rendered.for_locale(Some(locale)))
}

fn push(token: &str, notification: Arc<Notification>) -> Push {
    Push {
        event_id: "ev-1".into(),
        device: Device {
            id: 1,
            user_id: Some(2),
            provider: Some(Provider::WebPush),
            platform: Some(crate::audience::Platform::Web),
            app: Some(crate::apps::AppId::DEFAULT),
            token: token.into(),
            locale: Some("ja".into()),
            updated_at: None,
        },
        content: PushContent::Talk(notification),
    }
}

impl Setup {
    fn subscribe(&self, id: &str) -> WebPushSubscription {
        self.stand_in.webpush_subscribe(id, Some(&self.server_key))
    }

    async fn send(&self, token: &str) -> PushOutcome {
        self.pusher.push(&push(token, notification("ja"))).await
    }

    fn stat(&self, counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Every body that reached the stand-in decrypted: a failure is a bug, never a count.
    fn assert_all_decrypted(&self) {
        let c = &self.stand_in.counters;
        assert_eq!(
            self.stat(&c.webpush_decrypt_failures),
            0,
            "bodies that did not decrypt"
        );
    }
}

fn code(outcome: &PushOutcome) -> &str {
    match outcome {
        PushOutcome::Unregistered { reason, .. }
        | PushOutcome::Retryable { reason, .. }
        | PushOutcome::Rejected { reason }
        | PushOutcome::CredentialsRejected { reason, .. } => reason.code(),
        other => panic!("no reason: {other:?}"),
    }
}

#[tokio::test]
async fn a_push_reaches_the_browser_signed_and_decrypts_to_the_users_language() {
    let s = setup(false).await;
    let alice = s.subscribe("alice");
    let bob = s.subscribe("bob");
    assert_eq!(s.send(&alice.json()).await, PushOutcome::Delivered);
    assert_eq!(s.send(&bob.json()).await, PushOutcome::Delivered);
    use base64::Engine;
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.pusher.public_key());
    assert_eq!(
        public.unwrap(),
        s.server_key,
        "the key browsers subscribe with"
    );

    let received = s.stand_in.webpush_messages("alice");
    assert_eq!(received.len(), 1);
    let message = &received[0];
    let plaintext: Value = serde_json::from_slice(&message.plaintext).unwrap();
    assert_eq!(plaintext["title"], "Rust入門に新しいトークが投稿されました");
    assert_eq!(plaintext["body"], "所有権を五分で");
    assert_eq!(plaintext["data"]["talk_id"], "42");
    assert_eq!(plaintext["data"]["program_id"], "7");
    assert_eq!(plaintext["data"]["event_id"], "ev-1");
    assert_eq!(
        (message.ttl, message.urgency.as_deref()),
        (86_400, Some("normal"))
    );
    assert_eq!(s.stand_in.webpush_messages("bob").len(), 1);
    s.assert_all_decrypted();
    let c = &s.stand_in.counters;
    assert_eq!(s.stat(&c.webpush_decrypted), 2);
    assert_eq!(s.stat(&c.webpush_vapid_rejected), 0);
    // One origin, one set of connections: both pushes went over the one connection.
    assert_eq!(s.stat(&c.tls_connections), 1);
    assert_eq!(s.pusher.origins.len(), 1);
}

#[tokio::test]
async fn endpoints_off_the_allowed_hosts_or_not_https_are_skipped_and_never_dialled() {
    let s = setup(false).await;
    let sub = s.subscribe("carol");
    let port = s.stand_in.tls_addr.port();
    let plain = s.stand_in.plain_addr.port();
    let local = format!("https://localhost:{port}/");
    let elsewhere = [
        sub.json()
            .replace(&local, &format!("https://127.0.0.1:{port}/")),
        sub.json()
            .replace(&local, &format!("http://localhost:{plain}/")),
        sub.json()
            .replace(&local, &format!("https://localhost.evil.example:{port}/")),
    ];
    for token in &elsewhere {
        assert_ne!(token, &sub.json());
        let outcome = s.send(token).await;
        assert!(
            matches!(&outcome, PushOutcome::Skipped { reason } if reason.contains("allowed_hosts")),
            "{outcome:?}"
        );
    }
    let c = &s.stand_in.counters;
    assert_eq!(
        (
            s.stat(&c.tls_connections),
            s.stat(&c.plain_connections),
            s.stat(&c.requests)
        ),
        (0, 0, 0),
        "the stand-in saw no connection"
    );
    assert_eq!(s.pusher.origins.len(), 0, "no client was even made");
    // The same subscription on its allowed host goes.
    assert_eq!(s.send(&sub.json()).await, PushOutcome::Delivered);
}

#[tokio::test]
async fn the_default_allowed_hosts_are_the_public_push_services_only() {
    let s = setup(false).await;
    let settings = WebPushSettings::default();
    let pusher = WebPushPusher::new(
        &settings,
        Vapid::new(
            crate::push::jwt::Es256Key::from_pem(
                rcgen::KeyPair::generate()
                    .unwrap()
                    .serialize_pem()
                    .as_bytes(),
            )
            .unwrap(),
            "mailto:ops@example.com",
            Arc::new(SystemClock),
        ),
        dial(&s.stand_in, s.dir.path()),
        false,
    );
    let outcome = pusher
        .push(&push(&s.subscribe("dave").json(), notification("en")))
        .await;
    assert_eq!(outcome.label(), "skipped");
    assert_eq!(s.stat(&s.stand_in.counters.requests), 0);
}

#[tokio::test]
async fn each_answer_of_the_push_service_becomes_its_outcome() {
    let s = setup(false).await;
    let gone = s.send(&s.subscribe("gone-1").json()).await;
    assert!(matches!(gone, PushOutcome::Unregistered { .. }), "{gone:?}");
    assert_eq!(code(&gone), "HTTP 410");
    let too_large = s.send(&s.subscribe("toolarge-1").json()).await;
    assert_eq!(
        (too_large.label(), code(&too_large)),
        ("rejected", "HTTP 413")
    );

    let flaky = s.subscribe("flaky-1").json();
    let first = s.send(&flaky).await;
    assert!(
        matches!(first, PushOutcome::Retryable { retry_after: Some(d), quota: false, .. } if d == Duration::from_secs(1)),
        "{first:?}"
    );
    assert_eq!(s.send(&flaky).await, PushOutcome::Delivered);

    // A subscription the service no longer knows: 404, pruned like 410.
    let forgotten = s
        .subscribe("erin")
        .json()
        .replace("/wp/erin", "/wp/unknown");
    assert_eq!(s.send(&forgotten).await.label(), "unregistered");

    // Subscribed with another application server key: the service refuses our VAPID token.
    let other_key = rcgen::KeyPair::generate()
        .unwrap()
        .public_key_raw()
        .to_vec();
    let mismatch = s.stand_in.webpush_subscribe("frank", Some(&other_key));
    let refused = s.send(&mismatch.json()).await;
    assert!(
        matches!(
            refused,
            PushOutcome::CredentialsRejected {
                setting: VAPID_SETTINGS,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(s.stat(&s.stand_in.counters.webpush_vapid_rejected), 1);
    s.assert_all_decrypted();
}

#[tokio::test]
async fn validate_only_encrypts_and_signs_but_sends_nothing() {
    let s = setup(true).await;
    let sub = s.subscribe("grace");
    assert_eq!(s.send(&sub.json()).await, PushOutcome::Delivered);
    // Encryption did run: a key off the curve fails it.
    let mut p256dh = [0x04u8; 65];
    p256dh[1..].fill(0x11);
    let off_curve = WebPushSubscription {
        p256dh: p256dh.to_vec(),
        ..sub
    };
    let refused = s.send(&off_curve.json()).await;
    assert_eq!((refused.label(), code(&refused)), ("rejected", "p256dh"));
    let c = &s.stand_in.counters;
    assert_eq!((s.stat(&c.requests), s.stat(&c.tls_connections)), (0, 0));
}

#[tokio::test]
async fn what_cannot_be_sent_is_rejected_before_the_wire() {
    let s = setup(false).await;
    let broken = s.send("not a subscription").await;
    assert_eq!(
        (broken.label(), code(&broken)),
        ("rejected", "subscription")
    );

    let sub = s.subscribe("heidi").json();
    let mut long = (*notification("en")).clone();
    long.body = "x".repeat(encrypt::MAX_PLAINTEXT);
    let too_large = s.pusher.push(&push(&sub, Arc::new(long))).await;
    assert_eq!(
        (too_large.label(), code(&too_large)),
        ("rejected", "payload too large")
    );

    let mut prebuilt = push(&sub, notification("en"));
    prebuilt.content = PushContent::Prebuilt(Arc::new(crate::push::Prebuilt::Fcm(
        crate::push::FcmPrebuilt {
            message: serde_json::Map::new(),
        },
    )));
    let refused = s.pusher.push(&prebuilt).await;
    assert_eq!((refused.label(), code(&refused)), ("rejected", "prebuilt"));
    assert_eq!(s.stat(&s.stand_in.counters.requests), 0);
}

#[test]
fn the_key_is_read_from_pkcs8_or_sec1_pem_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vapid.pem");
    let (sec1, public) = crate::push::jwt::tests::sec1_pem();
    std::fs::write(&path, sec1).unwrap();
    let mut settings = WebPushSettings {
        vapid_private_key_path: path.display().to_string(),
        vapid_subject: "https://example.com/contact".into(),
        ..WebPushSettings::default()
    };
    let vapid = Vapid::load(&settings, Arc::new(SystemClock)).unwrap();
    use base64::Engine;
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&public);
    assert_eq!(vapid.public_key(), expected);

    let dial: fn() -> Dial =
        || Box::new(|origin| Http2Client::new(origin, 1, None, Duration::from_secs(1)));
    settings.vapid_subject = "ops@example.com".into();
    let e = WebPushPusher::load(&settings, dial(), false).err().unwrap();
    assert!(e.to_string().contains("webpush.vapid_subject"), "{e}");
    settings.vapid_subject = "mailto:ops@example.com".into();
    settings.vapid_private_key_path = dir.path().join("missing.pem").display().to_string();
    let e = WebPushPusher::load(&settings, dial(), false).err().unwrap();
    assert!(
        e.to_string()
            .contains("cannot read WEBPUSH_VAPID_PRIVATE_KEY_PATH"),
        "{e}"
    );
    std::fs::write(
        &path,
        "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    settings.vapid_private_key_path = path.display().to_string();
    let e = WebPushPusher::load(&settings, dial(), false).err().unwrap();
    assert!(
        e.to_string().contains("not a usable P-256 private key"),
        "{e}"
    );
}

mod interop;

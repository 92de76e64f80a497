//! APNs provider tokens against the stand-in's Apple rules, over a simulated clock shared by the
//! notifier's token source and the stand-in: reused, renewed in Apple's window, never too often,
//! never too old; and the production configuration aimed at Apple's hosts with the system roots.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use h2_shards::{Http2Client, Trust};
use notifier::ApnsSettings;
use notifier::Notification;
use notifier::{ApnsPusher, Clock, HttpTransport, ProviderToken, SystemClock};
use notifier::{Device, Platform, Provider};
use notifier::{Push, PushOutcome, Pusher};
use stand_in::{StandIn, StandInConfig};

use crate::helpers::settings_with;

/// The system clock moved by an offset (seconds, negative: behind) that the test advances, as
/// it advances the stand-in's.
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn offset(secs: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(secs)))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs() as i64, Ordering::Relaxed);
    }
}

impl Clock for TestClock {
    fn unix_now(&self) -> u64 {
        SystemClock
            .unix_now()
            .saturating_add_signed(self.0.load(Ordering::Relaxed))
    }
}

/// A stand-in acting as Apple, with its key and CA written out.
pub struct Apple {
    pub stand_in: StandIn,
    pub ca: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Apple {
    pub async fn start(config: StandInConfig) -> Self {
        let stand_in = StandIn::start(config).await.expect("the stand-in starts");
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = stand_in.write_files(dir.path()).unwrap();
        Self {
            stand_in,
            ca,
            key: dir.path().join("apns-key.p8"),
            _dir: dir,
        }
    }

    pub fn settings(&self) -> ApnsSettings {
        let key = self.key.display().to_string();
        settings_with(&[
            ("APNS_ENDPOINT", &self.stand_in.tls_endpoint()),
            ("APNS_KEY_PATH", &key),
            ("APNS_KEY_ID", "STANDIN123"),
            ("APNS_TEAM_ID", "TEAM123456"),
            ("APNS_TOPIC", "com.example.talks"),
        ])
        .apns
    }

    /// The shipped transport over `connections` connections, its token on `clock`.
    pub fn transport(&self, connections: usize, clock: Arc<dyn Clock>) -> HttpTransport {
        let settings = self.settings();
        let token = ProviderToken::load_with_clock(&settings, clock).expect("the key loads");
        HttpTransport::new(self.client(connections), Arc::new(token))
    }

    pub fn client(&self, connections: usize) -> Arc<Http2Client> {
        let endpoint = self.stand_in.tls_endpoint();
        let client = Http2Client::new(
            &endpoint,
            connections,
            Some(&self.ca),
            Duration::from_secs(20),
        );
        Arc::new(client.expect("the client builds"))
    }

    pub fn pusher(&self, transport: HttpTransport) -> ApnsPusher {
        ApnsPusher::new(Arc::new(transport), &self.settings())
    }

    /// Moves both clocks: the stand-in's and the notifier's token source's.
    pub fn advance(&self, clock: &TestClock, by: Duration) {
        clock.advance(by);
        self.stand_in.advance_clock(by);
    }

    pub fn stats(&self) -> serde_json::Value {
        self.stand_in.counters.snapshot()
    }
}

pub fn push(token: &str, event_id: &str) -> Push {
    Push {
        event_id: event_id.into(),
        device: Device {
            id: 1,
            user_id: None,
            provider: Some(Provider::Apns),
            platform: Some(Platform::Ios),
            app: Some(notifier::AppId::DEFAULT),
            token: token.into(),
            locale: None,
            updated_at: None,
        },
        content: Arc::new(Notification {
            title: "t".into(),
            body: "b".into(),
            data: Vec::new(),
            collapse_id: event_id.into(),
            thread_id: "program-1".into(),
        })
        .into(),
    }
}

#[tokio::test]
async fn one_token_serves_50_minutes_and_is_renewed_once_in_apples_window_over_90() {
    let apple = Apple::start(StandInConfig::default()).await;
    let clock = TestClock::offset(0);
    let pusher = apple.pusher(apple.transport(1, clock.clone()));
    // Every 5 simulated minutes for an hour and a half, a few pushes.
    for step in 0..=18 {
        for i in 0..3 {
            let p = push(&format!("device-{step}-{i}"), &format!("event-{step}"));
            assert_eq!(
                pusher.push(&p).await,
                PushOutcome::Delivered,
                "minute {}",
                step * 5
            );
        }
        apple.advance(&clock, Duration::from_secs(5 * 60));
    }
    let stats = apple.stats();
    assert_eq!(stats["delivered"], 57, "{stats}");
    assert!(
        stats["errors"].as_object().unwrap().is_empty(),
        "no TooManyProviderTokenUpdates, no ExpiredProviderToken: {stats}"
    );
    // Signed at minute 0, renewed at minute 50 (and not again before 100).
    assert_eq!(stats["apns"]["token_updates"], 1, "{stats}");
    assert_eq!(stats["connections"]["tls"], 1, "{stats}");
}

#[tokio::test]
async fn an_expired_answer_renews_the_token_and_sends_the_push_once_more() {
    let apple = Apple::start(StandInConfig::default()).await;
    // Our clock runs 15 minutes behind Apple's: at 46 minutes by ours, Apple sees 61.
    let clock = TestClock::offset(-15 * 60);
    let pusher = apple.pusher(apple.transport(1, clock.clone()));
    assert_eq!(
        pusher.push(&push("early", "e1")).await,
        PushOutcome::Delivered
    );
    apple.advance(&clock, Duration::from_secs(46 * 60));
    assert_eq!(
        pusher.push(&push("late", "e2")).await,
        PushOutcome::Delivered
    );
    let stats = apple.stats();
    assert_eq!(stats["errors"]["ExpiredProviderToken"], 1, "{stats}");
    assert_eq!(stats["delivered"], 2, "{stats}");
    assert_eq!(stats["apns"]["token_updates"], 1, "{stats}");
}

#[tokio::test]
async fn the_stand_in_refuses_tokens_changed_too_often_or_too_old_as_apple_does() {
    let apple = Apple::start(StandInConfig::default()).await;
    // Two token sources (two processes' worth) on one connection: the second token arrives
    // within 20 minutes of the first.
    let client = apple.client(1);
    let settings = apple.settings();
    let source = |clock: Arc<dyn Clock>| {
        let token = ProviderToken::load_with_clock(&settings, clock).unwrap();
        ApnsPusher::new(
            Arc::new(HttpTransport::new(client.clone(), Arc::new(token))),
            &settings,
        )
    };
    let first = source(Arc::new(SystemClock));
    let second = source(TestClock::offset(1));
    assert_eq!(first.push(&push("a", "e")).await, PushOutcome::Delivered);
    let refused = second.push(&push("b", "e")).await;
    assert_eq!(refused.label(), "retryable", "{refused:?}");
    assert_eq!(
        apple.stats()["errors"]["TooManyProviderTokenUpdates"],
        1,
        "{}",
        apple.stats()
    );

    // A clock two hours behind Apple's: every token it signs is expired, and one too young to
    // replace is not replaced: the key's settings are reported instead.
    let stale = apple.pusher(apple.transport(1, TestClock::offset(-2 * 3600)));
    let outcome = stale.push(&push("c", "e")).await;
    assert!(
        matches!(&outcome, PushOutcome::CredentialsRejected { setting, .. } if setting.contains("APNS_KEY_ID")),
        "{outcome:?}"
    );
    assert_eq!(apple.stats()["errors"]["ExpiredProviderToken"], 1);
}

#[tokio::test]
async fn without_apns_endpoint_the_same_client_is_aimed_at_apples_hosts_with_the_system_roots() {
    let apple = Apple::start(StandInConfig::default()).await;
    let key = apple.key.display().to_string();
    let ca = apple.ca.display().to_string();
    let base = [
        ("APNS_KEY_PATH", key.as_str()),
        ("APNS_KEY_ID", "STANDIN123"),
        ("APNS_TEAM_ID", "TEAM123456"),
        ("APNS_TOPIC", "com.example.talks"),
        ("NOTIFIER_SEND_MODE", "live"),
    ];
    let built = |extra: &[(&str, &str)]| {
        let vars: Vec<_> = base.iter().chain(extra).copied().collect();
        let settings = settings_with(&vars);
        notifier::apns_transport(&settings, &settings.apns, 4).expect("builds, dials nothing")
    };
    let system_roots = Some(&Trust {
        platform_roots: true,
        extra_roots: 0,
    });

    let production = built(&[]);
    let client = production.client();
    assert_eq!((client.host(), client.port()), ("api.push.apple.com", 443));
    assert_eq!(client.trust(), system_roots);
    assert_eq!(client.connections(), 4);
    assert_eq!(client.idle_close(), Duration::from_secs(240));
    assert!(client.proxy().is_none());
    assert_eq!(
        client.uri("/3/device/abc").unwrap().to_string(),
        "https://api.push.apple.com/3/device/abc"
    );

    let sandbox = built(&[("APNS_SANDBOX", "true")]);
    assert_eq!(
        (sandbox.client().host(), sandbox.client().port()),
        ("api.sandbox.push.apple.com", 443)
    );
    assert_eq!(sandbox.client().trust(), system_roots);

    // The same knobs as FCM's: an extra CA on top of the system roots, and the proxy.
    let behind_proxy = built(&[
        ("NOTIFIER_EXTRA_CA_FILE", ca.as_str()),
        ("HTTPS_PROXY", "http://proxy.internal:3128"),
    ]);
    let client = behind_proxy.client();
    assert_eq!(
        client.trust(),
        Some(&Trust {
            platform_roots: true,
            extra_roots: 1
        })
    );
    assert_eq!(
        client.proxy().map(|p| p.address()).as_deref(),
        Some("proxy.internal:3128")
    );
    assert_eq!(client.host(), "api.push.apple.com");
}

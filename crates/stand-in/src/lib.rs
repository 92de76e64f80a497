//! A stand-in for FCM HTTP v1 and Google's OAuth2 token endpoint, on loopback: for load-testing
//! staging without Google, for the benchmark, and for the tests.
//!
//! It serves HTTP/2 over TLS (with a CA it generates and writes to a file) and HTTP/1.1 or h2c on
//! a plain port, checks requests the way FCM does, answers with FCM's real error bodies, and
//! counts what it received (`GET /stats`). Tokens choose failures: a token containing
//! `unregistered` gets 404 UNREGISTERED, `mismatch` 403 SENDER_ID_MISMATCH, `invalid` 400
//! INVALID_ARGUMENT, `thirdpartyauth` 401 THIRD_PARTY_AUTH_ERROR, `flaky` one 503 then success,
//! `quota` one 429 QUOTA_EXCEEDED then success, `down` 503 every time.
//!
//! It also stands in for APNs (`POST /3/device/{token}`, reached through `APNS_ENDPOINT`): it makes
//! a signing key (`apns-key.p8`), verifies the ES256 provider tokens made with it, checks Apple's
//! headers and the 4096-byte limit, and answers with Apple's reasons: a token containing
//! `unregistered` gets 410 Unregistered with a timestamp, `bad` 400 BadDeviceToken, `flaky` one
//! 503 then success, `down` 503 every time. Like Apple, it refuses provider tokens older than an
//! hour and a connection's token changing within 20 minutes, and it can start connections with a
//! low stream limit raised after the first answer, or send GOAWAY mid-burst (`conn`, `frames`).
//!
//! With a per-project quota (`fcm_quota_per_minute`), FCM sends past it in a sliding minute get
//! 429 QUOTA_EXCEEDED. A run can change it under load: `POST /outage?on=true` answers every send
//! 503, `POST /latency?ms=N` sets the delay before each answer; with `count_tokens`,
//! `GET /stats/tokens` says how often each token was reached.
//!
//! And it is a Web Push service with the browsers behind it (`webpush`, `webpush_vapid`): it
//! mints subscriptions ([`StandIn::webpush_subscribe`], `POST /webpush/subscriptions`) whose
//! endpoints are its own TLS port (`/wp/{id}`), verifies each push's VAPID token and decrypts its
//! body as the browser would; ids containing `gone` get 410, `toolarge` 413, `flaky` one 503.
//!
//! Modules: `tls` (the listeners), `conn` and `frames` (a connection's state and its rewritten
//! frames), `oauth` (the token endpoint), `fcm`, `faults` and `quota` (FCM, the failures tokens
//! ask for, and the project's quota), `apns`, `webpush` and `webpush_vapid`, and `counters` (what
//! `GET /stats` reports), and `routes` (the URL map and the endpoints a run steers it with). It is
//! a crate of its own so that the notifier's product binary carries none of it (least of all the
//! service-account key below): the notifier's tests use it as a dev-dependency.

/// About the length of Google's access tokens for a service account (it documents up to 2,048
/// bytes).
pub const GOOGLE_TOKEN_BYTES: usize = 1024;

mod apns;
mod conn;
mod counters;
mod faults;
mod fcm;
mod frames;
mod oauth;
mod quota;
mod routes;
mod tls;
mod webpush;
mod webpush_vapid;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use counters::Counters;
pub use webpush::{WebPushMessage, WebPushSubscription};

/// The service-account key the stand-in's token endpoint accepts. It is a throwaway key made for
/// the stand-in; it grants nothing anywhere else.
pub const SERVICE_ACCOUNT_KEY: &str = include_str!("service_account_key.pem");

/// Makes ring the process's TLS crypto provider. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, Clone)]
pub struct StandInConfig {
    pub tls_addr: SocketAddr,
    pub plain_addr: SocketAddr,
    /// The Firebase project it answers for.
    pub project: String,
    /// Added before every FCM answer.
    pub latency: Duration,
    /// SETTINGS_MAX_CONCURRENT_STREAMS per HTTP/2 connection (Google's front ends say 100).
    pub max_streams: u32,
    /// Keep every delivered message for inspection (tests); off for load.
    pub record: bool,
    /// Count deliveries per token (`GET /stats/tokens`): which tokens a run reached and how
    /// often, for a check of every token (`bench/chaos.py`); off for load, where the map would
    /// hold every token.
    pub count_tokens: bool,
    /// Host names the TLS certificate is valid for, besides localhost and 127.0.0.1 (a compose
    /// service name, say).
    pub host_names: Vec<String>,
    /// Take any bearer token, FCM's or APNs' (for load generators such as h2load); off, only
    /// issued FCM tokens and valid, Apple-rule-abiding APNs provider tokens pass.
    pub accept_any_token: bool,
    /// How long the access tokens the OAuth endpoint issues are, at the least: the binary's
    /// default is [`GOOGLE_TOKEN_BYTES`], so that a benchmark pays what sending Google's costs;
    /// the library's is 0 (a token as short as its name), which keeps the tests' debug-built
    /// stand-in quick.
    pub access_token_bytes: usize,
    /// FCM sends accepted per sliding minute for the project, like Google's per-project quota;
    /// past it, 429 QUOTA_EXCEEDED. 0: no quota.
    pub fcm_quota_per_minute: u64,
    /// The quota's sliding window: a minute, as Google counts; tests shorten it (the count stays
    /// `fcm_quota_per_minute` per window).
    pub fcm_quota_window: Duration,
    /// APNs-like start: each connection advertises this many streams until its first request is
    /// answered, then `max_streams` (APNs allows one until a request with a valid token).
    pub initial_streams: Option<u32>,
    /// Each connection sends a GOAWAY (reason Shutdown) after this many requests: streams read
    /// by then are answered, later ones are dropped unprocessed, and the connection closes.
    pub goaway_after: Option<u64>,
    /// APNs: a connection refuses a new provider token within this long of its last token
    /// change (429 TooManyProviderTokenUpdates); tokens older than an hour are refused too
    /// (403 ExpiredProviderToken). Both judged by the stand-in's clock (see
    /// [`StandIn::advance_clock`]).
    pub token_update_window: Duration,
    /// What each FCM or APNs send costs the stand-in: a provider's front end's work (the
    /// default), or none (`--light`).
    pub work: RequestWork,
}

/// How much of a send request the stand-in reads before it answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RequestWork {
    /// What a provider's front end must do per request: parse the JSON body and check it as the
    /// provider does (for FCM the `message.token` among the rest; for APNs the payload, with the
    /// device token from the path), then record the delivery, counted by token and collapse key
    /// (`duplicates`, `unique_delivered`). The benchmark's default, and the tests'.
    #[default]
    Realistic,
    /// Answer every send with success as soon as it has arrived, its body unread: no parsing, no
    /// checks, no injected failures and no per-token record (only `requests`, `delivered` and
    /// the delivery times are counted). It leaves the client more of a shared machine, so it
    /// measures the client's own cost against the least a server can do.
    Light,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self {
            tls_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            plain_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            project: "stand-in-project".into(),
            latency: Duration::ZERO,
            max_streams: 100,
            record: false,
            count_tokens: false,
            host_names: Vec::new(),
            accept_any_token: false,
            access_token_bytes: 0,
            fcm_quota_per_minute: 0,
            fcm_quota_window: Duration::from_secs(60),
            initial_streams: None,
            goaway_after: None,
            token_update_window: Duration::from_secs(20 * 60),
            work: RequestWork::default(),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) config: StandInConfig,
    /// The APNs signing key, PKCS#8 PEM, and its public key for verifying provider tokens.
    pub(crate) apns_key_pem: String,
    pub(crate) apns_public_key: Vec<u8>,
    /// Provider tokens already verified: like Apple, check a token once, not on every request.
    pub(crate) apns_verified: Mutex<HashSet<String>>,
    pub(crate) counters: Arc<Counters>,
    /// While set, every send gets 503 (a provider outage).
    pub(crate) outage: AtomicBool,
    /// Added before every answer, in ms: the configured latency until `POST /latency` changes it.
    pub(crate) latency_ms: AtomicU64,
    pub(crate) fcm_quota: quota::Quota,
    /// Seconds added to the system clock when judging APNs provider tokens and VAPID tokens.
    pub(crate) clock_offset: AtomicU64,
    /// The Web Push service's subscriptions and what arrived for them.
    pub(crate) webpush: webpush::WebPushState,
    /// Its TLS port, for the endpoints it mints (known once the listener is bound).
    pub(crate) tls_port: u16,
}

impl Shared {
    /// The stand-in's time, in seconds since the Unix epoch.
    pub(crate) fn unix_now(&self) -> u64 {
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        system + self.clock_offset.load(Ordering::Relaxed)
    }

    /// `https://<host>:<tls port>`: the origin of the Web Push endpoints it mints, by its first
    /// host name (`localhost` unless configured), which its certificate covers.
    pub(crate) fn webpush_origin(&self) -> String {
        let host = self
            .config
            .host_names
            .first()
            .map_or("localhost", String::as_str);
        format!("https://{host}:{}", self.tls_port)
    }
}

/// A running stand-in.
pub struct StandIn {
    pub tls_addr: SocketAddr,
    pub plain_addr: SocketAddr,
    /// The CA that signed its TLS certificate, in PEM.
    pub ca_pem: String,
    pub counters: Arc<Counters>,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl StandIn {
    pub async fn start(config: StandInConfig) -> anyhow::Result<Self> {
        install_crypto_provider();
        let (ca_pem, tls_config) = tls::tls_config(&config.host_names)?;
        let tls_listener = TcpListener::bind(config.tls_addr).await?;
        let plain_listener = TcpListener::bind(config.plain_addr).await?;
        let counters = Arc::new(Counters::default());
        let apns_key = rcgen::KeyPair::generate()?;
        let shared = Arc::new(Shared {
            apns_key_pem: apns_key.serialize_pem(),
            apns_public_key: apns_key.public_key_raw().to_vec(),
            apns_verified: Mutex::new(HashSet::new()),
            config: config.clone(),
            counters: Arc::clone(&counters),
            outage: AtomicBool::new(false),
            latency_ms: AtomicU64::new(config.latency.as_millis() as u64),
            fcm_quota: quota::Quota::new(config.fcm_quota_per_minute, config.fcm_quota_window),
            clock_offset: AtomicU64::new(0),
            webpush: webpush::WebPushState::default(),
            tls_port: tls_listener.local_addr()?.port(),
        });
        let app = routes::router(Arc::clone(&shared));
        let stop = CancellationToken::new();
        let stand_in = Self {
            tls_addr: tls_listener.local_addr()?,
            plain_addr: plain_listener.local_addr()?,
            ca_pem,
            counters,
            shared,
            stop: stop.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
        tokio::spawn(tls::serve(
            tls_listener,
            Some(acceptor),
            app.clone(),
            Arc::clone(&stand_in.shared),
            stop.clone(),
        ));
        tokio::spawn(tls::serve(
            plain_listener,
            None,
            app,
            Arc::clone(&stand_in.shared),
            stop,
        ));
        Ok(stand_in)
    }

    /// The FCM base URL over TLS (use with the CA), by host name so the certificate matches.
    pub fn tls_endpoint(&self) -> String {
        format!("https://localhost:{}", self.tls_addr.port())
    }

    pub fn plain_endpoint(&self) -> String {
        format!("http://{}", self.plain_addr)
    }

    /// A service-account JSON whose `token_uri` is this stand-in's token endpoint.
    pub fn service_account_json(&self) -> String {
        service_account_json(&self.plain_endpoint(), &self.shared.config.project)
    }

    /// Writes `ca.pem` and `service-account.json` into `dir`; returns their paths.
    pub fn write_files(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        self.write_files_for(dir, &self.plain_endpoint())
    }

    /// The same, with the token endpoint reached at `plain_base` (`http://stand-in:8080` from
    /// another container).
    pub fn write_files_for(
        &self,
        dir: &Path,
        plain_base: &str,
    ) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let ca = dir.join("ca.pem");
        let account = dir.join("service-account.json");
        std::fs::write(&ca, &self.ca_pem)?;
        std::fs::write(
            &account,
            service_account_json(plain_base, &self.shared.config.project),
        )?;
        std::fs::write(dir.join("apns-key.p8"), &self.shared.apns_key_pem)?;
        Ok((ca, account))
    }

    /// A new Web Push subscription, as a browser would make it for a site: `id` names its
    /// endpoint (`…/wp/{id}`; empty: a random one) and chooses failures; with
    /// `application_server_key` (the VAPID public key, 65 bytes) only tokens with that `k=` pass.
    pub fn webpush_subscribe(
        &self,
        id: &str,
        application_server_key: Option<&[u8]>,
    ) -> WebPushSubscription {
        let origin = self.shared.webpush_origin();
        self.shared
            .webpush
            .subscribe(&origin, id, application_server_key.map(<[u8]>::to_vec))
    }

    /// The pushes subscription `id` received and decrypted, oldest first (recorded only with
    /// `record`).
    pub fn webpush_messages(&self, id: &str) -> Vec<WebPushMessage> {
        self.shared.webpush.messages(id)
    }

    /// Makes every send fail with 503 (true) or answer normally again (false).
    pub fn set_outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::Relaxed);
    }

    /// Changes the latency added before every answer from now on (a provider slowing down).
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// Moves the stand-in's clock (used for APNs provider tokens only) forward by `by`, so a
    /// test can live through hours of Apple's token rules in seconds.
    pub fn advance_clock(&self, by: Duration) {
        self.shared
            .clock_offset
            .fetch_add(by.as_secs(), Ordering::Relaxed);
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn service_account_json(base: &str, project: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": "stand-in",
        "private_key": SERVICE_ACCOUNT_KEY,
        "client_email": format!("notifier@{project}.iam.gserviceaccount.com"),
        "client_id": "1",
        "auth_uri": format!("{base}/auth"),
        "token_uri": format!("{base}/token"),
    })
    .to_string()
}

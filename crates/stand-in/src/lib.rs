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
//! 503 then success, `down` 503 every time.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The service-account key the stand-in's token endpoint accepts. It is a throwaway key made for
/// the stand-in; it grants nothing anywhere else.
pub const SERVICE_ACCOUNT_KEY: &str = include_str!("service_account_key.pem");
const FCM_LIMIT: usize = 4096;

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
    /// Host names the TLS certificate is valid for, besides localhost and 127.0.0.1 (a compose
    /// service name, say).
    pub host_names: Vec<String>,
    /// Take any bearer token (for load generators such as h2load); off, only issued ones pass.
    pub accept_any_token: bool,
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
            host_names: Vec::new(),
            accept_any_token: false,
        }
    }
}

/// What the stand-in has seen.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub delivered: AtomicU64,
    pub validated: AtomicU64,
    /// Deliveries of a message (token + collapse key) already delivered once.
    pub duplicates: AtomicU64,
    pub token_requests: AtomicU64,
    /// When the first and the last message were delivered, in ms since the epoch (0: none yet).
    pub first_delivered_ms: AtomicU64,
    pub last_delivered_ms: AtomicU64,
    pub tls_connections: AtomicU64,
    pub plain_connections: AtomicU64,
    /// Sends being answered now (FCM and APNs), and the most there ever were at once.
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub errors: Mutex<HashMap<String, u64>>,
    /// Delivery count per message, by hash of token and collapse key.
    seen: Mutex<HashMap<u64, u32>>,
    /// Tokens that already had their one injected failure.
    failed_once: Mutex<HashSet<String>>,
    issued: Mutex<HashSet<String>>,
    /// Delivered messages, when recording.
    pub messages: Mutex<Vec<Value>>,
}

impl Counters {
    pub fn snapshot(&self) -> Value {
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let unique = self.seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "delivered": self.delivered.load(Ordering::Relaxed),
            "validated": self.validated.load(Ordering::Relaxed),
            "unique_delivered": unique,
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "errors": errors,
            "token_requests": self.token_requests.load(Ordering::Relaxed),
            "first_delivered_ms": self.first_delivered_ms.load(Ordering::Relaxed),
            "last_delivered_ms": self.last_delivered_ms.load(Ordering::Relaxed),
            "connections": {
                "tls": self.tls_connections.load(Ordering::Relaxed),
                "plain": self.plain_connections.load(Ordering::Relaxed),
            },
            "max_in_flight": self.max_in_flight.load(Ordering::Relaxed),
        })
    }

    /// How many times a message with this token and collapse key was delivered.
    pub fn deliveries(&self, token: &str, collapse_key: &str) -> u32 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&message_key(token, collapse_key))
            .copied()
            .unwrap_or(0)
    }

    fn error(&self, code: &str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code.to_string())
            .or_default() += 1;
    }

    fn reset(&self) {
        for c in [
            &self.requests,
            &self.delivered,
            &self.validated,
            &self.duplicates,
            &self.token_requests,
            &self.first_delivered_ms,
            &self.last_delivered_ms,
            &self.tls_connections,
            &self.plain_connections,
            &self.max_in_flight,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.failed_once
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

fn message_key(token: &str, collapse_key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    collapse_key.hash(&mut h);
    h.finish()
}

struct Shared {
    config: StandInConfig,
    /// The APNs signing key, PKCS#8 PEM, and its public key for verifying provider tokens.
    apns_key_pem: String,
    apns_public_key: Vec<u8>,
    /// Provider tokens already verified: like Apple, check a token once, not on every request.
    apns_verified: Mutex<HashSet<String>>,
    counters: Arc<Counters>,
    /// While set, every send gets 503 (a provider outage).
    outage: AtomicBool,
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
        crate::install_crypto_provider();
        let (ca_pem, tls_config) = tls_config(&config.host_names)?;
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
        });
        let app = router(Arc::clone(&shared));
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
        tokio::spawn(serve(
            tls_listener,
            Some(acceptor),
            app.clone(),
            config.max_streams,
            Arc::clone(&stand_in.counters),
            stop.clone(),
        ));
        tokio::spawn(serve(
            plain_listener,
            None,
            app,
            config.max_streams,
            Arc::clone(&stand_in.counters),
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

    /// Makes every send fail with 503 (true) or answer normally again (false).
    pub fn set_outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::Relaxed);
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

fn tls_config(host_names: &[String]) -> anyhow::Result<(String, rustls::ServerConfig)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "notifier stand-in CA");
    let ca_key = KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(host_names.iter().cloned());
    let leaf = CertificateParams::new(names)?.signed_by(&leaf_key, &ca)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((ca.pem(), config))
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    max_streams: u32,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let (app, tls, stop) = (app.clone(), tls.clone(), stop.clone());
        match &tls {
            Some(_) => counters.tls_connections.fetch_add(1, Ordering::Relaxed),
            None => counters.plain_connections.fetch_add(1, Ordering::Relaxed),
        };
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app);
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(max_streams);
            let served = async {
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = served => {}
            }
        });
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/v1/projects/{project}/messages:send", post(send))
        .route("/3/device/{token}", post(apns_send))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset))
        .route("/outage", post(outage))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.counters.snapshot())
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.counters.reset();
    StatusCode::NO_CONTENT
}

/// `POST /outage?on=true|false`: every send fails with 503 while on.
async fn outage(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> StatusCode {
    let on = q.get("on").is_some_and(|v| v == "true");
    shared.outage.store(on, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

/// The OAuth2 JWT-bearer grant, as Google's token endpoint answers it.
async fn token(State(shared): State<Arc<Shared>>, body: String) -> Response {
    shared
        .counters
        .token_requests
        .fetch_add(1, Ordering::Relaxed);
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let grant_ok = form.get("grant_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:grant-type:jwt-bearer");
    let scope_ok = form
        .get("assertion")
        .and_then(|jwt| jwt_claims(jwt))
        .and_then(|claims| {
            claims["scope"]
                .as_str()
                .map(|s| s.contains("firebase.messaging"))
        })
        .unwrap_or(false);
    if !grant_ok || !scope_ok {
        let body =
            json!({"error": "invalid_grant", "error_description": "Invalid JWT grant or scope."});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let n = shared.counters.token_requests.load(Ordering::Relaxed);
    let access_token = format!("ya29.stand-in-{n}-{}", fastrand::u64(..));
    shared
        .counters
        .issued
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(access_token.clone());
    Json(json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

fn apns_error(status: StatusCode, reason: &'static str, timestamp: Option<u64>) -> Response {
    let body = match timestamp {
        Some(ms) => json!({"reason": reason, "timestamp": ms}),
        None => json!({"reason": reason}),
    };
    tagged((status, Json(body)).into_response(), reason)
}

/// Whether `authorization: bearer <jwt>` is an ES256 token signed with the stand-in's APNs key.
fn apns_token_ok(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(jwt) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
    else {
        return false;
    };
    if shared
        .apns_verified
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(jwt)
    {
        return true;
    }
    let Some((signed, signature)) = jwt.rsplit_once('.') else {
        return false;
    };
    let Some(signature) = base64url_decode(signature) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        &shared.apns_public_key,
    )
    .verify(signed.as_bytes(), &signature)
    .is_ok_and(|()| {
        shared
            .apns_verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(jwt.to_string());
        true
    })
}

/// APNs `POST /3/device/{token}`, as Apple answers it.
async fn apns_send(
    State(shared): State<Arc<Shared>>,
    UrlPath(token): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    counted(&shared, || apns_answer(&shared, &token, &headers, &body)).await
}

fn apns_answer(shared: &Shared, token: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let c = &shared.counters;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !apns_token_ok(shared, headers) {
        return apns_error(StatusCode::FORBIDDEN, "InvalidProviderToken", None);
    }
    if header("apns-topic").is_none_or(str::is_empty) {
        return apns_error(StatusCode::BAD_REQUEST, "MissingTopic", None);
    }
    if header("apns-push-type") != Some("alert") {
        return apns_error(StatusCode::BAD_REQUEST, "InvalidPushType", None);
    }
    if header("apns-collapse-id").is_some_and(|id| id.len() > 64) {
        return apns_error(StatusCode::BAD_REQUEST, "BadCollapseId", None);
    }
    if body.len() > FCM_LIMIT {
        return apns_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", None);
    }
    if !serde_json::from_slice::<Value>(body).is_ok_and(|v| v["aps"].is_object()) {
        return apns_error(StatusCode::BAD_REQUEST, "PayloadEmpty", None);
    }
    let once = |kind: &str| {
        c.failed_once
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("apns-{kind}:{token}"))
    };
    if token.contains("unregistered") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        return apns_error(StatusCode::GONE, "Unregistered", Some(now));
    }
    if token.contains("bad") {
        return apns_error(StatusCode::BAD_REQUEST, "BadDeviceToken", None);
    }
    if token.contains("down") || (token.contains("flaky") && once("flaky")) {
        return apns_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", None);
    }
    let collapse = header("apns-collapse-id").unwrap_or_default();
    record_delivery(shared, token, collapse, None);
    let mut response = StatusCode::OK.into_response();
    if let Ok(id) = format!("{:032x}", fastrand::u128(..)).parse() {
        response.headers_mut().insert("apns-id", id);
    }
    response
}

/// Decodes `application/x-www-form-urlencoded` text.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The claims of a JWT, unverified: the stand-in checks shape and scope, not Google's signature.
fn jwt_claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    serde_json::from_slice(&bytes).ok()
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn fcm_error(status: StatusCode, grpc: &str, code: Option<&str>, message: &str) -> Response {
    let details = code.map_or_else(
        || json!([]),
        |c| json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}]),
    );
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": grpc, "details": details}});
    (status, Json(body)).into_response()
}

fn with_retry_after(mut response: Response, secs: u64) -> Response {
    if let Ok(v) = secs.to_string().parse() {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    response
}

async fn send(
    State(shared): State<Arc<Shared>>,
    UrlPath(project): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    counted(&shared, || answer(&shared, &project, &headers, &body)).await
}

/// Counts a request, waits the configured latency, answers, and tallies an error by its code.
async fn counted(shared: &Shared, answer: impl FnOnce() -> Response) -> Response {
    let c = &shared.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    c.max_in_flight.fetch_max(now, Ordering::Relaxed);
    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }
    c.in_flight.fetch_sub(1, Ordering::Relaxed);
    let response = answer();
    if !response.status().is_success() {
        let code = response.extensions().get::<ErrorCode>().map_or_else(
            || response.status().as_str().to_string(),
            |e| e.0.to_string(),
        );
        c.error(&code);
    }
    response
}

#[derive(Clone)]
struct ErrorCode(&'static str);

fn tagged(mut response: Response, code: &'static str) -> Response {
    response.extensions_mut().insert(ErrorCode(code));
    response
}

fn answer(shared: &Shared, project: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let c = &shared.counters;
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorised = bearer.is_some_and(|t| {
        shared.config.accept_any_token
            || c.issued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(t)
    });
    if !authorised {
        return tagged(
            fcm_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                None,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            ),
            "UNAUTHENTICATED",
        );
    }
    if project != shared.config.project {
        return tagged(
            fcm_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                None,
                &format!(
                    "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}'"
                ),
            ),
            "PERMISSION_DENIED",
        );
    }
    let (message, validate_only) = match check_request(body) {
        Ok(parsed) => parsed,
        Err(why) => {
            return tagged(
                fcm_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    Some("INVALID_ARGUMENT"),
                    &why,
                ),
                "INVALID_ARGUMENT",
            );
        }
    };
    if shared.outage.load(Ordering::Relaxed) {
        return tagged(
            with_retry_after(
                fcm_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    Some("UNAVAILABLE"),
                    "The service is currently unavailable.",
                ),
                1,
            ),
            "UNAVAILABLE",
        );
    }
    let token = message["token"].as_str().unwrap_or_default();
    if let Some(failure) = injected(c, token) {
        return failure;
    }
    if validate_only {
        c.validated.fetch_add(1, Ordering::Relaxed);
    } else {
        let collapse = message["android"]["collapse_key"]
            .as_str()
            .unwrap_or_default();
        record_delivery(shared, token, collapse, Some(&message));
    }
    let n = c.requests.load(Ordering::Relaxed);
    Json(json!({"name": format!("projects/{project}/messages/0:{n}")})).into_response()
}

/// Counts a delivered message (and keeps it, when recording).
fn record_delivery(shared: &Shared, token: &str, collapse: &str, message: Option<&Value>) {
    let c = &shared.counters;
    c.delivered.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let _ = c
        .first_delivered_ms
        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    c.last_delivered_ms.fetch_max(now, Ordering::Relaxed);
    let mut seen = c.seen.lock().unwrap_or_else(|e| e.into_inner());
    let count = seen.entry(message_key(token, collapse)).or_default();
    *count += 1;
    if *count > 1 {
        c.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    drop(seen);
    if let (true, Some(message)) = (shared.config.record, message) {
        c.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.clone());
    }
}

/// An FCM failure a token can ask for: (token pattern, once only, status, google.rpc status,
/// FCM error code, message, Retry-After).
type Injected = (
    &'static str,
    bool,
    StatusCode,
    &'static str,
    &'static str,
    &'static str,
    Option<u64>,
);

const INJECTED: &[Injected] = &[
    (
        "unregistered",
        false,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "UNREGISTERED",
        "Requested entity was not found.",
        None,
    ),
    (
        "mismatch",
        false,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "SENDER_ID_MISMATCH",
        "SenderId mismatch",
        None,
    ),
    (
        "invalid",
        false,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
        None,
    ),
    (
        "thirdpartyauth",
        false,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "THIRD_PARTY_AUTH_ERROR",
        "Auth error from APNS or Web Push Service",
        None,
    ),
    (
        "down",
        false,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "UNAVAILABLE",
        "The service is currently unavailable.",
        Some(1),
    ),
    (
        "flaky",
        true,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "UNAVAILABLE",
        "The service is currently unavailable.",
        Some(1),
    ),
    (
        "quota",
        true,
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
        "QUOTA_EXCEEDED",
        "Quota exceeded for quota metric 'Send requests'.",
        Some(1),
    ),
];

/// The failure a token asks for, if any.
fn injected(c: &Counters, token: &str) -> Option<Response> {
    let (_, _, status, grpc, code, message, retry_after) =
        INJECTED.iter().copied().find(|(pattern, once, ..)| {
            token.contains(pattern)
                && (!once
                    || c.failed_once
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(format!("{pattern}:{token}")))
        })?;
    let response = fcm_error(status, grpc, Some(code), message);
    let response = match retry_after {
        Some(secs) => with_retry_after(response, secs),
        None => response,
    };
    Some(tagged(response, code))
}

/// Checks a send request as FCM does; returns the message and `validate_only`.
fn check_request(body: &[u8]) -> Result<(Value, bool), String> {
    const MESSAGE_FIELDS: &[&str] = &[
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "token",
        "topic",
        "condition",
    ];
    let request: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON payload received. {e}"))?;
    let Some(object) = request.as_object() else {
        return Err("Invalid JSON payload received. Expected an object.".into());
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| *k != "message" && *k != "validate_only")
    {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
        ));
    }
    let validate_only = match object.get("validate_only") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("Invalid value at 'validate_only' (TYPE_BOOL)".into()),
    };
    let message = object
        .get("message")
        .ok_or("Request contains an invalid argument: message is required.")?;
    let fields = message.as_object().ok_or("Invalid value at 'message'")?;
    if let Some(unknown) = fields
        .keys()
        .find(|k| !MESSAGE_FIELDS.contains(&k.as_str()))
    {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" at 'message': Cannot find field."
        ));
    }
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|t| fields.contains_key(**t))
        .count();
    if targets != 1 {
        return Err("Exactly one of token, topic or condition must be set.".into());
    }
    let token = fields
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err("The registration token is not a valid FCM registration token".into());
    }
    if let Some(data) = fields.get("data") {
        let data = data.as_object().ok_or("Invalid value at 'message.data'")?;
        if let Some((k, _)) = data.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!(
                "Invalid value at 'message.data[0].value' (TYPE_STRING), key \"{k}\""
            ));
        }
    }
    if let Some(n) = fields.get("notification") {
        let n = n
            .as_object()
            .ok_or("Invalid value at 'message.notification'")?;
        if n.values().any(|v| !v.is_string()) {
            return Err("Invalid value at 'message.notification' (TYPE_STRING)".into());
        }
    }
    if let Some(android) = fields.get("android") {
        if let Some(ttl) = android.get("ttl") {
            let ok = ttl.as_str().is_some_and(|t| {
                t.strip_suffix('s').is_some_and(|n| {
                    !n.is_empty()
                        && n.parse::<f64>()
                            .is_ok_and(|v| (0.0..=2_419_200.0).contains(&v))
                })
            });
            if !ok {
                return Err("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)".into());
            }
        }
        if let Some(p) = android.get("priority")
            && !matches!(p.as_str(), Some("normal" | "high"))
        {
            return Err("Invalid value at 'message.android.priority'".into());
        }
    }
    let counted = json!({"notification": fields.get("notification"), "data": fields.get("data")});
    let size = serde_json::to_vec(&counted).map(|v| v.len()).unwrap_or(0);
    if size > FCM_LIMIT {
        return Err(format!(
            "Message is too big: {size} bytes of notification and data, over {FCM_LIMIT}."
        ));
    }
    Ok((message.clone(), validate_only))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_as_fcm_checks_them() {
        let ok = br#"{"message":{"token":"t","notification":{"title":"a","body":"b"},"data":{"k":"v"},"android":{"priority":"high","ttl":"86400s"}}}"#;
        assert!(check_request(ok).is_ok());
        let bad: &[&[u8]] = &[
            b"not json",
            br#"{"message":{"token":"t","data":{"k":1}}}"#,
            br#"{"message":{"token":"t","oops":1}}"#,
            br#"{"message":{"data":{}}}"#,
            br#"{"message":{"token":"t","topic":"x"}}"#,
            br#"{"message":{"token":"t","android":{"ttl":"1d"}}}"#,
            br#"{"message":{"token":"t","android":{"priority":"urgent"}}}"#,
            br#"{"msg":{}}"#,
        ];
        for body in bad {
            assert!(
                check_request(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let big = format!(
            r#"{{"message":{{"token":"t","data":{{"k":"{}"}}}}}}"#,
            "x".repeat(5000)
        );
        assert!(
            check_request(big.as_bytes())
                .unwrap_err()
                .contains("too big")
        );
    }

    #[test]
    fn form_values_are_percent_decoded() {
        assert_eq!(
            percent_decode("urn%3Aietf%3Aparams+x%2By%3D"),
            "urn:ietf:params x+y="
        );
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn jwt_claims_are_read_from_base64url() {
        // {"scope":"https://www.googleapis.com/auth/firebase.messaging"}
        let jwt = "e30.eyJzY29wZSI6Imh0dHBzOi8vd3d3Lmdvb2dsZWFwaXMuY29tL2F1dGgvZmlyZWJhc2UubWVzc2FnaW5nIn0.sig";
        assert_eq!(
            jwt_claims(jwt).unwrap()["scope"],
            "https://www.googleapis.com/auth/firebase.messaging"
        );
    }
}

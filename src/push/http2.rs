//! One provider's HTTP/2 connections, used straight through the `h2` crate: a fixed set of
//! connections (shards), each dialled once and shared by every push routed to it, re-dialled on
//! the first push after it fails, closed after a few idle minutes, and kept honest by PINGs.
//!
//! Pushes are small, uniform requests sent by the hundred thousand, and the profile of the first
//! build (reqwest over hyper) showed the generic client's per-request work — URL parsing, the
//! connection pool checkout, a task spawned per request to pipe its body, redirect and timeout
//! layers — costing more CPU than the HTTP/2 framing itself. Here a request is a pre-built header
//! block and one DATA frame written straight into the connection's stream table.
//!
//! Only one task dials a shard at a time and the others wait for its connection, so a burst of
//! pushes before the first connection is up opens one connection per shard, never one per push
//! (Apple treats connection churn as an attack).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Error bodies are short; anything longer is cut.
const MAX_BODY: usize = 16 * 1024;
/// How often an open connection is PINGed; a NAT that dropped it is found before a push is.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A PING unanswered this long closes the connection.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection no push has used for this long is closed (providers close idle ones anyway).
const IDLE_CLOSE: Duration = Duration::from_secs(240);
/// After a failed dial, pushes get the same error at once for this long instead of each dialling.
const DIAL_FAILURE_SHARED_FOR: Duration = Duration::from_secs(1);

/// Why a request got no response. All of these are worth another try: the request may not have
/// reached the provider.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Http2Error {
    #[error("connect: {0}")]
    Connect(String),
    #[error("timeout: no response within {0:?}")]
    Timeout(Duration),
    /// A reset stream, a GOAWAY, a connection lost mid-request.
    #[error("transport: {0}")]
    Transport(String),
}

impl From<h2::Error> for Http2Error {
    fn from(e: h2::Error) -> Self {
        Http2Error::Transport(e.to_string())
    }
}

/// Why a client cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{endpoint} is not an http:// or https:// URL with a host")]
    Endpoint { endpoint: String },
    #[error("cannot read NOTIFIER_EXTRA_CA_FILE {path}: {reason}")]
    ExtraCa { path: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// A response, its body read (up to 16 KiB).
#[derive(Debug)]
pub struct Response {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// The connections to one endpoint.
pub struct Http2Client {
    target: Arc<Target>,
    shards: Box<[Shard]>,
    request_timeout: Duration,
}

/// Where and how to dial.
struct Target {
    host: String,
    port: u16,
    /// `None` for `http://` (HTTP/2 with prior knowledge, stand-ins only).
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The endpoint's own path (a proxy's prefix), without the trailing `/`; usually empty.
    prefix: String,
    connect_timeout: Duration,
}

#[derive(Default)]
struct Shard {
    /// The current connection: read (to clone the handle) by every push, from every worker
    /// thread; written only when a connection is dialled or dropped.
    live: RwLock<Option<Live>>,
    /// Held while dialling, with the last failed dial.
    dialing: tokio::sync::Mutex<Option<(Instant, Http2Error)>>,
}

#[derive(Clone)]
struct Live {
    send: SendRequest<Bytes>,
    /// Set by the connection's task when it ends.
    closed: Arc<AtomicBool>,
    /// Requests started on it, for the idle check.
    used: Arc<AtomicU64>,
}

impl Http2Client {
    /// `connections` shards to `endpoint` (`https://host[:port]` or, for stand-ins, `http://…`),
    /// trusting the platform's roots plus the PEM bundle at `extra_ca`.
    pub fn new(
        endpoint: &str,
        connections: usize,
        extra_ca: Option<&std::path::Path>,
        request_timeout: Duration,
    ) -> Result<Self, SetupError> {
        let bad = || SetupError::Endpoint {
            endpoint: endpoint.to_string(),
        };
        let uri: http::Uri = endpoint.trim_end_matches('/').parse().map_err(|_| bad())?;
        let scheme = uri.scheme().cloned().ok_or_else(bad)?;
        let authority = uri.authority().cloned().ok_or_else(bad)?;
        let tls = match scheme.as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tls = if tls {
            let server_name = ServerName::try_from(host.to_string())
                .map_err(|e| SetupError::Tls(e.to_string()))?;
            Some((tls_connector(extra_ca)?, server_name))
        } else {
            None
        };
        Ok(Self {
            target: Arc::new(Target {
                host: host.to_string(),
                port,
                tls,
                scheme,
                authority,
                prefix: uri.path().trim_end_matches('/').to_string(),
                connect_timeout: Duration::from_secs(5),
            }),
            shards: (0..connections.max(1)).map(|_| Shard::default()).collect(),
            request_timeout,
        })
    }

    /// A URI on this endpoint (after its own path, if it has one), for building requests.
    pub fn uri(&self, path: &str) -> Result<http::Uri, http::Error> {
        let builder = http::Uri::builder()
            .scheme(self.target.scheme.clone())
            .authority(self.target.authority.clone());
        match self.target.prefix.as_str() {
            "" => builder.path_and_query(path),
            prefix => builder.path_and_query(format!("{prefix}{path}")),
        }
        .build()
    }

    /// Sends `request` with `body` on the connection `key` maps to; a given key always goes
    /// through the same connection.
    pub async fn send(
        &self,
        key: u64,
        request: http::Request<()>,
        body: Bytes,
    ) -> Result<Response, Http2Error> {
        let shard = &self.shards[(key % self.shards.len() as u64) as usize];
        tokio::time::timeout(self.request_timeout, self.exchange(shard, request, body))
            .await
            .map_err(|_| Http2Error::Timeout(self.request_timeout))?
    }

    /// Dials every connection not yet up, so the first burst finds them ready.
    pub async fn warm(&self) {
        let all = self.shards.iter().map(|shard| self.connection(shard));
        let _ = tokio::time::timeout(
            self.target.connect_timeout,
            futures_util::future::join_all(all),
        )
        .await;
    }

    async fn exchange(
        &self,
        shard: &Shard,
        request: http::Request<()>,
        body: Bytes,
    ) -> Result<Response, Http2Error> {
        let live = self.connection(shard).await?;
        live.used.fetch_add(1, Ordering::Relaxed);
        let forget = |e: h2::Error| {
            // GOAWAY or a dead connection: the next push dials a fresh one.
            if e.is_go_away() || e.is_io() {
                shard.forget(&live);
            }
            Http2Error::from(e)
        };
        let mut send = live.send.clone().ready().await.map_err(forget)?;
        let (response, mut stream) = send
            .send_request(request, body.is_empty())
            .map_err(forget)?;
        if !body.is_empty() {
            // h2 buffers what the flow-control window does not yet allow; pushes are far below
            // the initial 64 KiB window.
            stream.send_data(body, true)?;
        }
        let (parts, mut recv) = response.await?.into_parts();
        let mut body = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            let room = MAX_BODY.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: body.freeze(),
        })
    }

    /// The shard's connection, dialled if it has none.
    async fn connection(&self, shard: &Shard) -> Result<Live, Http2Error> {
        if let Some(live) = shard.current() {
            return Ok(live);
        }
        // Boxed: the dial's state (TCP, TLS and HTTP/2 handshakes) is kilobytes, and inline it
        // would sit in every push's future, allocated and moved per push (12.7 KiB in all).
        Box::pin(self.dial_once(shard)).await
    }

    /// Dials the shard, one task at a time: the others wait and take its connection.
    async fn dial_once(&self, shard: &Shard) -> Result<Live, Http2Error> {
        let mut last_failure = shard.dialing.lock().await;
        if let Some(live) = shard.current() {
            return Ok(live); // another task dialled while this one waited
        }
        if let Some((at, e)) = &*last_failure
            && at.elapsed() < DIAL_FAILURE_SHARED_FOR
        {
            return Err(e.clone());
        }
        let dialled = tokio::time::timeout(self.target.connect_timeout, dial(&self.target))
            .await
            .unwrap_or_else(|_| {
                Err(Http2Error::Connect(format!(
                    "no connection within {:?}",
                    self.target.connect_timeout
                )))
            });
        match dialled {
            Ok(live) => {
                *last_failure = None;
                *shard.live.write().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
                Ok(live)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }
}

impl Shard {
    fn current(&self) -> Option<Live> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.as_ref()
            .filter(|l| !l.closed.load(Ordering::Relaxed))
            .cloned()
    }

    /// Drops `dead` as the shard's connection, unless another has already replaced it.
    fn forget(&self, dead: &Live) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        if live
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(&l.closed, &dead.closed))
        {
            *live = None;
        }
    }
}

/// Opens one connection: TCP, TLS with ALPN `h2` (refusing a server that will not speak it), the
/// HTTP/2 handshake, then a task that drives it until it fails or idles out.
async fn dial(target: &Target) -> Result<Live, Http2Error> {
    let connect = |e: std::io::Error| Http2Error::Connect(e.to_string());
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(connect)?;
    tcp.set_nodelay(true).map_err(connect)?;
    match &target.tls {
        Some((connector, name)) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(connect)?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(Http2Error::Connect(format!(
                    "{}:{} does not offer HTTP/2 (ALPN h2)",
                    target.host, target.port
                )));
            }
            handshake(tls).await
        }
        None => handshake(tcp).await,
    }
}

async fn handshake<T>(io: T) -> Result<Live, Http2Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| Http2Error::Connect(format!("HTTP/2 handshake: {e}")))?;
    let closed = Arc::new(AtomicBool::new(false));
    let used = Arc::new(AtomicU64::new(0));
    let ping_pong = connection.ping_pong();
    let (task_closed, task_used) = (closed.clone(), used.clone());
    tokio::spawn(async move {
        tokio::select! {
            result = connection => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP/2 connection ended");
                }
            }
            why = keep_alive(ping_pong, task_used) => {
                tracing::debug!(why, "HTTP/2 connection closed");
            }
        }
        task_closed.store(true, Ordering::Relaxed);
    });
    Ok(Live { send, closed, used })
}

/// PINGs every 30 s and returns (closing the connection) when one goes unanswered or no push
/// has used the connection for four minutes.
async fn keep_alive(ping_pong: Option<h2::PingPong>, used: Arc<AtomicU64>) -> &'static str {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    let (mut seen, mut idle_since) = (used.load(Ordering::Relaxed), Instant::now());
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let now_used = used.load(Ordering::Relaxed);
        if now_used != seen {
            (seen, idle_since) = (now_used, Instant::now());
        } else if idle_since.elapsed() >= IDLE_CLOSE {
            return "idle";
        }
        match tokio::time::timeout(PING_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return "PING unanswered",
        }
    }
}

/// TLS 1.2/1.3 with ALPN `h2`, verified against the platform's roots and the extra CA bundle.
fn tls_connector(
    extra_ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, SetupError> {
    let mut extra = Vec::new();
    if let Some(path) = extra_ca {
        let bad = |reason: String| SetupError::ExtraCa {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            extra.push(cert.map_err(|e| bad(e.to_string()))?);
        }
        if extra.is_empty() {
            return Err(bad("no certificate in the file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| SetupError::Tls(e.to_string()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .dangerous() // not dangerous: the platform verifier, with the extra roots
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uris_keep_the_endpoints_host_port_and_path_prefix() {
        let client =
            |endpoint| Http2Client::new(endpoint, 1, None, Duration::from_secs(1)).unwrap();
        let uri = |endpoint| {
            client(endpoint)
                .uri("/v1/projects/p/messages:send")
                .unwrap()
                .to_string()
        };
        assert_eq!(
            uri("https://fcm.googleapis.com"),
            "https://fcm.googleapis.com/v1/projects/p/messages:send"
        );
        assert_eq!(
            uri("https://proxy.internal:8443/fcm/"),
            "https://proxy.internal:8443/fcm/v1/projects/p/messages:send"
        );
        assert_eq!(
            uri("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000/v1/projects/p/messages:send"
        );
        let shards = client("https://[::1]:8443").shards.len();
        assert_eq!(
            (client("https://[::1]:8443").target.host.as_str(), shards),
            ("::1", 1)
        );
    }
}

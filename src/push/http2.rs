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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Error bodies are short; anything longer is cut.
const MAX_BODY: usize = 16 * 1024;
/// Streams one connection carries at once: what Google's and Apple's front ends allow. h2 would
/// otherwise assume no limit until the server's SETTINGS arrive, and a burst written before then
/// would see all but the first 100 streams refused.
const STREAMS_PER_CONNECTION: usize = 100;
/// How often an open connection is PINGed; a NAT that dropped it is found before a push is.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A PING unanswered this long closes the connection.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection no push has used for this long is closed (providers close idle ones anyway).
const IDLE_CLOSE: Duration = Duration::from_secs(240);
/// After a failed dial, pushes get the same error at once for this long instead of each dialling.
const DIAL_FAILURE_SHARED_FOR: Duration = Duration::from_secs(1);
/// The whole dial: every address tried, TLS and the HTTP/2 handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One address's TCP connect, when others remain to try (an IPv6 route that drops packets
/// must not use up the whole dial).
const ADDRESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request got no response. All of these are worth another try.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Http2Error {
    #[error("connect: {0}")]
    Connect(String),
    #[error("timeout: no response within {0:?}")]
    Timeout(Duration),
    /// Certainly not processed by the server: the stream was never sent (the connection had
    /// closed or received GOAWAY) or the server refused it (REFUSED_STREAM).
    #[error("not sent: {0}")]
    Unsent(String),
    /// A reset stream, a connection lost mid-request: the server may have processed it.
    #[error("transport: {0}")]
    Transport(String),
}

/// Why a client cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{endpoint} is not an http:// or https:// URL with a host")]
    Endpoint { endpoint: String },
    #[error("cannot read NOTIFIER_EXTRA_CA_FILE {path}: {reason}")]
    ExtraCa { path: String, reason: String },
    #[error("HTTPS_PROXY is not an http://[user:password@]host:port URL")]
    Proxy,
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

/// An HTTP proxy reached with CONNECT, for `https://` endpoints.
#[derive(Clone)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization`, from the URL's user and password.
    authorization: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        write!(f, "Proxy({}:{})", self.host, self.port)
    }
}

impl Proxy {
    /// The proxy `https_proxy` (`HTTPS_PROXY`) names for `host`, unless `no_proxy` (`NO_PROXY`)
    /// exempts it; as reqwest and curl read them.
    pub fn from_vars(
        https_proxy: Option<&str>,
        no_proxy: Option<&str>,
        host: &str,
    ) -> Result<Option<Proxy>, SetupError> {
        let Some(url) = https_proxy.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let host = host.to_ascii_lowercase();
        let exempt = no_proxy
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .any(|rule| {
                let rule = rule.trim_start_matches('.').to_ascii_lowercase();
                rule == "*"
                    || (!rule.is_empty() && (host == rule || host.ends_with(&format!(".{rule}"))))
            });
        if exempt {
            return Ok(None);
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        if rest.contains("://") {
            return Err(SetupError::Proxy); // https:// or socks proxies are not supported
        }
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((c, a)) => (Some(c), a),
            None => (None, rest),
        };
        let authority: http::uri::Authority = address.parse().map_err(|_| SetupError::Proxy)?;
        let authorization = credentials.map(|c| {
            use base64::Engine;
            let decoded = c
                .split_once(':')
                .map(|(u, p)| format!("{}:{}", percent_decode(u), percent_decode(p)))
                .unwrap_or_else(|| format!("{}:", percent_decode(c)));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(decoded)
            )
        });
        Ok(Some(Proxy {
            host: authority.host().to_string(),
            port: authority.port_u16().unwrap_or(80),
            authorization,
        }))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connections to one endpoint.
pub struct Http2Client {
    target: Arc<Target>,
    shards: Box<[Arc<Shard>]>,
    request_timeout: Duration,
}

/// Where and how to dial.
struct Target {
    host: String,
    port: u16,
    /// `None` for `http://` (HTTP/2 with prior knowledge, stand-ins only).
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    proxy: Option<Proxy>,
    scheme: http::uri::Scheme,
    /// As sent in `:authority`: the default port left out.
    authority: http::uri::Authority,
    /// The endpoint's own path (a proxy's prefix), without the trailing `/`; usually empty.
    prefix: String,
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
    /// One permit per stream the connection may carry. A push waits for one before its stream
    /// exists, so a push that times out waiting never reaches the wire (h2's own queue would
    /// send it later and reset it at once: bursts of those look like a rapid-reset attack).
    streams: Arc<Semaphore>,
    /// Set by the connection's task when it ends.
    closed: Arc<AtomicBool>,
    /// Requests started on it, for the idle check.
    used: Arc<AtomicU64>,
}

impl Http2Client {
    /// `connections` shards to `endpoint` (`https://host[:port]` or, for stand-ins, `http://…`),
    /// trusting the platform's roots plus the PEM bundle at `extra_ca`, directly (see
    /// [`Http2Client::with_proxy`]).
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
        let given = uri.authority().cloned().ok_or_else(bad)?;
        let tls = match scheme.as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let host = given
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let default_port = if tls { 443 } else { 80 };
        let port = given.port_u16().unwrap_or(default_port);
        let authority = if port == default_port {
            given.host().parse().map_err(|_| bad())?
        } else {
            given
        };
        let tls = if tls {
            let server_name =
                ServerName::try_from(host.clone()).map_err(|e| SetupError::Tls(e.to_string()))?;
            Some((tls_connector(extra_ca)?, server_name))
        } else {
            None
        };
        Ok(Self {
            target: Arc::new(Target {
                host,
                port,
                tls,
                proxy: None,
                scheme,
                authority,
                prefix: uri.path().trim_end_matches('/').to_string(),
            }),
            shards: (0..connections.max(1))
                .map(|_| Arc::new(Shard::default()))
                .collect(),
            request_timeout,
        })
    }

    /// Tunnels `https://` connections through `proxy` (HTTP CONNECT); `http://` stand-ins are
    /// always reached directly.
    pub fn with_proxy(mut self, proxy: Option<Proxy>) -> Self {
        if let Some(target) = Arc::get_mut(&mut self.target)
            && target.tls.is_some()
        {
            target.proxy = proxy;
        }
        self
    }

    /// The endpoint's host, as proxies are chosen by it.
    pub fn host(&self) -> &str {
        &self.target.host
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

    /// Sends the request `request` builds, with `body`, on the connection `key` maps to; a given
    /// key always goes through the same connection. A request the server certainly did not
    /// process is built and sent once more at once, on a fresh connection if its own is gone.
    /// (h2 takes the request it sends: building it per attempt spares every push a copy kept
    /// only for that rare second attempt.)
    pub async fn send(
        &self,
        key: u64,
        request: &(dyn Fn() -> http::Request<()> + Sync),
        body: Bytes,
    ) -> Result<Response, Http2Error> {
        let shard = &self.shards[(key % self.shards.len() as u64) as usize];
        let twice = async {
            match self.exchange(shard, request(), body.clone()).await {
                Err(Http2Error::Unsent(_)) => self.exchange(shard, request(), body).await,
                done => done,
            }
        };
        tokio::time::timeout(self.request_timeout, twice)
            .await
            .map_err(|_| Http2Error::Timeout(self.request_timeout))?
    }

    /// Dials every connection not yet up, so the first burst finds them ready.
    pub async fn warm(&self) {
        let all = self.shards.iter().map(|shard| self.connection(shard));
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, futures_util::future::join_all(all)).await;
    }

    async fn exchange(
        &self,
        shard: &Arc<Shard>,
        request: http::Request<()>,
        body: Bytes,
    ) -> Result<Response, Http2Error> {
        let live = self.connection(shard).await?;
        let _stream = live
            .streams
            .acquire()
            .await
            .map_err(|_| Http2Error::Unsent("connection closed".into()))?;
        live.used.fetch_add(1, Ordering::Relaxed);
        // Failing here, the request was never written: the connection is gone or going away,
        // or cannot open another stream. Every case wants a fresh connection.
        let unsent = |e: h2::Error| {
            shard.forget(&live);
            Http2Error::Unsent(e.to_string())
        };
        let mut send = live.send.clone().ready().await.map_err(unsent)?;
        let (response, mut stream) = send
            .send_request(request, body.is_empty())
            .map_err(unsent)?;
        let failed = |e: h2::Error| {
            if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Http2Error::Unsent(e.to_string()); // RFC 9113 §8.7: not processed
            }
            if e.is_go_away() || e.is_io() {
                shard.forget(&live);
            }
            Http2Error::Transport(e.to_string())
        };
        if !body.is_empty() {
            // h2 buffers what the flow-control window does not yet allow; pushes are far below
            // the initial 64 KiB window.
            stream.send_data(body, true).map_err(failed)?;
        }
        let (parts, mut recv) = response.await.map_err(failed)?.into_parts();
        let mut body = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(failed)?;
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
    async fn connection(&self, shard: &Arc<Shard>) -> Result<Live, Http2Error> {
        if let Some(live) = shard.current() {
            return Ok(live);
        }
        // Boxed: the dial's state (TCP, TLS and HTTP/2 handshakes) is kilobytes, and inline it
        // would sit in every push's future, allocated and moved per push (12.7 KiB in all).
        Box::pin(self.dial_once(shard)).await
    }

    /// Dials the shard, one task at a time: the others wait and take its connection.
    async fn dial_once(&self, shard: &Arc<Shard>) -> Result<Live, Http2Error> {
        let mut last_failure = shard.dialing.lock().await;
        if let Some(live) = shard.current() {
            return Ok(live); // another task dialled while this one waited
        }
        if let Some((at, e)) = &*last_failure
            && at.elapsed() < DIAL_FAILURE_SHARED_FOR
        {
            return Err(e.clone());
        }
        let dialled = tokio::time::timeout(CONNECT_TIMEOUT, dial(&self.target, shard))
            .await
            .unwrap_or_else(|_| {
                Err(Http2Error::Connect(format!(
                    "no connection within {CONNECT_TIMEOUT:?}"
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
        self.forget_by(&dead.closed);
    }

    fn forget_by(&self, closed: &Arc<AtomicBool>) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        if live
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(&l.closed, closed))
        {
            *live = None;
        }
    }
}

/// Opens one connection: TCP (through the proxy's tunnel if there is one), TLS with ALPN `h2`
/// (refusing a server that will not speak it), the HTTP/2 handshake, then a task that drives it
/// until it fails or idles out.
async fn dial(target: &Target, shard: &Arc<Shard>) -> Result<Live, Http2Error> {
    let connect = |e: std::io::Error| Http2Error::Connect(e.to_string());
    let tcp = match &target.proxy {
        Some(proxy) => tunnel(proxy, &target.host, target.port).await?,
        None => tcp_connect(&target.host, target.port).await?,
    };
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
            handshake(tls, shard).await
        }
        None => handshake(tcp, shard).await,
    }
}

/// Tries each address the name resolves to in turn, IPv6 and IPv4 alternating, each but the
/// last for at most [`ADDRESS_TIMEOUT`].
async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, Http2Error> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Http2Error::Connect(format!("cannot resolve {host}: {e}")))?
        .collect();
    let (v6, v4): (Vec<_>, Vec<_>) = resolved.into_iter().partition(SocketAddr::is_ipv6);
    let mut addresses = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) => addresses.extend(x.into_iter().chain(y)),
        }
    }
    let mut last = Http2Error::Connect(format!("{host} resolves to no address"));
    for (i, address) in addresses.iter().enumerate() {
        let attempt = TcpStream::connect(address);
        let result = if i + 1 < addresses.len() {
            tokio::time::timeout(ADDRESS_TIMEOUT, attempt)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        } else {
            attempt.await
        };
        match result {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Http2Error::Connect(format!("{address}: {e}")),
        }
    }
    Err(last)
}

/// A TCP stream to `host:port` through the proxy's CONNECT tunnel.
async fn tunnel(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream, Http2Error> {
    let failed =
        |why: String| Http2Error::Connect(format!("proxy {}:{}: {why}", proxy.host, proxy.port));
    let mut tcp = tcp_connect(&proxy.host, proxy.port).await?;
    let target = match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(authorization) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| failed(e.to_string()))?;
    // The answer's head, byte by byte so nothing of the tunnel after it is read.
    let mut answer = Vec::with_capacity(256);
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= 8 * 1024 {
            return Err(failed("an answer head longer than 8 KiB".into()));
        }
        let byte = tcp.read_u8().await.map_err(|e| failed(e.to_string()))?;
        answer.push(byte);
    }
    let status_line = String::from_utf8_lossy(&answer);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(tcp),
        _ => Err(failed(format!("CONNECT refused: {status_line}"))),
    }
}

async fn handshake<T>(io: T, shard: &Arc<Shard>) -> Result<Live, Http2Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_max_send_streams(STREAMS_PER_CONNECTION)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| Http2Error::Connect(format!("HTTP/2 handshake: {e}")))?;
    let live = Live {
        send,
        streams: Arc::new(Semaphore::new(STREAMS_PER_CONNECTION)),
        closed: Arc::new(AtomicBool::new(false)),
        used: Arc::new(AtomicU64::new(0)),
    };
    let ping_pong = connection.ping_pong();
    let (closed, used, shard) = (
        live.closed.clone(),
        live.used.clone(),
        Arc::downgrade(shard),
    );
    tokio::spawn(async move {
        let retire = |shard: &Weak<Shard>| {
            if let Some(shard) = shard.upgrade() {
                shard.forget_by(&closed);
            }
        };
        tokio::select! {
            result = &mut connection => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP/2 connection ended");
                }
            }
            why = keep_alive(ping_pong, used) => match why {
                Idle::Unused => {
                    // Out of the shard, so no new push takes it; h2 closes it with GOAWAY once
                    // the pushes still on it (if any raced the decision) are answered.
                    retire(&shard);
                    let _ = connection.await;
                    tracing::debug!("HTTP/2 connection closed after idling");
                }
                Idle::Unanswered => {
                    tracing::debug!("HTTP/2 connection dropped: PING unanswered");
                }
            },
        }
        retire(&shard);
        closed.store(true, Ordering::Relaxed);
    });
    Ok(live)
}

enum Idle {
    /// No push used it for [`IDLE_CLOSE`].
    Unused,
    /// A PING got no answer within [`PING_TIMEOUT`]: the connection is dead.
    Unanswered,
}

/// PINGs every 30 s; returns when one goes unanswered or no push has used the connection for
/// four minutes.
async fn keep_alive(ping_pong: Option<h2::PingPong>, used: Arc<AtomicU64>) -> Idle {
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
            return Idle::Unused;
        }
        match tokio::time::timeout(PING_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return Idle::Unanswered,
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
        // The default port is left out of :authority, as browsers and curl send it.
        assert_eq!(
            uri("https://fcm.googleapis.com:443/"),
            "https://fcm.googleapis.com/v1/projects/p/messages:send"
        );
        let shards = client("https://[::1]:8443").shards.len();
        assert_eq!(
            (client("https://[::1]:8443").target.host.as_str(), shards),
            ("::1", 1)
        );
    }
}

#[cfg(test)]
mod proxy_tests {
    use super::*;

    fn proxy(https_proxy: &str, no_proxy: &str, host: &str) -> Option<Proxy> {
        Proxy::from_vars(Some(https_proxy), Some(no_proxy), host).unwrap()
    }

    #[test]
    fn https_proxy_is_used_unless_no_proxy_names_the_host_or_a_parent_domain() {
        let p = proxy("http://proxy.internal:3128", "", "fcm.googleapis.com").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.authorization),
            ("proxy.internal", 3128, None)
        );
        assert_eq!(proxy("proxy:8080/", "", "h").unwrap().port, 8080);
        assert_eq!(proxy("http://proxy", "", "h").unwrap().port, 80);
        for no_proxy in [
            "googleapis.com",
            ".googleapis.com",
            "x.org, FCM.googleapis.com",
            "*",
        ] {
            assert!(
                proxy("http://p:1", no_proxy, "fcm.googleapis.com").is_none(),
                "{no_proxy}"
            );
        }
        for no_proxy in ["apis.com", "fcm.googleapis.co", ""] {
            assert!(
                proxy("http://p:1", no_proxy, "fcm.googleapis.com").is_some(),
                "{no_proxy}"
            );
        }
        assert!(Proxy::from_vars(None, None, "h").unwrap().is_none());
        assert!(Proxy::from_vars(Some("  "), None, "h").unwrap().is_none());
    }

    #[test]
    fn proxy_credentials_become_basic_auth_and_never_show_in_debug() {
        let p = proxy("http://us%3Aer:p%40ss@proxy:3128", "", "h").unwrap();
        // base64("us:er:p@ss")
        assert_eq!(p.authorization.as_deref(), Some("Basic dXM6ZXI6cEBzcw=="));
        assert_eq!(format!("{p:?}"), "Proxy(proxy:3128)");
    }

    #[test]
    fn proxies_other_than_http_are_refused() {
        for url in [
            "https://proxy:443",
            "socks5://proxy:1080",
            "http://",
            "http://bad host:1",
        ] {
            assert!(Proxy::from_vars(Some(url), None, "h").is_err(), "{url}");
        }
    }
}

//! Opening one connection and keeping it: TCP (each address in turn, or through the proxy's
//! CONNECT tunnel), TLS with ALPN `h2`, the HTTP/2 handshake up to the server's SETTINGS, and the
//! task that drives the connection, PINGs it and closes it when idle. What may change here: the
//! timings below, and how a dial fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::proxy::Proxy;
use crate::shard::{Live, STREAMS_PER_CONNECTION, Shard};
use crate::tls::Connector;
use crate::unvectored::Unvectored;

/// How often an open connection is PINGed; a NAT that dropped it is found before a request is.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A PING unanswered this long closes the connection.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection no request has used for this long is closed (providers close idle ones anyway),
/// unless the client says otherwise.
pub(crate) const IDLE_CLOSE: Duration = Duration::from_secs(240);
/// One address's TCP connect, when others remain to try (an IPv6 route that drops packets
/// must not use up the whole dial).
const ADDRESS_TIMEOUT: Duration = Duration::from_secs(2);
/// A proxy's answer to CONNECT longer than this is refused.
const MAX_PROXY_HEAD: usize = 8 * 1024;

/// Why a connection could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("TCP connect to {address}")]
    Tcp {
        address: SocketAddr,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("to proxy {proxy}")]
    ProxyUnreachable {
        proxy: String,
        #[source]
        source: Box<ConnectError>,
    },
    #[error("talking to proxy {proxy}")]
    ProxyIo {
        proxy: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("proxy {proxy} refused CONNECT: {status_line}")]
    ProxyRefused { proxy: String, status_line: String },
    #[error("proxy {proxy} answered CONNECT with a head longer than 8 KiB")]
    ProxyHeadTooLong { proxy: String },
    #[error("TLS with {host}")]
    Tls {
        host: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{host}:{port} does not offer HTTP/2 (ALPN h2)")]
    NoHttp2 { host: String, port: u16 },
    #[error("HTTP/2 handshake")]
    Handshake(#[source] Arc<h2::Error>),
    #[error("the connection ended before the server's SETTINGS")]
    EndedEarly,
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

/// Where and how to dial.
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `None` for `http://` (HTTP/2 with prior knowledge, stand-ins only).
    pub(crate) tls: Option<(Connector, ServerName<'static>)>,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) scheme: http::uri::Scheme,
    /// As sent in `:authority`: the default port left out.
    pub(crate) authority: http::uri::Authority,
    /// The endpoint's own path (a proxy's prefix), without the trailing `/`; usually empty.
    pub(crate) prefix: String,
    /// A connection unused this long is closed.
    pub(crate) idle_close: Duration,
    /// Requests go to a few fixed paths, so `:path` may enter the HPACK table.
    pub(crate) fixed_paths: bool,
}

/// Opens one connection: TCP (through the proxy's tunnel if there is one), TLS with ALPN `h2`
/// (refusing a server that will not speak it), the HTTP/2 handshake, then a task that drives it
/// until it fails or idles out.
pub(crate) async fn dial(target: &Target, shard: &Arc<Shard>) -> Result<Live, ConnectError> {
    let tcp = match &target.proxy {
        Some(proxy) => tunnel(proxy, &target.host, target.port).await?,
        None => tcp_connect(&target.host, target.port).await?,
    };
    let _ = tcp.set_nodelay(true); // an optimisation only
    match &target.tls {
        Some((connector, name)) => {
            let tls = connector
                .tls
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| ConnectError::Tls {
                    host: target.host.clone(),
                    source: Arc::new(e),
                })?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(ConnectError::NoHttp2 {
                    host: target.host.clone(),
                    port: target.port,
                });
            }
            handshake(tls, target, shard).await
        }
        None => handshake(tcp, target, shard).await,
    }
}

/// Tries each address the name resolves to in turn, IPv6 and IPv4 alternating, each but the
/// last for at most [`ADDRESS_TIMEOUT`].
async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ConnectError::Resolve {
            host: host.to_string(),
            source: Arc::new(e),
        })?
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
    let mut last = ConnectError::NoAddress {
        host: host.to_string(),
    };
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
            Err(e) => {
                last = ConnectError::Tcp {
                    address: *address,
                    source: Arc::new(e),
                }
            }
        }
    }
    Err(last)
}

/// A TCP stream to `host:port` through the proxy's CONNECT tunnel.
async fn tunnel(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let name = || format!("{}:{}", proxy.host, proxy.port);
    let io = |e: std::io::Error| ConnectError::ProxyIo {
        proxy: name(),
        source: Arc::new(e),
    };
    let mut tcp =
        tcp_connect(&proxy.host, proxy.port)
            .await
            .map_err(|e| ConnectError::ProxyUnreachable {
                proxy: name(),
                source: Box::new(e),
            })?;
    let target = match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(authorization) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.map_err(io)?;
    // The answer's head, byte by byte so nothing of the tunnel after it is read.
    let mut answer = Vec::with_capacity(256);
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= MAX_PROXY_HEAD {
            return Err(ConnectError::ProxyHeadTooLong { proxy: name() });
        }
        answer.push(tcp.read_u8().await.map_err(io)?);
    }
    let status_line = String::from_utf8_lossy(&answer);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(tcp),
        _ => Err(ConnectError::ProxyRefused {
            proxy: name(),
            status_line: status_line.to_string(),
        }),
    }
}

/// The HTTP/2 handshake, then a PING round trip before the connection is used: the server's
/// SETTINGS come first on the wire (RFC 9113 §3.4) and h2 applies them before it reads the PING's
/// answer, so the stream limit is the server's, not a guess, from the first request on.
async fn handshake<T>(io: T, target: &Target, shard: &Arc<Shard>) -> Result<Live, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .enable_push(false)
        // Only for a server that sends no SETTINGS_MAX_CONCURRENT_STREAMS (no limit).
        .initial_max_send_streams(STREAMS_PER_CONNECTION)
        .index_path(target.fixed_paths)
        // Small frames copied into one write rather than a write each (see `unvectored`).
        .handshake::<_, Bytes>(Unvectored::new(io))
        .await
        .map_err(|e| ConnectError::Handshake(Arc::new(e)))?;
    let (closed, used) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let (settled_tx, settled) = oneshot::channel();
    tokio::spawn(drive(
        connection,
        target.idle_close,
        settled_tx,
        closed.clone(),
        used.clone(),
        Arc::downgrade(shard),
    ));
    settled.await.unwrap_or(Err(ConnectError::EndedEarly))?;
    Ok(Live::new(send, closed, used))
}

/// Drives the connection until it ends: first until the server has answered a PING (reported
/// on `settled`), then PINGing it every 30 s and closing it once idle for `idle_close`.
async fn drive<T>(
    mut connection: h2::client::Connection<Unvectored<T>, Bytes>,
    idle_close: Duration,
    settled: oneshot::Sender<Result<(), ConnectError>>,
    closed: Arc<AtomicBool>,
    used: Arc<AtomicU64>,
    shard: Weak<Shard>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut ping_pong = connection.ping_pong();
    let first = async {
        match ping_pong.as_mut() {
            Some(p) => p.ping(h2::Ping::opaque()).await.map(drop),
            None => Ok(()),
        }
    };
    let answered = tokio::select! {
        ended = &mut connection => Err(ended.err().map_or(ConnectError::EndedEarly, |e| {
            ConnectError::Handshake(Arc::new(e))
        })),
        pong = first => pong.map_err(|e| ConnectError::Handshake(Arc::new(e))),
    };
    let ok = answered.is_ok();
    let _ = settled.send(answered);
    if ok {
        tokio::select! {
            result = &mut connection => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP/2 connection ended");
                }
            }
            why = keep_alive(ping_pong, used, idle_close) => match why {
                Idle::Unused => {
                    // Out of the shard, so no new request takes it; h2 closes it with GOAWAY
                    // once the requests still on it (if any raced the decision) are answered.
                    retire(&shard, &closed);
                    let _ = connection.await;
                    tracing::debug!("HTTP/2 connection closed after idling");
                }
                Idle::Unanswered => {
                    tracing::debug!("HTTP/2 connection dropped: PING unanswered");
                }
            },
        }
    }
    retire(&shard, &closed);
    closed.store(true, Ordering::Relaxed);
}

fn retire(shard: &Weak<Shard>, closed: &Arc<AtomicBool>) {
    if let Some(shard) = shard.upgrade() {
        shard.forget_by(closed);
    }
}

enum Idle {
    /// No request used it for the idle time.
    Unused,
    /// A PING got no answer within [`PING_TIMEOUT`]: the connection is dead.
    Unanswered,
}

/// PINGs every 30 s; returns when one goes unanswered or no request has used the connection
/// for `idle_close`.
async fn keep_alive(
    ping_pong: Option<h2::PingPong>,
    used: Arc<AtomicU64>,
    idle_close: Duration,
) -> Idle {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    let (mut seen, mut idle_since) = (used.load(Ordering::Relaxed), Instant::now());
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let now_used = used.load(Ordering::Relaxed);
        if now_used != seen {
            (seen, idle_since) = (now_used, Instant::now());
        } else if idle_since.elapsed() >= idle_close {
            return Idle::Unused;
        }
        match tokio::time::timeout(PING_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return Idle::Unanswered,
        }
    }
}

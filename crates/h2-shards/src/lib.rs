//! One endpoint's HTTP/2 connections, used straight through the `h2` crate: a fixed set of
//! connections (shards), each dialled once and shared by every request routed to it, re-dialled
//! on the first request after it fails, closed after a few idle minutes, and kept honest by PINGs.
//! No server is special-cased here: the crate knows HTTP/2, TLS and proxies, not FCM or APNs.
//!
//! Pushes are small, uniform requests sent by the hundred thousand, and the profile of the first
//! build (reqwest over hyper) showed the generic client's per-request work — URL parsing, the
//! connection pool checkout, a task spawned per request to pipe its body, redirect and timeout
//! layers — costing more CPU than the HTTP/2 framing itself. Here a request is a pre-built header
//! block and one DATA frame written straight into the connection's stream table.
//!
//! Only one task dials a shard at a time and the others wait for its connection, so a burst of
//! requests before the first connection is up opens one connection per shard, never one per
//! request (Apple treats connection churn as an attack). A connection carries no more streams at
//! once than the server's `SETTINGS_MAX_CONCURRENT_STREAMS` says, followed as the server changes
//! it, nor more than 100.
//!
//! Modules: `shard` (a connection slot, its stream gate, and which slot a request takes), `dial` (TCP, the proxy tunnel, TLS,
//! the handshake, keep-alive), `tls` (the verifier), `proxy` (`HTTPS_PROXY`/`NO_PROXY`) and
//! `unvectored` (how h2 is made to write the frames of many pushes at once), `number`
//! (numeric header values in one allocation) and `json_post` (the request JSON push APIs take). What
//! may change here: the constants below and the dial; the public surface is what the notifier's
//! pushers and the connection tests use.

mod dial;
mod json_post;
mod number;
mod proxy;
mod shard;
mod tls;
mod unvectored;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::time::Instant;

pub use dial::ConnectError;
pub use json_post::json_post;
pub use number::number;
pub use proxy::Proxy;
pub use tls::{CaFileError, Trust};

use dial::Target;
use shard::{Live, Shard};

/// Error bodies are short; anything longer is cut.
const MAX_BODY: usize = 16 * 1024;
/// After a failed dial, requests get the same error at once for this long instead of each dialling.
const DIAL_FAILURE_SHARED_FOR: Duration = Duration::from_secs(1);
/// The whole dial: every address tried, TLS, the HTTP/2 handshake and the server's SETTINGS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no response. All of these are worth another try.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Http2Error {
    #[error("cannot connect")]
    Connect(#[from] ConnectError),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// Certainly not processed by the server: the stream was never sent (the connection had
    /// closed or received GOAWAY), the server refused it (REFUSED_STREAM), or its id was above
    /// the last one a GOAWAY said the server would process.
    #[error("not sent")]
    Unsent(#[source] Arc<h2::Error>),
    /// A reset stream, a connection lost mid-request: the server may have processed it.
    #[error("stream failed")]
    Transport(#[source] Arc<h2::Error>),
}

impl Http2Error {
    /// A short, stable name for the kind of failure, for metric labels and reason codes.
    pub fn code(&self) -> &'static str {
        match self {
            Http2Error::Connect(_) => "connect",
            Http2Error::Timeout(_) => "timeout",
            Http2Error::Unsent(_) => "not sent",
            Http2Error::Transport(_) => "transport",
        }
    }
}

/// Why a client cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{endpoint} is not an http:// or https:// URL with a host")]
    Endpoint { endpoint: String },
    #[error("cannot use NOTIFIER_EXTRA_CA_FILE {}", path.display())]
    ExtraCa {
        path: PathBuf,
        #[source]
        source: CaFileError,
    },
    #[error("HTTPS_PROXY is not an http://[user:password@]host:port URL")]
    Proxy,
    #[error("{host} is not a TLS server name")]
    ServerName {
        host: String,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
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
    shards: Box<[Arc<Shard>]>,
    request_timeout: Duration,
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
                ServerName::try_from(host.clone()).map_err(|source| SetupError::ServerName {
                    host: host.clone(),
                    source,
                })?;
            Some((tls::connector(extra_ca)?, server_name))
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
                idle_close: dial::IDLE_CLOSE,
                fixed_paths: false,
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

    /// Closes a connection no request has used for `idle` (four minutes unless set).
    pub fn with_idle_close(mut self, idle: Duration) -> Self {
        if let Some(target) = Arc::get_mut(&mut self.target) {
            target.idle_close = idle;
        }
        self
    }

    /// Every request to this endpoint goes to one of a few fixed paths (FCM's `messages:send`):
    /// each is then sent whole once per connection and as a one-byte HPACK index after it. Not
    /// for paths that differ per request (APNs' device token, a Web Push subscription), which
    /// would churn the table and evict the bearer token.
    pub fn with_fixed_paths(mut self) -> Self {
        if let Some(target) = Arc::get_mut(&mut self.target) {
            target.fixed_paths = true;
        }
        self
    }

    /// How long a connection may idle before it is closed.
    pub fn idle_close(&self) -> Duration {
        self.target.idle_close
    }

    /// The endpoint's host, as proxies are chosen by it.
    pub fn host(&self) -> &str {
        &self.target.host
    }

    /// The port connections are dialled to.
    pub fn port(&self) -> u16 {
        self.target.port
    }

    /// How many connections requests are spread over.
    pub fn connections(&self) -> usize {
        self.shards.len()
    }

    /// What the server's certificate is checked against; `None` for `http://`.
    pub fn trust(&self) -> Option<&Trust> {
        self.target
            .tls
            .as_ref()
            .map(|(connector, _)| &connector.trust)
    }

    /// The proxy connections are tunnelled through, if any.
    pub fn proxy(&self) -> Option<&Proxy> {
        self.target.proxy.as_ref()
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

    /// Sends the request `request` builds, with `body`, on the connection `key` maps to, or the
    /// next one up with a stream free while every stream of that one is busy. A request the
    /// server certainly did not process is built and sent once more at once, on a fresh
    /// connection if its own is gone. (h2 takes the request it sends: building it per attempt
    /// spares every request a copy kept only for that rare second attempt.)
    pub async fn send(
        &self,
        key: u64,
        request: &(dyn Fn() -> http::Request<()> + Sync),
        body: Bytes,
    ) -> Result<Response, Http2Error> {
        let (shard, live) = shard::pick(&self.shards, key);
        let twice = async {
            match self.exchange(shard, live, request(), body.clone()).await {
                Err(Http2Error::Unsent(_)) => self.exchange(shard, None, request(), body).await,
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

    /// One attempt on `shard`, through `live` where the caller has its connection already.
    async fn exchange(
        &self,
        shard: &Arc<Shard>,
        live: Option<Live>,
        request: http::Request<()>,
        body: Bytes,
    ) -> Result<Response, Http2Error> {
        let live = match live {
            Some(live) => live,
            None => self.connection(shard).await?,
        };
        let _stream = live.streams.enter(live.send()).await;
        live.used.fetch_add(1, Ordering::Relaxed);
        // Failing here, the request was never written: the connection is gone or going away,
        // or cannot open another stream. Every case wants a fresh connection.
        let unsent = |e: h2::Error| {
            shard.forget(&live);
            Http2Error::Unsent(Arc::new(e))
        };
        let mut send = live.handle();
        std::future::poll_fn(|cx| send.poll_ready(cx))
            .await
            .map_err(unsent)?;
        let failed = |e: h2::Error| {
            if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Http2Error::Unsent(Arc::new(e)); // RFC 9113 §8.7: not processed
            }
            if e.is_go_away() || e.is_io() {
                shard.forget(&live);
            }
            // h2 fails a stream with the peer's GOAWAY only when its id is above the GOAWAY's
            // last stream id, which the server promises not to have processed (RFC 9113 §6.8);
            // streams at or below it end normally or with the connection (an I/O error).
            if e.is_go_away() && e.is_remote() {
                return Http2Error::Unsent(Arc::new(e));
            }
            Http2Error::Transport(Arc::new(e))
        };
        // The request and its body in one step (`vendor/h2`'s sixth change): one lock of h2's
        // stream table, no `SendStream` to drop. h2 buffers what the flow-control window does
        // not yet allow; pushes are far below the initial 64 KiB window.
        let response = send
            .send_request_with_body(request, body)
            .map_err(unsent)?
            .map_err(failed)?;
        live.give_back(send);
        // The response and its body whole (`vendor/h2`'s seventh change): one lock of h2's
        // stream table a poll, where reading the body frame by frame, releasing each frame's
        // capacity and dropping the body's handle took it about seven times. A body in one DATA
        // frame (every provider answer seen) is a slice of h2's read buffer, not a copy.
        let (head, body) = response.with_body(MAX_BODY).await.map_err(failed)?;
        let (parts, ()) = head.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The shard's connection, dialled if it has none.
    async fn connection(&self, shard: &Arc<Shard>) -> Result<Live, Http2Error> {
        if let Some(live) = shard.current() {
            return Ok(live);
        }
        // Boxed: the dial's state (TCP, TLS and HTTP/2 handshakes) is kilobytes, and inline it
        // would sit in every request's future, allocated and moved per request (12.7 KiB in all).
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
        let dialled = tokio::time::timeout(CONNECT_TIMEOUT, dial::dial(&self.target, shard))
            .await
            .unwrap_or(Err(ConnectError::Timeout(CONNECT_TIMEOUT)))
            .map_err(Http2Error::Connect);
        match dialled {
            Ok(live) => {
                *last_failure = None;
                shard.install(live.clone());
                Ok(live)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }
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

    #[test]
    fn https_endpoints_trust_the_platform_roots_and_http_ones_have_no_tls() {
        let https = Http2Client::new("https://example.com", 3, None, Duration::from_secs(1))
            .expect("builds");
        assert_eq!(
            (https.host(), https.port(), https.connections()),
            ("example.com", 443, 3)
        );
        assert_eq!(
            https.trust(),
            Some(&Trust {
                platform_roots: true,
                extra_roots: 0
            })
        );
        let plain = Http2Client::new("http://127.0.0.1:9", 1, None, Duration::from_secs(1))
            .expect("builds");
        assert_eq!(plain.trust(), None);
    }
}

//! The serving loop of the two HTTP listeners (the API's and the status port's): a router served
//! over HTTP/1.1 by hyper with the limits a port open to strangers needs, which `axum::serve`
//! does not set (it gives hyper no timer, and so no header-read timeout):
//!
//! - a connection that has not sent a whole request head within `header_timeout` is closed, and
//!   so is a keep-alive connection waiting that long for its next request (hyper's timer);
//! - a connection on which nothing has been read or written for `idle_timeout` while no request
//!   of it is being handled is closed: one that connected and sent nothing or half a head, an idle
//!   keep-alive connection, a client that stopped reading its answer;
//! - at most `max_connections` are open at once; beyond that, new ones are not accepted until one
//!   closes: they wait in the kernel's listen queue (128), past which their connect times out.
//!
//! A handler's own time is bounded by the router (the API's request timeout), not here. A stop
//! stops accepting, lets each connection finish the request it is answering, and returns once all
//! are closed (the limits above bound that wait).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// How often a listener at its bound says so: once is news, every connection would be a flood.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Serves `router` on `listener` until `stop` is cancelled and every connection has closed;
/// `name` names the listener in log lines.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    name: &'static str,
    stop: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut warned: Option<Instant> = None;
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(name, e).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        if slots.available_permits() == 0
            && warned.is_none_or(|at| at.elapsed() > FULL_WARNING_EVERY)
        {
            warned = Some(Instant::now());
            warn!(
                listener = name,
                max_connections = limits.max_connections,
                "The listener holds as many connections as it may; new ones wait until one closes."
            );
        }
        // Answers are small and written at once: waiting for more to coalesce only adds latency.
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            router.clone(),
            limits,
            stop.clone(),
            slot,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// As hyper 0.14's server did: a connection that failed between the SYN and `accept` is its
/// client's business; anything else (out of file descriptors) is logged, and accepting pauses
/// for a second so that connections may close meanwhile.
async fn accept_failed(name: &'static str, e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!(listener = name, error = %e, "Accepting a connection failed; pausing for a second.");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection, until it ends, is found quiet, or (after a stop) its request is answered.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = Tracked {
        router,
        activity: Arc::clone(&activity),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut stopping = false;
    loop {
        let check_at = activity.quiet_deadline(limits.idle_timeout);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(check_at.into()) => {
                // Dropping the connection closes the socket; nothing of a request is lost, as
                // none is being handled.
                if activity.is_quiet(limits.idle_timeout) {
                    return;
                }
            }
        }
    }
}

/// When bytes last moved on a connection, and how many of its requests are being handled.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte read or written, or the last request's end.
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// When the connection may next be found quiet.
    fn quiet_deadline(&self, idle: Duration) -> Instant {
        if self.busy.load(Ordering::Relaxed) > 0 {
            Instant::now() + idle
        } else {
            self.last() + idle
        }
    }

    fn is_quiet(&self, idle: Duration) -> bool {
        self.busy.load(Ordering::Relaxed) == 0 && self.last().elapsed() >= idle
    }
}

/// The socket, noting every byte that moves.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router, counting the connection busy while it handles a request.
#[derive(Clone)]
struct Tracked {
    router: Router,
    activity: Arc<Activity>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let busy = Busy::enter(Arc::clone(&self.activity));
        let mut router = self.router.clone();
        // A router is always ready: it needs no `poll_ready` before `call`.
        let answer = tower_service::Service::call(&mut router, request);
        Box::pin(async move {
            let response = answer.await;
            drop(busy);
            response
        })
    }
}

/// A request being handled; its end counts as activity, so the idle time starts from there.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(activity: Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(
        limits: Limits,
        router: Router,
    ) -> (
        String,
        CancellationToken,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, router, limits, "test", stop.clone()));
        (addr, stop, task)
    }

    fn router() -> Router {
        Router::new().route("/", get(|| async { "ok" })).route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow"
            }),
        )
    }

    const SHORT: Limits = Limits {
        header_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(1),
        max_connections: 64,
    };

    /// Reads until the server closes the connection; what it sent before.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get_once(addr: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        until_closed(&mut stream).await
    }

    #[tokio::test]
    async fn half_a_head_or_nothing_is_closed_once_quiet_and_a_request_is_answered_meanwhile() {
        let (addr, _stop, _task) = start(SHORT, router()).await;
        let mut half = TcpStream::connect(&addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        let started = Instant::now();
        assert!(get_once(&addr, "/").await.ends_with("ok"));
        until_closed(&mut half).await;
        until_closed(&mut silent).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
            "closed after {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_head_trickled_byte_by_byte_is_cut_at_the_header_timeout() {
        let (addr, _stop, _task) = start(SHORT, router()).await;
        let (mut read, mut write) = TcpStream::connect(&addr).await.unwrap().into_split();
        // A byte every 200 ms keeps the connection from ever being quiet for the idle second.
        let trickle = tokio::spawn(async move {
            for byte in b"GET / HTTP/1.1\r\nX-Slow: "
                .iter()
                .chain([b'a'; 100].iter())
            {
                if write.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let started = Instant::now();
        let _ = read.read_to_end(&mut Vec::new()).await;
        let held = started.elapsed();
        trickle.abort();
        assert!(
            held >= Duration::from_millis(2500) && held < Duration::from_secs(5),
            "the header timeout (3 s) ended it: {held:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_handler_is_not_cut_by_the_idle_timeout_and_keep_alive_ends_when_idle() {
        let (addr, _stop, _task) = start(SHORT, router()).await;
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let answer = until_closed(&mut stream).await;
        assert!(answer.ends_with("slow"), "{answer:?}");
        let held = started.elapsed();
        assert!(
            held >= Duration::from_millis(2400) && held < Duration::from_secs(4),
            "answered after 1.5 s, then kept alive for the idle second: {held:?}"
        );
    }

    #[tokio::test]
    async fn beyond_the_bound_a_connection_waits_until_one_closes() {
        let limits = Limits {
            max_connections: 2,
            ..SHORT
        };
        let (addr, _stop, _task) = start(limits, router()).await;
        let _a = TcpStream::connect(&addr).await.unwrap();
        let _b = TcpStream::connect(&addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        assert!(get_once(&addr, "/").await.ends_with("ok"));
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "the third waited for a quiet one to close: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_stop_lets_the_request_in_hand_finish_then_returns() {
        let (addr, stop, task) = start(SHORT, router()).await;
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        assert!(until_closed(&mut stream).await.ends_with("slow"));
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(&addr).await.is_err(),
            "no longer listening"
        );
    }
}

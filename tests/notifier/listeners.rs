//! Both HTTP listeners of a running replica (the API's and the status port's) under slowloris:
//! hundreds of connections that send half a request head and stop neither keep a normal request
//! from being answered nor stay open for long (contract §14).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gaurun::{cluster, free_addr, start_api_replica};

const HALF_OPEN: usize = 500;

/// `n` connections to `addr`, each having sent half a request head.
async fn half_open(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /push HTTP/1.1\r\nHost: notifier\r\nContent-Ty")
            .await
            .unwrap();
        streams.push(stream);
    }
    streams
}

/// Waits until the server has closed every one of `streams` (end of stream or a reset), at most
/// until `deadline`: when the first and the last closed, counted from `opened`.
async fn all_closed(
    streams: Vec<TcpStream>,
    opened: Instant,
    deadline: Duration,
) -> (Duration, Duration) {
    let mut waiting = tokio::task::JoinSet::new();
    for mut stream in streams {
        let left = deadline.saturating_sub(opened.elapsed());
        waiting.spawn(async move {
            let mut sink = Vec::new();
            tokio::time::timeout(left, stream.read_to_end(&mut sink))
                .await
                .is_ok()
                .then(|| opened.elapsed())
        });
    }
    let (mut first, mut last, mut open) = (deadline, Duration::ZERO, 0);
    while let Some(closed) = waiting.join_next().await {
        match closed.unwrap() {
            Some(at) => (first, last) = (first.min(at), last.max(at)),
            None => open += 1,
        }
    }
    assert_eq!(open, 0, "{open} connections still open after {deadline:?}");
    (first, last)
}

/// A GET answered within a few seconds, however many half-open connections there are.
async fn answered(url: &str) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = client.get(url).send().await;
    let r = r.unwrap_or_else(|e| panic!("{url} not answered meanwhile: {e}"));
    assert_eq!(r.status().as_u16(), 200, "{url}");
}

#[tokio::test]
async fn half_open_connections_neither_block_a_request_nor_stay_open() {
    notifier::install_crypto_provider();
    let mut cluster = cluster("").await;
    let status = free_addr();
    let base = start_api_replica(&mut cluster, &[("NOTIFIER_HTTP_ADDR", status.as_str())]).await;
    let api = base.trim_start_matches("http://").to_string();
    let opened = Instant::now();
    let on_api = half_open(&api, HALF_OPEN).await;
    let on_status = half_open(&status, HALF_OPEN).await;
    answered(&format!("{base}/openapi.json")).await;
    answered(&format!("http://{status}/healthz")).await;
    let deadline = Duration::from_secs(40);
    let (api, status_port) = tokio::join!(
        all_closed(on_api, opened, deadline),
        all_closed(on_status, opened, deadline)
    );
    // Closed for being quiet (20 s on the API, 10 s on the status port), not at once.
    assert!(api.0 >= Duration::from_secs(15), "API: {api:?}");
    assert!(
        status_port.0 >= Duration::from_secs(7),
        "status: {status_port:?}"
    );
    answered(&format!("{base}/openapi.json")).await;
    answered(&format!("http://{status}/healthz")).await;
    let log = cluster.log(0);
    assert!(!log.contains("Accepting a connection failed"), "{log}");
}

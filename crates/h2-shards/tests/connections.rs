//! The client's HTTP/2 connections, against the stand-in: how many are opened, and
//! how they recover when the provider goes away.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use h2_shards::{Http2Client, Http2Error, Proxy};
use stand_in::{StandIn, StandInConfig};

fn fcm_request(client: &Http2Client, token: &str) -> (http::Request<()>, bytes::Bytes) {
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = client
        .uri("/v1/projects/stand-in-project/messages:send")
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", "Bearer any".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    let body = serde_json::json!({"message": {"token": token, "notification": {"title": "t", "body": "b"}}});
    (request, body.to_string().into())
}

async fn stand_in(config: StandInConfig) -> StandIn {
    StandIn::start(StandInConfig {
        accept_any_token: true,
        ..config
    })
    .await
    .expect("the stand-in starts")
}

/// `n` pushes at once, each its own task, as the fan-out sends them; every one must get a 200.
async fn burst_all_answered(client: &Arc<Http2Client>, n: u64, prefix: &str) {
    let burst = (0..n).map(|i| {
        let (client, token) = (client.clone(), format!("{prefix}-{i}"));
        tokio::spawn(async move {
            let (request, body) = fcm_request(&client, &token);
            client.send(i, &|| request.clone(), body).await
        })
    });
    for sent in futures_util::future::join_all(burst).await {
        let response = sent.unwrap().expect("every push of the burst is answered");
        assert_eq!(response.status, 200, "{:?}", response.body);
    }
}

#[tokio::test]
async fn a_burst_before_any_connection_is_up_opens_one_connection_per_shard() {
    let stand_in = stand_in(StandInConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = stand_in.write_files(dir.path()).unwrap();
    let client = Arc::new(
        Http2Client::new(
            &stand_in.tls_endpoint(),
            2,
            Some(&ca),
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    // 600 pushes at once on a cold client: without the dial gate each would open its own.
    burst_all_answered(&client, 600, "burst").await;
    assert_eq!(stand_in.counters.tls_connections.load(Ordering::Relaxed), 2);
    assert_eq!(stand_in.counters.delivered.load(Ordering::Relaxed), 600);
}

#[tokio::test]
async fn one_connection_never_carries_more_than_100_pushes_at_once() {
    // A server that would take 1,000 streams: the limit is the client's own, as Google's and
    // Apple's front ends allow 100 and say so only once the connection is up.
    let stand_in = stand_in(StandInConfig {
        max_streams: 1000,
        latency: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let client = Arc::new(
        Http2Client::new(&stand_in.plain_endpoint(), 1, None, Duration::from_secs(10)).unwrap(),
    );
    burst_all_answered(&client, 300, "capped").await;
    assert_eq!(stand_in.counters.max_in_flight.load(Ordering::Relaxed), 100);
    assert_eq!(
        stand_in.counters.plain_connections.load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn pushes_whose_connection_is_full_spill_over_to_another_connection_already_up() {
    let stand_in = stand_in(StandInConfig {
        max_streams: 1000,
        latency: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let client = Arc::new(
        Http2Client::new(&stand_in.plain_endpoint(), 2, None, Duration::from_secs(10)).unwrap(),
    );
    client.warm().await;
    // Every key maps to the first connection, as hashed device tokens crowd one of ten: its 100
    // streams fill, and the rest go through the second instead of waiting a round trip.
    let burst = (0..200).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let (request, body) = fcm_request(&client, &format!("spill-{i}"));
            client.send(0, &|| request.clone(), body).await
        })
    });
    for sent in futures_util::future::join_all(burst).await {
        assert_eq!(sent.unwrap().expect("answered").status, 200);
    }
    assert_eq!(
        stand_in.counters.max_in_flight.load(Ordering::Relaxed),
        200,
        "both connections carried the burst at once"
    );
    assert_eq!(
        stand_in.counters.plain_connections.load(Ordering::Relaxed),
        2,
        "spilling over dials nothing"
    );
}

#[tokio::test]
async fn a_provider_that_goes_away_is_dialled_again_on_a_later_push() {
    let first = stand_in(StandInConfig::default()).await;
    let client =
        Http2Client::new(&first.plain_endpoint(), 1, None, Duration::from_secs(5)).unwrap();
    let (request, body) = fcm_request(&client, "before");
    assert_eq!(
        client
            .send(1, &|| request.clone(), body)
            .await
            .unwrap()
            .status,
        200
    );

    // The provider restarts on the same address: the old connection is gone.
    first.stop();
    let addr = first.plain_addr;
    drop(first);
    let mut second = None;
    for _ in 0..50 {
        match StandIn::start(StandInConfig {
            plain_addr: addr,
            accept_any_token: true,
            ..Default::default()
        })
        .await
        {
            Ok(s) => {
                second = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let second = second.expect("the stand-in restarts on the same port");
    let mut outcomes = Vec::new();
    for attempt in 0..5 {
        let (request, body) = fcm_request(&client, &format!("after-{attempt}"));
        let sent = client.send(1, &|| request.clone(), body).await;
        let ok = matches!(&sent, Ok(r) if r.status == 200);
        outcomes.push(sent.map(|r| r.status));
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // At most the first push after the restart meets the dead connection (and is retried by the
    // fan-out); the next one goes over a fresh connection.
    assert!(
        outcomes.len() <= 2 && matches!(outcomes.last(), Some(Ok(s)) if *s == 200),
        "{outcomes:?}"
    );
    assert_eq!(second.counters.plain_connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_push_with_no_answer_in_time_fails_as_a_timeout() {
    let stand_in = stand_in(StandInConfig {
        latency: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let client = Http2Client::new(
        &stand_in.plain_endpoint(),
        1,
        None,
        Duration::from_millis(300),
    )
    .unwrap();
    let (request, body) = fcm_request(&client, "slow");
    let started = std::time::Instant::now();
    let sent = client.send(1, &|| request.clone(), body).await;
    assert!(matches!(sent, Err(Http2Error::Timeout(_))), "{sent:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn an_endpoint_that_does_not_speak_http2_fails_to_connect_and_says_so() {
    // Something that answers like an HTTP/1.1 server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let client =
        Http2Client::new(&format!("http://{addr}"), 1, None, Duration::from_secs(3)).unwrap();
    let (request, body) = fcm_request(&client, "t");
    let sent = client.send(1, &|| request.clone(), body).await;
    assert!(
        matches!(
            &sent,
            Err(Http2Error::Connect(_)) | Err(Http2Error::Transport(_))
        ),
        "{sent:?}"
    );
    // Nothing listening at all: a connect error, at once.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let client = Http2Client::new(
        &format!("http://127.0.0.1:{port}"),
        1,
        None,
        Duration::from_secs(3),
    )
    .unwrap();
    let (request, body) = fcm_request(&client, "t");
    let sent = client.send(1, &|| request.clone(), body).await;
    assert!(matches!(&sent, Err(Http2Error::Connect(_))), "{sent:?}");
}

#[test]
fn a_missing_or_empty_extra_ca_file_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for path in [dir.path().join("missing.pem"), empty] {
        let err = Http2Client::new(
            "https://localhost:1",
            1,
            Some(&path),
            Duration::from_secs(1),
        )
        .err()
        .expect("refused");
        assert!(err.to_string().contains("NOTIFIER_EXTRA_CA_FILE"), "{err}");
    }
    let err = Http2Client::new("ftp://x", 1, None, Duration::from_secs(1))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("ftp://x"), "{err}");
}

/// An HTTP CONNECT proxy on loopback that records each request head and delays everything the
/// server sends by `delay` (a slow link: the server's SETTINGS arrive late).
async fn connect_proxy(
    delay: Duration,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(client.read_u8().await.unwrap());
                }
                let head = String::from_utf8(head).unwrap();
                let target = head.split_whitespace().nth(1).unwrap().to_string();
                seen.lock().unwrap().push(head);
                let server =
                    tokio::net::TcpStream::connect(target.replace("localhost", "127.0.0.1"))
                        .await
                        .unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = server_read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn pushes_go_through_an_https_proxy_in_one_tunnel_with_its_credentials() {
    let stand_in = stand_in(StandInConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = stand_in.write_files(dir.path()).unwrap();
    let (proxy_addr, heads) = connect_proxy(Duration::from_millis(50)).await;
    let proxy = Proxy::from_vars(
        Some(&format!("http://notifier:s%40cret@{proxy_addr}")),
        Some("example.com"),
        "localhost",
    )
    .unwrap();
    let client = Arc::new(
        Http2Client::new(
            &stand_in.tls_endpoint(),
            1,
            Some(&ca),
            Duration::from_secs(20),
        )
        .unwrap()
        .with_proxy(proxy),
    );
    // A cold burst over a slow link (everything the server sends arrives 50 ms late).
    burst_all_answered(&client, 300, "proxied").await;
    assert_eq!(stand_in.counters.delivered.load(Ordering::Relaxed), 300);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "one tunnel for the whole burst: {heads:?}");
    let port = stand_in.tls_addr.port();
    assert!(
        heads[0].starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")),
        "{}",
        heads[0]
    );
    // "notifier:s@cret", percent-decoded, in Basic.
    assert!(
        heads[0].contains("Proxy-Authorization: Basic bm90aWZpZXI6c0BjcmV0\r\n"),
        "{}",
        heads[0]
    );
}

//! The header block a request puts on the wire: a provider's bearer token, the same on every
//! request of a connection for up to an hour, is sent whole once and then as an index into the
//! HPACK table, and so is FCM's one path on a client told its paths are fixed; and a request's
//! authority and path, shared with the connection's last request when they match, are always its
//! own (the workspace's h2 is patched for these: `vendor/h2/PATCHED.md`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2_shards::Http2Client;
use stand_in::{StandIn, StandInConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

mod bare;

/// The payload lengths of the first `count` HEADERS frames the client writes, read off the wire
/// after the connection preface.
async fn header_block_lengths<R: AsyncRead + Unpin>(wire: &mut R, count: usize) -> Vec<usize> {
    let mut preface = [0u8; 24];
    wire.read_exact(&mut preface)
        .await
        .expect("the client's preface");
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let mut lengths = Vec::new();
    while lengths.len() < count {
        let mut head = [0u8; 9];
        wire.read_exact(&mut head).await.expect("a frame header");
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; length];
        wire.read_exact(&mut payload)
            .await
            .expect("a frame payload");
        const HEADERS: u8 = 0x1;
        if head[3] == HEADERS {
            lengths.push(length);
        }
    }
    lengths
}

/// An h2 client with default settings, its connection driven, writing into the returned pipe.
async fn client_on_a_pipe() -> (h2::client::SendRequest<Bytes>, tokio::io::DuplexStream) {
    let (client_io, wire) = tokio::io::duplex(1 << 20);
    let (send, connection) = h2::client::handshake(client_io)
        .await
        .expect("the client's handshake");
    tokio::spawn(connection);
    (send, wire)
}

#[tokio::test]
async fn a_bearer_token_is_sent_whole_once_per_connection_and_then_as_an_index() {
    // As long as a Google access token, and as random.
    let token: String = (0..1024).map(|_| fastrand::alphanumeric()).collect();
    let (mut send, mut wire) = client_on_a_pipe().await;
    for _ in 0..3 {
        let request = http::Request::post("https://fcm.googleapis.com/v1/projects/p/messages:send")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (_response, mut body) = send.send_request(request, false).unwrap();
        body.send_data(Bytes::from_static(b"{}"), true).unwrap();
    }
    let lengths = header_block_lengths(&mut wire, 3).await;
    // Huffman-coded, a kilobyte of letters and digits is about 750 bytes.
    assert!(
        lengths[0] > 700,
        "the first request carries the token whole: {lengths:?}"
    );
    for later in &lengths[1..] {
        assert!(
            *later < 60,
            "a later request carries an index, not the token: {lengths:?}"
        );
    }
}

#[tokio::test]
async fn a_header_value_marked_sensitive_is_never_indexed() {
    let (mut send, mut wire) = client_on_a_pipe().await;
    let secret: String = (0..200).map(|_| fastrand::alphanumeric()).collect();
    let mut sent = Vec::new();
    for _ in 0..2 {
        let mut value = http::HeaderValue::from_str(&format!("Basic {secret}")).unwrap();
        value.set_sensitive(true);
        let request = http::Request::post("https://example.com/")
            .header("authorization", value)
            .body(())
            .unwrap();
        sent.push(send.send_request(request, true).unwrap());
    }
    let lengths = header_block_lengths(&mut wire, 2).await;
    assert!(
        lengths[1] > 140,
        "the second request carries the sensitive value again: {lengths:?}"
    );
}

/// A TCP relay in front of `upstream` (`host:port`) that keeps a copy of every byte the client
/// sends: the client's side of the wire, as the provider reads it.
async fn recording_relay(upstream: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    record.lock().unwrap().extend_from_slice(&chunk[..n]);
                    if server_write.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    (format!("http://{address}"), sent)
}

/// The HEADERS frames' lengths of three FCM requests, one after another, sent by an
/// `Http2Client` through a recording relay to the stand-in.
async fn three_fcm_header_blocks(fixed_paths: bool) -> Vec<usize> {
    // A project id as long as a real one can be (30 characters), so the path is most of a
    // header block that is otherwise indexes.
    let project = "a-project-id-thirty-chars-long";
    let stand_in = StandIn::start(StandInConfig {
        accept_any_token: true,
        project: project.into(),
        ..Default::default()
    })
    .await
    .expect("the stand-in starts");
    let upstream = stand_in
        .plain_endpoint()
        .trim_start_matches("http://")
        .to_string();
    let (endpoint, sent) = recording_relay(upstream).await;
    let client = Http2Client::new(&endpoint, 1, None, Duration::from_secs(10)).unwrap();
    let client = if fixed_paths {
        client.with_fixed_paths()
    } else {
        client
    };
    let path = format!("/v1/projects/{project}/messages:send");
    for i in 0..3u64 {
        let request = || {
            let mut request = http::Request::new(());
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = client.uri(&path).unwrap();
            request
                .headers_mut()
                .insert("authorization", "Bearer any".parse().unwrap());
            request
        };
        let body = format!(r#"{{"message":{{"token":"device-{i}"}}}}"#);
        let response = client.send(i, &request, body.into()).await.unwrap();
        assert_eq!(response.status, 200, "{:?}", response.body);
    }
    let wire = sent.lock().unwrap().clone();
    header_block_lengths(&mut wire.as_slice(), 3).await
}

#[tokio::test]
async fn a_client_told_its_paths_are_fixed_sends_the_path_once_per_connection_and_then_as_an_index()
{
    let indexed = three_fcm_header_blocks(true).await;
    let whole = three_fcm_header_blocks(false).await;
    // Huffman-coded, the 56-byte path is about 40 bytes; an index is one.
    assert!(
        indexed[0] > 40,
        "the first request carries the path whole: {indexed:?}"
    );
    for (later_indexed, later_whole) in indexed[1..].iter().zip(&whole[1..]) {
        assert!(
            later_indexed + 35 < *later_whole,
            "a later request carries the path as an index on the fixed-path client only: \
             fixed {indexed:?}, default {whole:?}"
        );
    }
}

#[tokio::test]
async fn a_path_is_never_indexed_unless_the_connection_is_told_so() {
    let (mut send, mut wire) = client_on_a_pipe().await;
    let device: String = (0..64).map(|_| fastrand::alphanumeric()).collect();
    let mut sent = Vec::new();
    for _ in 0..2 {
        // APNs' path: the same device twice (a retry) must not enter the table either.
        let request = http::Request::post(format!("https://api.push.apple.com/3/device/{device}"))
            .body(())
            .unwrap();
        sent.push(send.send_request(request, true).unwrap());
    }
    let lengths = header_block_lengths(&mut wire, 2).await;
    assert!(
        lengths[1] > 45,
        "the second request carries the device's path whole again: {lengths:?}"
    );
}

#[tokio::test]
async fn a_request_with_a_connection_specific_header_is_refused_before_it_is_sent() {
    let (mut send, _wire) = client_on_a_pipe().await;
    let refused = [
        ("connection", "close"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "gzip"),
    ];
    for (name, value) in refused {
        let request = http::Request::post("https://fcm.googleapis.com/")
            .header("authorization", "Bearer any")
            .header(name, value)
            .body(())
            .unwrap();
        assert!(
            send.send_request(request, true).is_err(),
            "{name}: {value} is refused (RFC 9113 §8.2.2)"
        );
    }
    let request = http::Request::post("https://fcm.googleapis.com/")
        .header("te", "trailers")
        .body(())
        .unwrap();
    assert!(
        send.send_request(request, true).is_ok(),
        "te: trailers is the one value HTTP/2 allows"
    );
}

/// A bare HTTP/2 server that answers every request 200 and notes, in order, the `:authority`
/// and `:path` each arrived with.
async fn noting_targets() -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let noted = Arc::clone(&seen);
    let addr = bare::serve(move |request, mut respond| {
        let uri = request.uri();
        let target = (uri.authority().unwrap().to_string(), uri.path().to_string());
        noted.lock().unwrap().push(target);
        let head = http::Response::builder().status(200).body(()).unwrap();
        respond.send_response(head, true).unwrap();
    })
    .await;
    (addr, seen)
}

#[tokio::test]
async fn requests_alternating_paths_and_authorities_on_one_connection_arrive_as_sent() {
    // The workspace's h2 shares a request's `:authority` and `:path` with the connection's last
    // request when they match (`vendor/h2/PATCHED.md`): a stale one would show here.
    let (addr, seen) = noting_targets().await;
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    let sent = [
        ("a.example", "/3/device/one"),
        ("a.example", "/3/device/one"),
        ("a.example", "/3/device/two"),
        ("b.example", "/3/device/two"),
        ("a.example", "/3/device/one"),
        ("a.example", "/3/device/on"),
    ];
    for (authority, path) in sent {
        let request = http::Request::post(format!("http://{authority}{path}"))
            .body(())
            .unwrap();
        let response = send
            .send_request_with_body(request, Bytes::from_static(b"{}"))
            .expect("sent")
            .expect("the body queued")
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
    }
    let expected: Vec<(String, String)> = sent
        .iter()
        .map(|(authority, path)| (authority.to_string(), path.to_string()))
        .collect();
    assert_eq!(*seen.lock().unwrap(), expected);
}

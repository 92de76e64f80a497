//! The header block a request puts on the wire: a provider's bearer token, the same on every
//! request of a connection for up to an hour, is sent whole once and then as an index into the
//! HPACK table (the workspace's h2 is patched for it: `vendor/h2/PATCHED.md`).

use bytes::Bytes;
use tokio::io::AsyncReadExt;

/// The payload lengths of the first `count` HEADERS frames the client writes, read off the wire
/// after the connection preface.
async fn header_block_lengths(wire: &mut tokio::io::DuplexStream, count: usize) -> Vec<usize> {
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

#[tokio::test]
async fn a_bearer_token_is_sent_whole_once_per_connection_and_then_as_an_index() {
    // As long as a Google access token, and as random.
    let token: String = (0..1024).map(|_| fastrand::alphanumeric()).collect();
    let (client_io, mut wire) = tokio::io::duplex(1 << 20);
    let (mut send, connection) = h2::client::handshake(client_io)
        .await
        .expect("the client's handshake");
    tokio::spawn(connection);
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
    let (client_io, mut wire) = tokio::io::duplex(1 << 20);
    let (mut send, connection) = h2::client::handshake(client_io)
        .await
        .expect("the client's handshake");
    tokio::spawn(connection);
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

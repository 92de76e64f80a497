//! How the client reads an answer: its status, its headers and its body, however many DATA
//! frames the body comes in, cut at 16 KiB. Against a bare h2 server on loopback, which can
//! split a body as a provider's front end might.

use std::time::Duration;

use h2_shards::Http2Client;

mod bare;

/// A push's request: a POST with a small JSON body.
fn request(client: &Http2Client) -> (http::Request<()>, bytes::Bytes) {
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = client.uri("/v1/projects/p/messages:send").unwrap();
    (
        request,
        bytes::Bytes::from_static(b"{\"message\": {\"token\": \"t\"}}"),
    )
}

/// A bare HTTP/2 server that reads each request whole and answers 429, with a `retry-after`
/// header and `parts` as the body, each its own DATA frame.
async fn answering_in_frames(parts: &'static [&'static [u8]]) -> std::net::SocketAddr {
    bare::serve(move |request, mut respond| {
        tokio::spawn(async move {
            let mut body = request.into_body();
            while let Some(chunk) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.unwrap().len());
            }
            let head = http::Response::builder()
                .status(429)
                .header("retry-after", "7")
                .body(())
                .unwrap();
            let mut send = respond.send_response(head, false).unwrap();
            for (i, part) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                send.send_data(bytes::Bytes::from_static(part), last)
                    .unwrap();
            }
        });
    })
    .await
}

#[tokio::test]
async fn an_answer_in_several_frames_is_read_whole_with_its_headers_and_cut_at_16_kib() {
    static SEVERAL: [&[u8]; 3] = [&[b'a'; 10_000], &[b'b'; 5_000], &[b'c'; 5_000]];
    static ONE: [&[u8]; 1] = [b"{\"error\": \"quota\"}"];
    for (parts, expected) in [
        (
            &SEVERAL[..],
            [vec![b'a'; 10_000], vec![b'b'; 5_000], vec![b'c'; 1_384]].concat(),
        ),
        (&ONE[..], ONE[0].to_vec()),
    ] {
        let addr = answering_in_frames(parts).await;
        let client =
            Http2Client::new(&format!("http://{addr}"), 1, None, Duration::from_secs(10)).unwrap();
        // Twice on one connection: the first answer's stream is released and the next one read.
        for _ in 0..2 {
            let (request, body) = request(&client);
            let response = client
                .send(1, &|| request.clone(), body)
                .await
                .expect("answered");
            assert_eq!(response.status, 429);
            assert_eq!(response.headers["retry-after"], "7");
            assert_eq!(response.body.len(), expected.len());
            assert!(
                response.body == expected,
                "the body is the frames' bytes, in order"
            );
        }
    }
}

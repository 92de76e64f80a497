//! A bare HTTP/2 server on loopback for the client's tests: it takes one connection and hands each
//! request, with its answer's handle, to the test's handler, so a test sees the request as it
//! arrived and writes the answer frame by frame.

use std::net::SocketAddr;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;

/// Starts the server; `handle` is called for each request of its one connection, in order.
pub async fn serve<F>(mut handle: F) -> SocketAddr
where
    F: FnMut(http::Request<RecvStream>, SendResponse<Bytes>) + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut connection = h2::server::handshake(socket).await.unwrap();
        while let Some(request) = connection.accept().await {
            let (request, respond) = request.unwrap();
            handle(request, respond);
        }
    });
    addr
}

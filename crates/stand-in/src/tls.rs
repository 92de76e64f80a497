//! The two listeners: HTTP/2 over TLS, with a certificate signed by a CA made at start-up (its PEM
//! is handed to the notifier as an extra CA), and a plain port speaking HTTP/1.1 or h2c. Both
//! serve the same router and stop with the stand-in.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::conn::Conn;
use crate::frames::Frames;

pub(crate) fn tls_config(host_names: &[String]) -> anyhow::Result<(String, rustls::ServerConfig)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "notifier stand-in CA");
    let ca_key = KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(host_names.iter().cloned());
    let leaf = CertificateParams::new(names)?.signed_by(&leaf_key, &ca)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((ca.pem(), config))
}

pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let counters = &shared.counters;
        match &tls {
            Some(_) => counters.tls_connections.fetch_add(1, Ordering::Relaxed),
            None => counters.plain_connections.fetch_add(1, Ordering::Relaxed),
        };
        let config = &shared.config;
        let conn = Arc::new(Conn::new(
            Arc::clone(counters),
            config.initial_streams,
            config.max_streams,
            config.goaway_after,
        ));
        // Handlers find the connection's state (its provider token, its limits) here.
        let app = app.clone().layer(axum::Extension(Arc::clone(&conn)));
        let (tls, stop) = (tls.clone(), stop.clone());
        tokio::spawn(async move {
            let served = async {
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        serve_connection(stream, app, conn).await;
                    }
                    None => serve_connection(tcp, app, conn).await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = served => {}
            }
        });
    }
}

/// Serves one connection, its frames shaped as `conn` asks; when `conn` calls for a GOAWAY,
/// hyper finishes the streams it has and closes.
async fn serve_connection<T>(io: T, app: Router, conn: Arc<Conn>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if conn.shapes_frames() {
        serve_io(Frames::new(io, Arc::clone(&conn)), app, conn).await;
    } else {
        serve_io(io, app, conn).await;
    }
}

async fn serve_io<T>(io: T, app: Router, conn: Arc<Conn>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let service = TowerToHyperService::new(app);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(conn.max_streams());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = conn.shutdown.notified() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

//! The status listener on `NOTIFIER_HTTP_ADDR`: `GET /healthz` (the process is alive),
//! `GET /readyz` (the input is connected and the database answers; 503 with the reason otherwise)
//! and `GET /metrics` (Prometheus text).
//!
//! It serves a few requests a minute from probes and a scraper, on the same runtime as the
//! fan-out: every handler is cheap (the readiness check is one database round trip, bounded by a
//! timeout), so it never takes noticeable time from the pushes. It is often reachable from more
//! than the probes (`0.0.0.0:9464` in the image), so it has the limits of [`LIMITS`], and no
//! answer carries an internal error's text.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::http_server::Limits;
use crate::worker::Worker;

/// The worker, once start-up has made it: probes are answered from the moment the port is
/// bound, so a long start (a migration, say) is "alive, not ready" rather than a hung probe.
pub(crate) type WorkerSlot = Arc<OnceLock<Arc<Worker>>>;

#[derive(Clone)]
struct Status {
    worker: WorkerSlot,
    metrics: PrometheusHandle,
}

/// The status listener's limits (`http_server`): probes and a scraper send their request at once
/// and need few connections, but a crowd of half-open ones must not shut them out.
const LIMITS: Limits = Limits {
    header_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(10),
    max_connections: 1024,
};

/// Serves until `stop` is cancelled and the requests in hand are answered.
pub(crate) async fn serve(
    listener: TcpListener,
    worker: WorkerSlot,
    metrics: PrometheusHandle,
    stop: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "Serving /healthz, /readyz and /metrics.");
    }
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(Status { worker, metrics });
    crate::http_server::serve(listener, app, LIMITS, "status", stop).await
}

async fn readyz(State(status): State<Status>) -> impl IntoResponse {
    let Some(worker) = status.worker.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting\n".to_string(),
        );
    };
    match worker.not_ready().await {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn render_metrics(State(status): State<Status>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        status.metrics.render(),
    )
}

/// `notifier healthcheck`: asks the running notifier's `/healthz` (for a container HEALTHCHECK,
/// so the image needs no curl). A wildcard listen address is reached on loopback.
pub(crate) async fn healthcheck(addr: SocketAddr) -> anyhow::Result<()> {
    let target = if addr.ip().is_unspecified() {
        SocketAddr::new(
            if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            addr.port(),
        )
    } else {
        addr
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?;
    let response = client
        .get(format!("http://{target}/healthz"))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "/healthz answered {}",
        response.status()
    );
    Ok(())
}

//! `notifier-stand-in`: an FCM HTTP v1 + OAuth2, APNs and Web Push stand-in on loopback (see the
//! `stand_in` library).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use stand_in::{RequestWork, StandIn, StandInConfig};

/// A stand-in for FCM HTTP v1 and Google's token endpoint, for staging load tests and the
/// benchmark. Tokens containing unregistered, mismatch, invalid, thirdpartyauth, flaky, quota or
/// down get the matching FCM error; POST /webpush/subscriptions mints Web Push subscriptions whose
/// pushes it verifies and decrypts; GET /stats counts what arrived; POST /outage?on=true and
/// POST /latency?ms=N change its answers at run time.
#[derive(Debug, Parser)]
#[command(name = "notifier-stand-in", version, about, long_about)]
struct Args {
    /// HTTP/2 over TLS (point FCM_ENDPOINT here, with NOTIFIER_EXTRA_CA_FILE = DIR/ca.pem).
    #[arg(long, default_value = "127.0.0.1:8443")]
    tls_addr: SocketAddr,
    /// HTTP/1.1 and h2c; also serves the token endpoint named in the service account.
    #[arg(long, default_value = "127.0.0.1:8080")]
    plain_addr: SocketAddr,
    /// Where to write ca.pem and service-account.json (token_uri pointing here).
    #[arg(long, default_value = "stand-in")]
    dir: PathBuf,
    #[arg(long, default_value = "stand-in-project")]
    project: String,
    /// Delay before each FCM answer, in milliseconds (FCM from a data centre: 20–200).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// SETTINGS_MAX_CONCURRENT_STREAMS per HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    max_streams: u32,
    /// The host name other processes reach it by (a compose service name): added to the TLS
    /// certificate and used in the URLs printed and the service account's token_uri.
    #[arg(long, default_value = "localhost")]
    host_name: String,
    /// More names for the TLS certificate only (repeatable): fcm.googleapis.com and
    /// oauth2.googleapis.com, for a client whose hosts cannot be configured, resolved here.
    #[arg(long = "cert-name", value_name = "NAME")]
    cert_names: Vec<String>,
    /// Answer every FCM and APNs send at once without reading its body (no parsing, checks or
    /// per-token record); by default each is parsed, checked and recorded as a provider must.
    #[arg(long)]
    light: bool,
    /// Take any bearer token, for load generators such as h2load.
    #[arg(long)]
    accept_any_token: bool,
    /// The access tokens' length, at the least: Google's run to about a kilobyte.
    #[arg(long, default_value_t = stand_in::GOOGLE_TOKEN_BYTES)]
    access_token_bytes: usize,
    /// FCM sends per sliding minute the project may make (Google's default: 600000); past it,
    /// 429 QUOTA_EXCEEDED. 0: no quota.
    #[arg(long, default_value_t = 0)]
    fcm_quota_per_minute: u64,
    /// Count deliveries per token, listed by GET /stats/tokens (memory grows with the tokens).
    #[arg(long)]
    count_tokens: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stand_in = StandIn::start(StandInConfig {
            tls_addr: args.tls_addr,
            plain_addr: args.plain_addr,
            project: args.project,
            latency: Duration::from_millis(args.latency_ms),
            max_streams: args.max_streams,
            record: false,
            count_tokens: args.count_tokens,
            host_names: std::iter::once(args.host_name.clone())
                .chain(args.cert_names)
                .collect(),
            work: match args.light {
                true => RequestWork::Light,
                false => RequestWork::Realistic,
            },
            accept_any_token: args.accept_any_token,
            access_token_bytes: args.access_token_bytes,
            fcm_quota_per_minute: args.fcm_quota_per_minute,
            ..StandInConfig::default()
        })
        .await?;
        let plain = format!("http://{}:{}", args.host_name, stand_in.plain_addr.port());
        let (ca, account) = stand_in.write_files_for(&args.dir, &plain)?;
        println!("FCM stand-in ready.");
        println!(
            "  FCM_ENDPOINT=https://{}:{}",
            args.host_name,
            stand_in.tls_addr.port()
        );
        println!("  NOTIFIER_EXTRA_CA_FILE={}", ca.display());
        println!("  GOOGLE_APPLICATION_CREDENTIALS={}", account.display());
        println!(
            "  Web Push subscriptions: curl -X POST http://{}/webpush/subscriptions",
            stand_in.plain_addr
        );
        println!("  stats: curl http://{}/stats", stand_in.plain_addr);
        shutdown_signal().await;
        stand_in.stop();
        anyhow::Ok(())
    })
}

/// Ctrl-C or, on Unix, SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

//! The transport's floor: this crate alone sending FCM's request, as the notifier does, with
//! nothing of the notifier around it. No database, no rendering, no fence or checkpoint, no
//! retries, no logs: each request's body is made before the clock starts, and each request is a
//! task that sends it through [`Http2Client`] and checks the status.
//!
//! `bench/fanout.py --floor` runs it against the same stand-in as the notifier and h2load, in
//! the same run, so that the gap between the notifier and h2load splits in two: what the Rust
//! stack (tokio, h2, rustls) costs against nghttp2 in C, and what the notifier's own work per push
//! costs on top of that stack.
//!
//! ```text
//! floor --endpoint https://localhost:PORT --ca ca.pem --body body.json --token TOKEN \
//!       --requests 100000 --concurrency 256 --connections 2
//! ```
//!
//! `--body` is the JSON h2load sends; `--token` is the device token in it, replaced in each
//! request by a distinct one of the same length (the stand-in records every delivery by token,
//! as it does the notifier's). Prints one JSON line: the requests, the seconds from the first
//! send to the last answer, the rate, the process's CPU seconds and the failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2_shards::Http2Client;
use tokio::sync::Semaphore;

// The notifier's allocator, so that the floor is the notifier's stack and not glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    endpoint: String,
    ca: Option<std::path::PathBuf>,
    body: String,
    token: String,
    requests: usize,
    concurrency: usize,
    connections: usize,
}

fn args() -> Args {
    let mut out = Args {
        endpoint: String::new(),
        ca: None,
        body: String::new(),
        token: String::new(),
        requests: 100_000,
        concurrency: 256,
        connections: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--endpoint" => out.endpoint = value,
            "--ca" => out.ca = Some(value.into()),
            "--body" => out.body = std::fs::read_to_string(&value).expect("the body file reads"),
            "--token" => out.token = value,
            "--requests" => out.requests = number(),
            "--concurrency" => out.concurrency = number(),
            "--connections" => out.connections = number(),
            _ => panic!("unknown flag {flag}"),
        }
    }
    assert!(!out.endpoint.is_empty(), "--endpoint is required");
    assert!(
        !out.token.is_empty() && out.body.contains(&out.token),
        "--token must be a token that --body holds"
    );
    out
}

/// The body of request `i`: `body` with `token` replaced by one as long, distinct per request.
/// Cheap (two copies and a number), since under callgrind it is counted with the requests.
fn body(i: usize, body: &str, token: &str) -> Vec<u8> {
    let (before, after) = body.split_once(token).expect("checked in args()");
    let id = format!("floor-token-{i:09}");
    let fill = token.len().saturating_sub(id.len());
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(before.as_bytes());
    out.extend_from_slice(id.as_bytes());
    out.resize(out.len() + fill, b'x');
    out.extend_from_slice(after.as_bytes());
    out
}

/// The process's user and system CPU seconds so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat reads");
    // After the command's closing parenthesis: utime and stime are the 12th and 13th fields.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split(' ')
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[tokio::main]
async fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("one crypto provider");
    // On a worker thread, as the notifier's lanes are: spawned from the main thread, every task
    // went through the runtime's shared queue and woke a parked worker (five times the futex
    // calls per request).
    tokio::spawn(run(args()))
        .await
        .expect("the run does not panic");
}

async fn run(args: Args) {
    let client = Http2Client::new(
        &args.endpoint,
        args.connections,
        args.ca.as_deref(),
        Duration::from_secs(30),
    )
    .expect("the endpoint is usable")
    .with_fixed_paths();
    let uri = client
        .uri("/v1/projects/stand-in-project/messages:send")
        .expect("a URI");
    let bearer = http::HeaderValue::from_static("Bearer floor");
    let bodies: Vec<Vec<u8>> = (0..args.requests)
        .map(|i| body(i, &args.body, &args.token))
        .collect();
    let client = Arc::new(client);
    client.warm().await;
    // Shared by every request, as the notifier's pusher holds them.
    let target = Arc::new((uri, bearer));
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let failures = Arc::new(AtomicUsize::new(0));
    let (cpu_before, started) = (cpu_seconds(), Instant::now());
    for (i, body) in bodies.into_iter().enumerate() {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore stays open");
        let (client, target, failures) = (
            Arc::clone(&client),
            Arc::clone(&target),
            Arc::clone(&failures),
        );
        tokio::spawn(async move {
            let (uri, bearer) = &*target;
            let length = body.len();
            // The notifier's FCM request: the same builder.
            let request = || h2_shards::json_post(uri, bearer, length);
            let answered = client.send(i as u64, &request, Bytes::from(body)).await;
            if !matches!(answered, Ok(ref r) if r.status.is_success()) {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            drop(slot);
        });
    }
    // Every slot back: every request answered.
    let _all = slots
        .acquire_many(args.concurrency as u32)
        .await
        .expect("the semaphore stays open");
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "{}",
        serde_json::json!({
            "requests": args.requests,
            "seconds": seconds,
            "per_s": args.requests as f64 / seconds,
            "cpu_s": cpu,
            "failures": failures.load(Ordering::Relaxed),
        })
    );
}

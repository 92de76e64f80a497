use std::process::ExitCode;

use clap::Parser;

// Every push allocates a little (request, body, task); mimalloc's per-thread caches keep that off
// the profile, where glibc's malloc was a fifth of the CPU (bench/fanout.py, perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before the runtime starts: dotenvy sets variables, which is unsound once threads run.
    let _ = dotenvy::dotenv();
    let cli = notifier::cli::Cli::parse();
    // One TLS crypto provider for every client and server in the process (ring).
    notifier::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts"); // startup
    match runtime.block_on(notifier::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("notifier: {e:#}");
            ExitCode::FAILURE
        }
    }
}

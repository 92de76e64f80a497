use std::process::ExitCode;

use clap::Parser;

// Every push allocates a little (request, body, task); mimalloc's per-thread caches keep that off
// the profile, where glibc's malloc was a fifth of the CPU (bench/fanout.py, perf). Built with
// `no_thp`: mimalloc asked the kernel for transparent huge pages for its arenas, and a 2 MiB page
// is resident whole however little of it is used (peak RSS at a million devices: 42 → 27 MiB,
// 18 MiB of it huge pages before).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (the same in its v2 and v3).
const MI_OPTION_PURGE_DELAY: i32 = 15;

/// mimalloc holds freed pages for 10 ms (arenas 100 ms) before giving them back. A fan-out frees on
/// one worker thread what another allocated, tens of thousands of times a second, and the delay
/// kept more resident at peak (bench/fanout.py at 100,000 devices, runs interleaved: 46–48 → 39–47
/// MiB) for no measurable CPU. `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn return_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set is not thread safe; no other thread runs yet.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> ExitCode {
    // Before the runtime starts: dotenvy sets variables, which is unsound once threads run.
    let _ = dotenvy::dotenv();
    let cli = notifier::cli::Cli::parse();
    return_freed_memory_at_once();
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

use std::process::ExitCode;

use clap::Parser;

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

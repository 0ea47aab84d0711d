//! `copilot-lsp`: the binary. Parses arguments, sets up logging and threads, and hands over
//! to the crates that do the work. No logic of its own beyond wiring.

mod alloc;
mod cli;
mod events_cli;
mod stats_cli;
mod train_cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Library errors (candle's) capture a backtrace when `RUST_BACKTRACE` is set and print it
    // in their message, which then lands in the editor's message box. Panics keep theirs;
    // `RUST_LIB_BACKTRACE=1` brings the others back. Set before any thread starts.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let args = cli::Args::parse();
    if let Err(e) = cli::init_logging(&args) {
        eprintln!("copilot-lsp: {e:#}");
        return ExitCode::from(2);
    }
    copilot_engine::set_threads(args.threads.unwrap_or_else(copilot_engine::default_threads));
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("copilot-lsp: {e:#}");
            ExitCode::from(1)
        }
    }
}

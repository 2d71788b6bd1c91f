//! The `connectoid` command-line tool: a thin shell over the `connectoid`
//! library. It parses flags, sets up logging on stderr, runs one command and
//! turns any error into one line on stderr and a non-zero exit code.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONNECTOID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("connectoid={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("connectoid: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            // One line: the error and its causes, joined by ": ".
            eprintln!("connectoid: {error:#}");
            ExitCode::FAILURE
        }
    }
}

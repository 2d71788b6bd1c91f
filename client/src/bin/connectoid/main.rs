//! The `connectoid` command-line tool: a thin shell over the `connectoid`
//! library. It parses flags, sets up logging on stderr, runs one command and
//! turns any error into one line on stderr (and, with `--json`, one
//! `{"ok":false,"error":...}` object on stdout) and a non-zero exit code.
//! It draws no colours when stderr is not a terminal.

mod cli;
mod commands;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // -v: what the client does (relays, UDP or HTTP, what arrived or was
    // rejected); -vv: every request, and the libraries it uses.
    let filter = match cli.verbose {
        0 => "connectoid=warn".to_owned(),
        1 => "connectoid=info".to_owned(),
        2 => "connectoid=debug".to_owned(),
        _ => "connectoid=trace,info".to_owned(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONNECTOID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let json = cli.json;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            return commands::fail(
                &anyhow::anyhow!("cannot start the async runtime: {e}"),
                json,
            );
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => commands::fail(&error, json),
    }
}

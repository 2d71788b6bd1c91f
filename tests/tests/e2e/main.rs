//! End-to-end tests: clients against real relays (processes, or in-process
//! servers where a process adds nothing) and misbehaving fakes, all on
//! 127.0.0.1. One test binary, one module per subject.

// Helpers outside #[test] functions unwrap too: a test failure is a panic.
#![allow(clippy::unwrap_used)]

mod cli;
mod cli_scripts;
mod cli_tls;
mod dedupe;
mod flow;
mod https;
mod intercept;
mod push;
mod refusal;
mod relays;
mod resilience;
mod shared_profile;
mod stream;
mod udp;
mod wake;

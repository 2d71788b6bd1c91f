//! `bench`: Connectoid's benchmark. Starts its own relays, baselines and load
//! generators on 127.0.0.1, prints a table and writes a JSON report.
//!
//! ```text
//! cargo run --release -p connectoid-tests --bin bench -- [--quick] [--json PATH] [--only SECTIONS]
//! ```
//!
//! `--only checks,memory` runs only those sections (checks, sends, receive,
//! redis, fanout, memory); targets whose rows were not measured show as such.
//!
//! `--quick` keeps the whole run well under 10 minutes on a 2-core machine.
//! The hidden `--baseline-http` / `--baseline-udp` run one baseline server
//! (the benchmark starts itself with them, so that their CPU time is their own).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use connectoid_tests::bench::{Options, SECTIONS, baseline, scenarios};

fn usage() -> String {
    format!(
        "usage: bench [--quick] [--json PATH] [--only SECTION,...]\n  \
         default PATH: target/bench-report.json; sections: {}",
        SECTIONS.join(", ")
    )
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut json = None;
    let mut only = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--baseline-http" => return runtime()?.block_on(baseline::run_http()),
            "--baseline-udp" => return runtime()?.block_on(baseline::run_udp()),
            "--quick" => quick = true,
            "--json" => json = Some(PathBuf::from(args.next().context(usage())?)),
            "--only" => {
                let list: Vec<String> = args
                    .next()
                    .context(usage())?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = list.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    bail!("unknown section {bad:?}\n{}", usage());
                }
                only = Some(list);
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    let json = json.unwrap_or_else(default_json);
    let options = Options {
        quick,
        json: json.clone(),
        only,
    };
    let started = std::time::Instant::now();
    let report = runtime()?.block_on(scenarios::run(options))?;
    let table = report.table();
    println!("{table}");
    if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut value = report.json();
    value["elapsed_seconds"] = started.elapsed().as_secs().into();
    std::fs::write(&json, serde_json::to_string_pretty(&value)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!(
        "report written to {} ({}s)",
        json.display(),
        started.elapsed().as_secs()
    );
    Ok(())
}

/// `target/bench-report.json` next to this binary's `target/<profile>/`.
fn default_json() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("bench-report.json")))
        .unwrap_or_else(|| PathBuf::from("target/bench-report.json"))
}

/// The same multi-threaded runtime for the benchmark and the baselines
/// (one worker per core, as the relay has).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

//! What the repository ships for operators: `connectoid-relay.example.toml`
//! is loaded by the real binary's config loader and gives the defaults (and
//! names every flag as a key), and `dist/connectoid-relay.service` passes
//! `systemd-analyze verify` where systemd-analyze is installed.

use std::io::{Read as _, Write as _};
use std::path::Path;

use crate::common::*;

/// The example configuration file, as shipped.
fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("connectoid-relay.example.toml")
}

/// GETs `path` from `addr` over a fresh HTTP/1.1 connection; the JSON body.
fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

#[test]
fn the_example_configuration_loads_and_gives_the_defaults() {
    // Loaded through the binary's own loader (flags beat the file: only
    // the listen address and data directory are moved for the test).
    let data = tempfile::tempdir().unwrap();
    let relay = relay_command()
        .data_dir(data.path())
        .args([std::ffi::OsStr::new("--config"), example().as_os_str()])
        .start()
        .unwrap();
    let info = get_json(relay.http_addr(), "/.well-known/connectoid");
    let defaults = connectoid_relay::Config::new(data.path());
    let limits = &info["limits"];
    assert_eq!(
        limits["max_message_bytes"],
        defaults.limits.max_message_bytes as u64
    );
    assert_eq!(
        limits["max_receive_limit"],
        defaults.limits.max_receive_limit
    );
    assert_eq!(
        limits["max_pending_per_mailbox"],
        defaults.limits.max_pending_per_mailbox
    );
    let retention = &info["retention"];
    assert_eq!(
        retention["message_seconds"],
        defaults.retention.message.as_secs()
    );
    assert_eq!(info["udp_port"], serde_json::Value::Null);
    assert_eq!(info["api_key_required"], false);
    let held = &info["held_check"];
    assert_eq!(held["max_wait_seconds"], defaults.held.max_wait.as_secs());
    assert_eq!(held["max_per_source"], defaults.held.max_per_source);
    assert_eq!(held["max_total"], defaults.held.max_total);
    assert_eq!(held["max_mailboxes"], 16);
}

#[test]
fn the_example_configuration_names_every_flag() {
    let text = std::fs::read_to_string(example()).unwrap();
    // Keys set, or shown commented out as `# key = ...`.
    let keys: Vec<&str> = text
        .lines()
        .map(|line| line.trim_start_matches('#').trim())
        .filter_map(|line| line.split_once(" = ").map(|(key, _)| key))
        .collect();
    let help = relay_bin().arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let mut flags = 0;
    for flag in help
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
    {
        // Repeatable flags are lists under the plural name.
        let key = match flag {
            "config" | "help" | "version" | "" => continue,
            "url" => "urls",
            "peer" => "peers",
            "api-key" => "api-keys",
            other => other,
        };
        flags += 1;
        assert!(
            keys.contains(&key),
            "--{flag} has no key {key:?} in the example"
        );
    }
    assert!(flags > 20, "{help}");
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/connectoid-relay.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for hardening in [
        "DynamicUser=yes",
        "StateDirectory=connectoid-relay",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(text.contains(hardening), "{hardening}");
    }
    let Ok(output) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("skipping systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(output.status.success());
    // The unit names /usr/local/bin/connectoid-relay: verify a copy that
    // names the binary cargo built (verify checks that ExecStart exists).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("connectoid-relay.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/connectoid-relay", RELAY_BIN),
    )
    .unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    // Warnings about the unit itself (not about the host's other units).
    let own: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("connectoid-relay.service"))
        .collect();
    assert!(own.is_empty(), "{own:?}");
}

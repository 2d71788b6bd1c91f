//! The binary's refusals of settings that cannot work (exit code 2, one
//! line saying why), `--log-level`, and the ready line of an HTTPS relay.

use crate::common::*;

/// Runs the binary with `args` on a fresh data directory; it must exit 2
/// with `needle` in its one-line error.
fn refused(args: &[&str], needle: &str) {
    let data = tempfile::tempdir().unwrap();
    let output = relay_bin()
        .args(["--http", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

#[test]
fn settings_that_cannot_work_exit_2() {
    refused(&["--store", "postgres://x"], "unsupported store");
    refused(&["--max-message-bytes", "10"], "smallest sealed message");
    refused(&["--max-message-bytes", "368"], "smallest sealed message");
    refused(&["--send-rate-ip", "5"], "PER_MINUTE:BURST");
    refused(&["--check-rate-mailbox", "0:5"], "rate");
    refused(&["--log-level", "connectoid_relay=loud"], "--log-level");
}

#[test]
fn log_level_sets_what_is_logged() {
    let data = tempfile::tempdir().unwrap();
    // The smallest accepted message limit starts; --log-level beats RUST_LOG.
    let mut relay = relay_command()
        .data_dir(data.path())
        .args(["--max-message-bytes", "369", "--log-level", "off"])
        .start()
        .unwrap();
    assert!(relay.is_running());
    relay.stop().unwrap();
}

#[test]
fn an_https_relay_says_https_when_ready() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (cert, key) = (fixtures.join("tls-cert.pem"), fixtures.join("tls-key.pem"));
    let data = tempfile::tempdir().unwrap();
    let mut command = relay_command()
        .data_dir(data.path())
        .args([std::ffi::OsStr::new("--tls-cert"), cert.as_os_str()])
        .args([std::ffi::OsStr::new("--tls-key"), key.as_os_str()])
        .command()
        .unwrap();
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("listening https=127.0.0.1:"), "{line}");
}

#[test]
fn version_names_the_commit_in_a_checkout() {
    let output = relay_bin().arg("--version").output().unwrap();
    let version = String::from_utf8(output.stdout).unwrap();
    assert!(
        version.starts_with(&format!("connectoid-relay {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    if std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(version.contains("(commit "), "{version}");
    }
}

//! The real `connectoid-relay` binary: its stdout contract, exit codes,
//! graceful SIGTERM, and durability: every send acknowledged before a
//! `kill -9` is received after a restart on the same data directory, at
//! several kill points while other sends are still in flight.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use crate::common::*;
use connectoid_protocol::b64;
use serde_json::Value;

/// Starts the binary on `data` (rate limits off, room for every message of
/// the test), with the UDP check when `udp`, and reads its `listening` lines.
fn start_relay(data: &Path, udp: bool) -> RelayProcess {
    let mut command = relay_command()
        .data_dir(data)
        .no_rate_limits()
        .args(["--max-pending", "1000"])
        .log("warn");
    if udp {
        command = command.udp();
    }
    command.start().unwrap()
}

/// Every message in `secret`'s mailbox, through check, question and receive.
async fn receive_all(http: SocketAddr, secret: &connectoid_protocol::SecretKey) -> Vec<Vec<u8>> {
    let key = secret.public_key();
    let (status, check) = http_post(http, &check_body(&key, 0)).await.unwrap();
    assert_eq!(status, 200, "{check}");
    if check["found"] == false {
        return Vec::new();
    }
    let url = connectoid_protocol::RelayUrl::parse(&format!("http://{http}/")).unwrap();
    let answer = answer_of(secret, &check, &url);
    let mut at = 0;
    let mut all = Vec::new();
    for _ in 0..100 {
        let (status, page) = http_post(http, &receive_body(&key, &answer, at, 100))
            .await
            .unwrap();
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap();
        for message in messages {
            at = message["at"].as_u64().unwrap();
            all.push(b64::decode(message["data"].as_str().unwrap()).unwrap());
        }
        if messages.len() < 100 {
            return all;
        }
    }
    panic!("more pages than messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_kill_9_at_several_points() {
    let dir = tempfile::tempdir().unwrap();
    let owners: Vec<_> = (1..=4).map(secret).collect();
    let mut acknowledged: Vec<(usize, Vec<u8>)> = Vec::new();
    // Kill after 60 and 130 acknowledgements (others in flight), then after all 200.
    for (round, kill_after) in [60usize, 130, 200].into_iter().enumerate() {
        let mut relay = start_relay(dir.path(), false);
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..200usize {
            let owner = i % owners.len();
            let key = owners[owner].public_key();
            let mut data = vec![0u8; 150];
            data[..16].copy_from_slice(&((round * 1000 + i) as u128).to_be_bytes());
            let http = relay.http_addr();
            sends.spawn(async move {
                let result = http_post(http, &send_body(&key, &data)).await;
                (owner, data, result)
            });
        }
        let mut acked = 0;
        while let Some(joined) = sends.join_next().await {
            let (owner, data, result) = joined.unwrap();
            if let Ok((200, _)) = result {
                acknowledged.push((owner, data));
                acked += 1;
                if acked == kill_after {
                    relay.kill();
                }
            }
        }
        assert!(
            acked >= kill_after,
            "round {round}: only {acked} acknowledged"
        );
        relay.kill();
    }

    let relay = start_relay(dir.path(), false);
    let mut received: Vec<HashSet<Vec<u8>>> = Vec::new();
    for owner in &owners {
        received.push(
            receive_all(relay.http_addr(), owner)
                .await
                .into_iter()
                .collect(),
        );
    }
    let missing = acknowledged
        .iter()
        .filter(|(owner, data)| !received[*owner].contains(data))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged sends lost",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 390);
}

#[tokio::test]
async fn prints_where_it_listens_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = start_relay(dir.path(), true);
    let udp = relay.udp_addr().unwrap();
    assert_eq!(udp.ip(), relay.http_addr().ip());
    let (status, info) = http_get_info(relay.http_addr()).await;
    assert_eq!(status, 200);
    assert_eq!(info["udp_port"], udp.port());
    // SIGTERM.
    let status = relay.stop().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

async fn http_get_info(addr: SocketAddr) -> (u16, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /.well-known/connectoid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn exit_codes_and_help() {
    let help = relay_bin().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--http",
        "--udp",
        "--data",
        "--store",
        "--config",
        "--tls-cert",
        "--tls-key",
        "--max-pending",
        "--send-rate-ip",
        "--message-ttl",
        "--api-key",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
    let bad = relay_bin().arg("--no-such-flag").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "http = 5\n").unwrap();
    let bad_file = relay_bin().arg("--config").arg(&config).output().unwrap();
    assert_eq!(bad_file.status.code(), Some(2));
    let store = relay_bin()
        .args(["--http", "127.0.0.1:0", "--store", "postgres://127.0.0.1:1"])
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    // A store URL the relay does not know is a bad flag: exit 2.
    assert_eq!(store.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&store.stderr).contains("unsupported store"));
    // Redis that does not answer: exit 1 with the reason (nothing listens on port 1).
    let redis = relay_bin()
        .args(["--http", "127.0.0.1:0", "--store", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(redis.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&redis.stderr);
    assert!(
        stderr.contains("cannot reach redis://127.0.0.1:1"),
        "{stderr}"
    );
    // A malformed Redis URL is a bad flag: exit 2.
    let bad = relay_bin()
        .args(["--store", "redis://127.0.0.1:1?color=blue"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown parameter"));
}

/// The `connectoid-relay: ...` line a failed start printed on stderr.
fn error_line(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find(|line| line.starts_with("connectoid-relay: "))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"))
        .to_owned()
}

/// Asserts that no part of an error chain (`a: b: c`) comes twice.
fn assert_each_cause_once(line: &str) {
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "{part:?} is said twice in {line:?}"
        );
    }
}

#[test]
fn a_failed_start_names_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = relay_command().data_dir(dir.path()).start().unwrap();

    // A second relay on the first one's port (its own data directory).
    let other = tempfile::tempdir().unwrap();
    let port_taken = relay_bin()
        .args(["--http", &first.http_addr().to_string(), "--data"])
        .arg(other.path())
        .output()
        .unwrap();
    assert_eq!(port_taken.status.code(), Some(1));
    let line = error_line(&port_taken);
    assert!(
        line.contains(&format!(
            "cannot listen for HTTP on {}: ",
            first.http_addr()
        )),
        "{line}"
    );
    assert_eq!(line.matches("in use").count(), 1, "{line}");
    assert_each_cause_once(&line);

    // A second relay on the first one's data directory (locked).
    let locked = relay_bin()
        .args(["--http", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(locked.status.code(), Some(1));
    let line = error_line(&locked);
    assert!(line.contains("cannot open the store: "), "{line}");
    assert_eq!(line.matches("storage unavailable").count(), 1, "{line}");
    assert_eq!(line.matches("lock").count(), 1, "{line}");
    assert_each_cause_once(&line);
}

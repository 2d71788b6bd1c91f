//! What a relay operator and a browser meet (issue 15): `Retry-After` on
//! every 429, `GET /` saying what the server is, log lines that read as
//! sentences, one log line per storage health change instead of one per
//! `/healthz`, and a private data directory.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request as HttpRequest, StatusCode};
use connectoid_relay::Rate;
use connectoid_relay::testing::{Listening, spawn_listening};
use tower::ServiceExt as _;

use crate::common::*;

/// `POST /` with `body` from `ip`: status and headers.
async fn post_headers(relay: &TestRelay, ip: &str, body: String) -> (StatusCode, HeaderMap) {
    let mut request = HttpRequest::post("/").body(Body::from(body)).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(std::net::SocketAddr::new(
            ip.parse().unwrap(),
            40000,
        )));
    let response = relay.router.clone().oneshot(request).await.unwrap();
    (response.status(), response.headers().clone())
}

#[tokio::test]
async fn every_429_carries_retry_after_from_the_buckets_refill_time() {
    // 6 a minute: a token every 10 s.
    let relay = TestRelay::new(|config| config.limits.rate.check_per_ip = Some(Rate::new(6, 2)));
    let key = secret(40).public_key();
    for _ in 0..2 {
        let (status, headers) = post_headers(&relay, "192.0.2.9", check_body(&key, 0)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get("retry-after").is_none());
    }
    let (status, headers) = post_headers(&relay, "192.0.2.9", check_body(&key, 0)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "10");

    // Send per mailbox per source is a third of the mailbox's rate: 3 a
    // minute, one token every 20 s.
    let relay =
        TestRelay::new(|config| config.limits.rate.send_per_mailbox = Some(Rate::new(9, 3)));
    let key = secret(41).public_key();
    let mut last = (StatusCode::OK, HeaderMap::new());
    for _ in 0..4 {
        last = post_headers(&relay, "192.0.2.9", send_body(&key, &[1; 200])).await;
    }
    assert_eq!(last.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last.1["retry-after"], "20");

    // A full mailbox is a 429 too.
    let relay = TestRelay::new(|config| config.limits.max_pending_per_mailbox = 1);
    let key = secret(42).public_key();
    post_headers(&relay, "192.0.2.9", send_body(&key, &[1; 200])).await;
    let (status, headers) = post_headers(&relay, "192.0.2.9", send_body(&key, &[2; 200])).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "60");
}

#[tokio::test]
async fn get_root_says_what_this_server_is() {
    let relay = TestRelay::new(|_| {});
    let (status, headers, body) = relay.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["api"], "POST /");
    assert_eq!(json["info"], "/.well-known/connectoid");

    let request = HttpRequest::get("/")
        .header("accept", "text/html,application/xhtml+xml")
        .body(Body::empty())
        .unwrap();
    let response = relay.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(page.contains("Connectoid relay"), "{page}");
    assert!(page.contains("href=\".well-known/connectoid\""), "{page}");

    // Other methods on / are still refused.
    let request = HttpRequest::put("/").body(Body::empty()).unwrap();
    let response = relay.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// Starts the relay binary with `args` on `data`, its log (`RUST_LOG=info`)
/// written to `log`.
fn start_logged(data: &Path, log: &Path, args: &[&str]) -> Listening {
    let mut command = relay_command()
        .data_dir(data)
        .args(args.iter().copied())
        .log("info")
        .command()
        .unwrap();
    command.stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    spawn_listening(command, true, false).unwrap()
}

fn stop(mut listening: Listening) {
    listening.child.kill().unwrap();
    listening.child.wait().unwrap();
}

/// `GET path` over a fresh connection: the status.
async fn get_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_new_data_directory_is_private_and_an_open_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new/data");
    let log = dir.path().join("relay.log");
    let relay = start_logged(&data, &log, &[]);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("relay.redb")), 0o600);
    stop(relay);
    let text = std::fs::read_to_string(&log).unwrap();
    // Log lines read as sentences, not Rust debug text.
    assert!(
        text.contains("relay listening: http on 127.0.0.1:"),
        "{text}"
    );
    assert!(!text.contains("Some("), "{text}");
    assert!(!text.contains("group or others"), "{text}");

    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let relay = start_logged(&open, &log, &[]);
    stop(relay);
    assert_eq!(
        mode(&open),
        0o755,
        "an operator's directory is left as it is"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("has mode 755: group or others can read it"),
        "{text}"
    );
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_logs_a_storage_outage_once_not_per_probe() {
    let Some(mut redis) = connectoid_relay::testing::RedisServer::start("healthz outage") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let relay = start_logged(dir.path(), &log, &["--store", &redis.url()]);
    let addr = relay.http.unwrap();
    assert_eq!(get_status(addr, "/healthz").await, 200);
    redis.stop();
    for _ in 0..5 {
        assert_eq!(get_status(addr, "/healthz").await, 503);
    }
    redis.restart();
    let mut back = false;
    for _ in 0..200 {
        if get_status(addr, "/healthz").await == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(back, "the relay never saw Redis again");
    stop(relay);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("storage is unavailable").count(), 1, "{text}");
    assert_eq!(
        text.matches("storage is available again").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("ERROR"), "{text}");
}

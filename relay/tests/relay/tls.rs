//! HTTPS without a reverse proxy: `--tls-cert`/`--tls-key` (here through
//! `Config::tls`) serve the same API over TLS, and bad files fail cleanly.
//!
//! `fixtures/tls-*.pem` is a self-signed P-256 certificate for `localhost`
//! and 127.0.0.1, made for these tests only. The client verifies it at a fixed
//! time (2030), so the test does not depend on the machine's clock.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use connectoid_relay::{Config, Server, SpawnError, TlsConfig};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[derive(Debug)]
struct In2030;

impl rustls::time_provider::TimeProvider for In2030 {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            1_900_000_000,
        )))
    }
}

/// `GET path` over TLS, trusting only the fixture certificate.
fn https_get(addr: std::net::SocketAddr, path: &str) -> String {
    https_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .0
}

/// Sends `request` over TLS (trusting only the fixture certificate) and
/// reads until the relay closes the connection or 60 s pass: what was read,
/// and how reading ended.
fn https_exchange(addr: std::net::SocketAddr, request: &str) -> (String, std::io::Result<usize>) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("tls-cert.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_details(provider, Arc::new(In2030))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(AT_MOST)).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    // A peer closing without close_notify is an error to rustls; the bytes
    // read before it are what matters.
    let ended = tls.read_to_end(&mut response);
    (String::from_utf8(response).unwrap(), ended)
}

/// How long a test waits for the relay to close a connection by itself (its
/// timeouts are 1 s here): far more than needed, so only a relay that never
/// closes it fails.
const AT_MOST: Duration = Duration::from_secs(60);

/// Whether reading ended because the peer closed (not because `AT_MOST` passed).
fn closed_by_peer(ended: &std::io::Result<usize>) -> bool {
    match ended {
        Ok(_) => true,
        Err(error) => !matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn tls_config(dir: &std::path::Path) -> Config {
    let mut config = Config::for_tests(dir);
    config.tls = Some(TlsConfig {
        cert: fixture("tls-cert.pem"),
        key: fixture("tls-key.pem"),
    });
    config
}

/// HTTPS connections live under the timeouts of plain HTTP: one that never
/// starts its TLS handshake, and one kept alive and idle after a request,
/// are both closed after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_connections_are_closed_when_slow_or_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tls_config(dir.path());
    config.connections.header_timeout = Duration::from_secs(1);
    let server = Server::spawn(config).await.unwrap();
    let addr = server.http_addr();
    let no_handshake = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(AT_MOST)).unwrap();
        let mut bytes = Vec::new();
        let ended = socket.read_to_end(&mut bytes);
        (bytes, ended)
    });
    let kept_alive = tokio::task::spawn_blocking(move || {
        https_exchange(addr, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    });
    let (bytes, ended) = no_handshake.await.unwrap();
    assert!(
        closed_by_peer(&ended),
        "a stalled handshake was kept: {ended:?}"
    );
    assert!(bytes.is_empty(), "{bytes:?}");
    let (response, ended) = kept_alive.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        closed_by_peer(&ended),
        "an idle connection was kept: {ended:?}"
    );
    server.shutdown().await.unwrap();
}

/// The connection cap holds for HTTPS: with the relay full of connections
/// that never start their handshake, a normal HTTPS request is still
/// answered, because the oldest of them is closed to make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_connections_are_capped() {
    const CAP: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut config = tls_config(dir.path());
    config.connections.header_timeout = Duration::from_secs(3600);
    config.connections.max_total = CAP;
    let server = Server::spawn(config).await.unwrap();
    let addr = server.http_addr();
    let mut stalled = Vec::new();
    for _ in 0..CAP {
        stalled.push(std::net::TcpStream::connect(addr).unwrap());
    }
    // Bounded wait until the relay has taken all of them in.
    let mut full = false;
    for _ in 0..600 {
        if server
            .relay()
            .metrics_text()
            .await
            .contains(&format!("connectoid_connections {CAP}\n"))
        {
            full = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(full, "{}", server.relay().metrics_text().await);
    let response = tokio::task::spawn_blocking(move || https_get(addr, "/healthz"))
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"ok":true}"#), "{response}");
    // The oldest stalled connection was the one closed.
    let oldest = stalled.remove(0);
    let ended = tokio::task::spawn_blocking(move || {
        let mut oldest = oldest;
        oldest.set_read_timeout(Some(AT_MOST)).unwrap();
        oldest.read_to_end(&mut Vec::new())
    })
    .await
    .unwrap();
    assert!(closed_by_peer(&ended), "{ended:?}");
    let metrics = server.relay().metrics_text().await;
    assert!(
        metrics.contains(r#"connectoid_connections_closed_total{reason="evicted"} 1"#),
        "{metrics}"
    );
    drop(stalled);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_api_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.tls = Some(TlsConfig {
        cert: fixture("tls-cert.pem"),
        key: fixture("tls-key.pem"),
    });
    let server = Server::spawn(config).await.unwrap();
    let addr = server.http_addr();
    let response = tokio::task::spawn_blocking(move || https_get(addr, "/healthz"))
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"ok":true}"#), "{response}");
    // Plain HTTP on the TLS port gets no API answer.
    let plain = common_http_post(addr).await;
    assert!(!plain.contains(r#""ok""#), "{plain}");
    server.shutdown().await.unwrap();
}

async fn common_http_post(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn bad_tls_files_fail_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.tls = Some(TlsConfig {
        cert: dir.path().join("missing.pem"),
        key: fixture("tls-key.pem"),
    });
    let error = Server::spawn(config.clone()).await.unwrap_err();
    assert!(matches!(error, SpawnError::Tls(_)), "{error}");
    config.tls = Some(TlsConfig {
        cert: fixture("tls-key.pem"),
        key: fixture("tls-key.pem"),
    });
    let error = Server::spawn(config).await.unwrap_err();
    assert!(matches!(error, SpawnError::Tls(_)), "{error}");
    // The store was closed again: the directory can be opened.
    let config = Config::for_tests(dir.path());
    Server::spawn(config)
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}

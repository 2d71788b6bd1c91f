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
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    // A peer closing without close_notify is an error to rustls; the bytes
    // read before it are what matters.
    let _ = tls.read_to_end(&mut response);
    String::from_utf8(response).unwrap()
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

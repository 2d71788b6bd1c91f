//! The `connectoid` CLI against an HTTPS relay with a self-signed
//! certificate made the way README.md says (OpenSSL 3, `CA:FALSE`; rcgen
//! where `openssl` is absent): without its root the error says what to do;
//! `relays add --root-cert` keeps the root in the profile for later
//! commands. A certificate made the usual OpenSSL way (`CA:TRUE`) is refused
//! with the same advice.

use std::path::Path;
use std::process::Command;

use super::cli::{ok, run};

/// Makes a self-signed certificate for 127.0.0.1 in `dir` with `openssl`
/// (with `extra` -addext values); `None` when openssl is not installed.
fn openssl_certificate(dir: &Path, name: &str, extra: &[&str]) -> Option<(String, String)> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let mut command = Command::new("openssl");
    command.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "365",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ]);
    for value in extra {
        command.args(["-addext", value]);
    }
    command.arg("-keyout").arg(&key).arg("-out").arg(&cert);
    let output = command.output().ok()?;
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some((
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    ))
}

/// A relay on 127.0.0.1 serving HTTPS with `cert` and `key`.
fn https_relay(
    runtime: &tokio::runtime::Runtime,
    data: &Path,
    cert: &str,
    key: &str,
) -> (connectoid_relay::Server, String) {
    let mut config = connectoid_relay::Config::for_tests(data);
    config.tls = Some(connectoid_relay::TlsConfig {
        cert: cert.into(),
        key: key.into(),
    });
    let server = runtime
        .block_on(connectoid_relay::Server::spawn(config))
        .unwrap();
    let url = format!("https://{}/", server.http_addr());
    (server, url)
}

#[test]
fn a_self_signed_relay_is_explained_and_its_root_kept() {
    let files = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The recipe README.md gives: a self-signed certificate that is not a CA.
    let (cert, key) = match openssl_certificate(
        files.path(),
        "leaf",
        &["basicConstraints=critical,CA:FALSE"],
    ) {
        Some(made) => made,
        None => {
            eprintln!("openssl is not installed: making the certificate with rcgen");
            let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let cert = files.path().join("leaf.pem");
            let key = files.path().join("leaf.key");
            std::fs::write(&cert, made.cert.pem()).unwrap();
            std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
            (
                cert.to_str().unwrap().to_owned(),
                key.to_str().unwrap().to_owned(),
            )
        }
    };
    let data = tempfile::tempdir().unwrap();
    let (server, url) = https_relay(&runtime, data.path(), &cert, &key);
    let profile = tempfile::tempdir().unwrap();
    let profile = profile.path();

    // Without the root: one sentence that says what to do.
    let output = run(profile, &["relay", "info", &url]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(
            "the relay's certificate is not trusted (self-signed?): pass --root-cert FILE"
        ),
        "{stderr}"
    );
    let output = run(profile, &["relays", "add", &url, "--strict"]);
    assert_eq!(output.status.code(), Some(1));

    // With it, `relays add` keeps it; later commands need no flag.
    let output = run(
        profile,
        &["--root-cert", &cert, "relays", "add", &url, "--strict"],
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("kept the root certificate"), "{stderr}");
    let probe = ok(profile, &["relays", "probe"]);
    assert!(probe.contains("healthy"), "{probe}");
    assert!(!probe.contains("unhealthy"), "{probe}");
    let link = ok(profile, &["share", "Bob", "--strict"]);
    assert!(connectoid::Link::decode(link.trim()).is_ok(), "{link}");
    // The environment variable works as the flag does.
    let other = tempfile::tempdir().unwrap();
    let output = Command::new(connectoid_tests::cli_binary().unwrap())
        .arg("--profile")
        .arg(other.path())
        .args(["relay", "info", &url])
        .env("CONNECTOID_ROOT_CERT", &cert)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    runtime.block_on(server.shutdown()).unwrap();

    // The usual OpenSSL 3 way marks the certificate CA:TRUE: refused even as
    // its own root, with the same advice (rustls: CaUsedAsEndEntity).
    if let Some((ca_cert, ca_key)) = openssl_certificate(files.path(), "ca", &[]) {
        let data = tempfile::tempdir().unwrap();
        let (server, url) = https_relay(&runtime, data.path(), &ca_cert, &ca_key);
        let output = run(profile, &["--root-cert", &ca_cert, "relay", "info", &url]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("not trusted (self-signed?)"), "{stderr}");
        runtime.block_on(server.shutdown()).unwrap();
    }
}

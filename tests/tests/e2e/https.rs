//! A private relay over HTTPS: the client refuses its self-signed
//! certificate until the certificate is added as an extra root.

use connectoid::{Client, ClientError, Event, RelayError, ShareOptions};
use connectoid_tests::{entries, init_tracing, poll_until};
use serde_json::json;

#[tokio::test]
async fn https_relay_with_an_extra_root_certificate() -> anyhow::Result<()> {
    init_tracing();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
    let files = tempfile::tempdir()?;
    let cert_path = files.path().join("cert.pem");
    let key_path = files.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem())?;
    std::fs::write(&key_path, certified.signing_key.serialize_pem())?;
    let data = tempfile::tempdir()?;
    let mut config = connectoid_relay::Config::for_tests(data.path());
    config.tls = Some(connectoid_relay::TlsConfig {
        cert: cert_path,
        key: key_path,
    });
    let server = connectoid_relay::Server::spawn(config).await?;
    let url = connectoid::RelayUrl::parse(&format!("https://{}/", server.http_addr()))
        .map_err(anyhow::Error::msg)?;

    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let pem = certified.cert.pem();
    let alice = Client::builder(dirs[0].path())
        .add_root_certificates_pem(pem.as_bytes())
        .build()?;
    let link = alice
        .share(
            "Bob",
            ShareOptions::with_relays(entries(std::slice::from_ref(&url))),
        )
        .await?;

    // Without the root, the TLS handshake fails and nothing is sent.
    let stranger = Client::builder(dirs[1].path()).build()?;
    let error = stranger
        .accept(&link, "Alice", json!({}), Default::default())
        .await
        .unwrap_err();
    let ClientError::NoRelayAccepted(report) = error else {
        panic!("{error}");
    };
    assert!(
        matches!(
            report.outcome(&url),
            Some(Err(RelayError::UntrustedCertificate(_)))
        ),
        "{report}"
    );
    assert!(
        stranger.peers().await.is_empty(),
        "a failed accept leaves nothing"
    );

    // With it, the whole exchange works.
    let bob = Client::builder(dirs[2].path())
        .add_root_certificates_pem(pem.as_bytes())
        .build()?;
    bob.accept(&link, "Alice", json!({"offer": "tls"}), Default::default())
        .await?;
    let events = poll_until(&alice, |e| !e.is_empty()).await?;
    assert!(matches!(&events[0], Event::PeerConnected { body, .. } if body["offer"] == "tls"));
    assert!(alice.probe(&url).await.is_healthy());

    // A PEM without a certificate is a build error.
    assert!(
        Client::builder(dirs[1].path().join("x"))
            .add_root_certificates_pem(b"not pem")
            .build()
            .is_err()
    );
    server.shutdown().await?;
    Ok(())
}

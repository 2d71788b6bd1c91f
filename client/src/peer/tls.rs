//! The TLS side of a peer link: a fresh self-signed certificate per session,
//! its SHA-256 fingerprint, and rustls verifiers that accept exactly one
//! pinned fingerprint (as server and as client: authentication is mutual).
//!
//! Nothing here trusts a certificate authority or a name: the only thing
//! checked is that the peer's end-entity certificate hashes to the
//! fingerprint that came in its signed offer or answer, and that the peer
//! signs the handshake with that certificate's key. The crypto provider is
//! aws-lc-rs, passed explicitly (no process-wide default is installed).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{Fingerprint, PeerError};

/// The ALPN protocol both sides offer.
pub(crate) const ALPN: &[u8] = b"connectoid-p2p/1";
/// The server name the dialer uses (it is not checked; the pin is).
pub(crate) const SERVER_NAME: &str = "connectoid.invalid";

/// A session's certificate and private key.
pub(crate) struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    pub(crate) fingerprint: Fingerprint,
}

impl Identity {
    /// A fresh self-signed certificate (rcgen's default: ECDSA P-256).
    pub(crate) fn generate() -> Result<Self, PeerError> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let cert = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let fingerprint = Fingerprint::of_certificate(&cert);
        Ok(Self {
            cert,
            key,
            fingerprint,
        })
    }

    /// The quinn server configuration: our certificate, the peer's pinned.
    pub(crate) fn server_config(
        &self,
        peer: Fingerprint,
        idle: Duration,
        initial_rtt: Option<Duration>,
    ) -> Result<quinn::ServerConfig, PeerError> {
        let provider = provider();
        let verifier = Arc::new(Pinned::new(peer, &provider));
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.private_key())
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport(idle, initial_rtt)?);
        Ok(config)
    }

    /// The quinn client configuration: our certificate, the peer's pinned.
    pub(crate) fn client_config(
        &self,
        peer: Fingerprint,
        idle: Duration,
        initial_rtt: Option<Duration>,
    ) -> Result<quinn::ClientConfig, PeerError> {
        let provider = provider();
        let verifier = Arc::new(Pinned::new(peer, &provider));
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.cert.clone()], self.private_key())
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport(idle, initial_rtt)?);
        Ok(config)
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_error(e: rustls::Error) -> PeerError {
    PeerError::Tls(e.to_string())
}

/// The QUIC transport settings of a peer link: `idle` timeout, and the
/// round trip to assume before the first sample (quinn's default, 333 ms,
/// when `None`), which paces the retransmissions of the handshake.
fn transport(
    idle: Duration,
    initial_rtt: Option<Duration>,
) -> Result<Arc<quinn::TransportConfig>, PeerError> {
    let mut transport = quinn::TransportConfig::default();
    if let Some(rtt) = initial_rtt {
        transport.initial_rtt(rtt);
    }
    let idle = quinn::IdleTimeout::try_from(idle).map_err(|e| PeerError::Tls(e.to_string()))?;
    transport.max_idle_timeout(Some(idle));
    Ok(Arc::new(transport))
}

/// Accepts exactly one certificate, by fingerprint; checks handshake
/// signatures with the provider's algorithms.
#[derive(Debug)]
struct Pinned {
    fingerprint: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Pinned {
    fn new(fingerprint: Fingerprint, provider: &CryptoProvider) -> Self {
        Self {
            fingerprint,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if intermediates.is_empty() && Fingerprint::of_certificate(end_entity) == self.fingerprint {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

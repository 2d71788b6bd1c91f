//! A real local push receiver: the receiving side of RFC 8030 (a push
//! service's endpoint) on 127.0.0.1 port 0, for the push tests and the
//! bench.
//!
//! Every POST to any path is kept with its headers and body. For a Web Push
//! subscription made by [`PushReceiver::web_push_keys`], [`Received::open`]
//! decrypts the RFC 8291 `aes128gcm` body with the subscription's private
//! key and checks the RFC 8292 VAPID token (signature with the relay's
//! published key, `aud`, `exp`). The answer status is settable, so that a
//! test can play a push service that says 404 or 410.
//!
//! It does not forward pushes anywhere or keep subscriptions beyond the one
//! key pair it made.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use connectoid::protocol::b64;
use web_push_native::jwt_simple::prelude::{
    ECDSAP256PublicKeyLike as _, ES256PublicKey, NoCustomClaims, VerificationOptions,
};
use web_push_native::{Auth, p256};

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path (which endpoint).
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The body as sent.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Checks the VAPID token against `vapid_public_key` (base64url of the
    /// uncompressed point, as the relay publishes it) with audience
    /// `audience`, and decrypts the body with the receiver's subscription
    /// key: the plaintext.
    pub fn open(&self, receiver: &PushReceiver, vapid_public_key: &str, audience: &str) -> Vec<u8> {
        assert_eq!(self.header("content-encoding"), Some("aes128gcm"));
        let authorization = self.header("authorization").expect("VAPID authorization");
        let rest = authorization.strip_prefix("vapid ").expect("vapid scheme");
        let (mut token, mut key) = (None, None);
        for part in rest.split(',').map(str::trim) {
            if let Some(t) = part.strip_prefix("t=") {
                token = Some(t);
            } else if let Some(k) = part.strip_prefix("k=") {
                key = Some(k);
            }
        }
        assert_eq!(key, Some(vapid_public_key), "k= is the published key");
        let public =
            ES256PublicKey::from_bytes(&b64::decode(vapid_public_key).expect("key base64"))
                .expect("a P-256 key");
        let options = VerificationOptions {
            allowed_audiences: Some([audience.to_owned()].into_iter().collect()),
            ..VerificationOptions::default()
        };
        let claims = public
            .verify_token::<NoCustomClaims>(token.expect("t="), Some(options))
            .expect("a valid VAPID token");
        let expires = claims.expires_at.expect("exp").as_secs();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(
            expires > now && expires <= now + 24 * 3600,
            "exp within 24 h"
        );
        web_push_native::decrypt(self.body.clone(), &receiver.secret, &receiver.auth)
            .expect("the body decrypts with the subscription key")
    }
}

struct Shared {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
}

/// The receiver; stops when dropped.
pub struct PushReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    secret: p256::SecretKey,
    auth: Auth,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    shared.received.lock().expect("lock").push(Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
        at: Instant::now(),
    });
    StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::CREATED)
}

impl PushReceiver {
    /// Listens on 127.0.0.1 port 0 and answers 201 Created.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            received: Mutex::default(),
            status: AtomicU16::new(201),
        });
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let secret = loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).map_err(std::io::Error::other)?;
        Ok(Self {
            addr,
            shared,
            secret,
            auth: Auth::clone_from_slice(&auth),
            task,
        })
    }

    /// The endpoint URL for `path` (such as `/a`).
    pub fn endpoint(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The VAPID audience of this receiver's endpoints as the relay signs
    /// it (`web-push-native` names scheme and host, not the port).
    pub fn audience(&self) -> String {
        format!("http://{}", self.addr.ip())
    }

    /// The subscription's `p256dh` and `auth`, base64url, as a browser's
    /// `PushSubscription.toJSON().keys` holds them.
    pub fn web_push_keys(&self) -> serde_json::Value {
        use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let point = self.secret.public_key().to_encoded_point(false);
        serde_json::json!({
            "p256dh": b64::encode(point.as_bytes()),
            "auth": b64::encode(&self.auth),
        })
    }

    /// Answers later POSTs with `status`.
    pub fn answer_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// What was received for `path`.
    pub fn received_at(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits (in 20 ms steps, at most `limit`) until `path` got `count`
    /// POSTs; what it got.
    pub async fn wait_for(&self, path: &str, count: usize, limit: Duration) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let got = self.received_at(path);
            if got.len() >= count || started.elapsed() > limit {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PushReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! The UDP check fast path, client side: one datagram to a relay asks about
//! up to [`limits::MAX_CHECKS_PER_DATAGRAM`] mailboxes at once.
//!
//! Relay host names are resolved with hickory-resolver and the addresses
//! cached until the DNS answer expires. A request is sent up to
//! `attempts` times, each with a fresh random nonce, waiting
//! `attempt_timeout` for an answer after each; an answer counts only if it
//! decodes and echoes the nonce of one of the attempts. Silence after the last attempt is [`UdpError::Silent`], and the
//! caller falls back to HTTP `check`.
//!
//! [`reflexive`] sends the same check datagram from a peer link's socket
//! before QUIC takes it, to learn the address (and NAT mapping) the relays
//! see for that socket, and the round trip to them.
//!
//! This module does not decide when UDP is used (the relay's information
//! document does) and never fetches messages: a `Found` status is followed
//! by HTTP `check` and `receive`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use connectoid_protocol::limits;
use connectoid_protocol::udp::{CheckRequest, CheckResponse, CheckStatus, MailboxCheck, NONCE_LEN};
use hickory_resolver::TokioResolver;

/// Why a UDP check gave no answer. The caller falls back to HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum UdpError {
    /// The relay's host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    /// The socket could not be opened or used.
    #[error("socket: {0}")]
    Io(String),
    /// No valid answer came after every attempt.
    #[error("no answer after {attempts} attempts")]
    Silent { attempts: u32 },
}

/// Sends UDP checks; holds the resolver and its cache.
pub(crate) struct UdpChecker {
    resolver: Option<TokioResolver>,
    cache: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
    attempt_timeout: Duration,
    attempts: u32,
}

impl std::fmt::Debug for UdpChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpChecker")
            .field("attempt_timeout", &self.attempt_timeout)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl UdpChecker {
    /// A checker using the system's DNS configuration. Without one (no
    /// `/etc/resolv.conf`), only relays named by IP address can use UDP.
    pub(crate) fn new(attempt_timeout: Duration, attempts: u32) -> Self {
        let resolver = match TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(resolver) => Some(resolver),
            Err(e) => {
                tracing::warn!(
                    "no DNS resolver for the UDP check ({e}); relays named by host name use HTTP only"
                );
                None
            }
        };
        Self {
            resolver,
            cache: Mutex::new(HashMap::new()),
            attempt_timeout,
            attempts: attempts.max(1),
        }
    }

    /// The wait for an answer after each attempt.
    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// How many attempts are made.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Resolves the relay URL's host to addresses, using the cache.
    pub(crate) async fn resolve(&self, host: &url::Host<&str>) -> Result<Vec<IpAddr>, UdpError> {
        let name = match host {
            url::Host::Ipv4(ip) => return Ok(vec![IpAddr::V4(*ip)]),
            url::Host::Ipv6(ip) => return Ok(vec![IpAddr::V6(*ip)]),
            url::Host::Domain(name) => *name,
        };
        if let Ok(cache) = self.cache.lock()
            && let Some((addrs, until)) = cache.get(name)
            && *until > Instant::now()
        {
            return Ok(addrs.clone());
        }
        let resolver = self.resolver.as_ref().ok_or_else(|| UdpError::Resolve {
            host: name.to_owned(),
            reason: "no resolver".to_owned(),
        })?;
        let lookup = resolver
            .lookup_ip(name)
            .await
            .map_err(|e| UdpError::Resolve {
                host: name.to_owned(),
                reason: e.to_string(),
            })?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(UdpError::Resolve {
                host: name.to_owned(),
                reason: "no addresses".to_owned(),
            });
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(name.to_owned(), (addrs.clone(), lookup.valid_until()));
        }
        Ok(addrs)
    }

    /// Checks up to [`limits::MAX_CHECKS_PER_DATAGRAM`] mailboxes at the
    /// relay whose URL host is `host`, on `port`. Returns one status per
    /// check, in order, and the source address the relay saw, if it said.
    pub(crate) async fn check(
        &self,
        host: &url::Host<&str>,
        port: u16,
        ext: Option<String>,
        checks: Vec<MailboxCheck>,
    ) -> Result<(Vec<CheckStatus>, Option<SocketAddr>), UdpError> {
        let ip = *self
            .resolve(host)
            .await?
            .first()
            .ok_or_else(|| UdpError::Io("no address".to_owned()))?;
        let target = SocketAddr::new(ip, port);
        let local: SocketAddr = match ip {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = tokio::net::UdpSocket::bind(local)
            .await
            .map_err(|e| UdpError::Io(e.to_string()))?;
        socket
            .connect(target)
            .await
            .map_err(|e| UdpError::Io(e.to_string()))?;
        let mut sent: Vec<CheckRequest> = Vec::new();
        let mut buf = vec![0u8; limits::MAX_DATAGRAM_LEN + 1];
        for attempt in 1..=self.attempts {
            // Every attempt has a fresh nonce; a late answer to an earlier
            // attempt still counts.
            let mut nonce = [0u8; NONCE_LEN];
            rand_core::Rng::fill_bytes(&mut crate::rng::system_rng(), &mut nonce);
            let request = CheckRequest {
                nonce,
                ext: ext.clone(),
                checks: checks.clone(),
            };
            // A refused send (ICMP port unreachable from an earlier attempt)
            // is silence as far as the caller is concerned.
            if let Err(e) = socket.send(&request.encode()).await {
                tracing::debug!(%target, attempt, "UDP send failed: {e}");
            }
            sent.push(request);
            let deadline = tokio::time::Instant::now() + self.attempt_timeout;
            loop {
                let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
                let len = match received {
                    Err(_) => break,
                    Ok(Err(e)) => {
                        tracing::debug!(%target, attempt, "UDP receive failed: {e}");
                        // Connection refused arrives at once; wait out the
                        // attempt so retries stay spaced.
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                    Ok(Ok(len)) => len,
                };
                match CheckResponse::decode(&buf[..len]) {
                    Ok(response) if sent.iter().any(|r| response.answers(r)) => {
                        return Ok((response.statuses, response.observed.map(SocketAddr::from)));
                    }
                    Ok(_) => tracing::debug!(%target, "ignoring a UDP answer to another request"),
                    Err(e) => tracing::debug!(%target, "ignoring a malformed UDP answer: {e}"),
                }
            }
        }
        Err(UdpError::Silent {
            attempts: self.attempts,
        })
    }
}

/// What one relay said about a peer link's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reflexive {
    /// The relay's UDP address the check went to.
    pub(crate) relay: SocketAddr,
    /// The source address the relay saw: the socket's address after every
    /// NAT on the way.
    pub(crate) observed: SocketAddr,
    /// From sending the answered attempt to its answer.
    pub(crate) rtt: Duration,
}

/// Sends a check datagram from `socket` to each of `relays` (UDP
/// addresses) and collects the source address each relay saw, with the
/// round trip. The check asks about the all-zero key, which no mailbox
/// has: only the observed address matters. Each relay not answered yet
/// gets up to `attempts` datagrams (a fresh nonce each), `attempt_timeout`
/// apart; relays that stay silent are left out of the result.
pub(crate) async fn reflexive(
    socket: &tokio::net::UdpSocket,
    relays: &[SocketAddr],
    attempt_timeout: Duration,
    attempts: u32,
) -> Vec<Reflexive> {
    let mut found: Vec<Reflexive> = Vec::new();
    // Nonce -> (relay, when sent).
    let mut sent: HashMap<[u8; NONCE_LEN], (SocketAddr, Instant)> = HashMap::new();
    let mut buf = vec![0u8; limits::MAX_DATAGRAM_LEN + 1];
    for attempt in 1..=attempts.max(1) {
        let waiting: Vec<SocketAddr> = relays
            .iter()
            .copied()
            .filter(|r| !found.iter().any(|f| f.relay == *r))
            .collect();
        if waiting.is_empty() {
            break;
        }
        for relay in waiting {
            let mut nonce = [0u8; NONCE_LEN];
            rand_core::Rng::fill_bytes(&mut crate::rng::system_rng(), &mut nonce);
            let request = CheckRequest {
                nonce,
                ext: None,
                checks: vec![MailboxCheck {
                    key: [0; connectoid_protocol::keys::PUBLIC_KEY_LEN],
                    at: connectoid_protocol::At(0),
                }],
            };
            match socket.send_to(&request.encode(), relay).await {
                Ok(_) => {
                    sent.insert(nonce, (relay, Instant::now()));
                }
                Err(e) => tracing::debug!(%relay, attempt, "reflexive check: send failed: {e}"),
            }
        }
        let deadline = tokio::time::Instant::now() + attempt_timeout;
        while found.len() < relays.len() {
            let (len, from) =
                match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => {
                        // An ICMP error from an earlier send: keep listening.
                        tracing::debug!(attempt, "reflexive check: receive failed: {e}");
                        continue;
                    }
                    Ok(Ok(received)) => received,
                };
            let Ok(response) = CheckResponse::decode(&buf[..len]) else {
                continue;
            };
            let (Some(&(relay, at)), Some(observed)) =
                (sent.get(&response.nonce), response.observed)
            else {
                continue;
            };
            if relay != from || found.iter().any(|f| f.relay == relay) {
                continue;
            }
            found.push(Reflexive {
                relay,
                observed: SocketAddr::from(observed),
                rtt: at.elapsed(),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use connectoid_protocol::keys::PUBLIC_KEY_LEN;

    fn checks(n: usize) -> Vec<MailboxCheck> {
        (0..n)
            .map(|i| MailboxCheck {
                key: [i as u8; PUBLIC_KEY_LEN],
                at: connectoid_protocol::At(0),
            })
            .collect()
    }

    #[tokio::test]
    async fn answers_are_matched_by_nonce() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let (len, from) = server.recv_from(&mut buf).await.unwrap();
            let request = CheckRequest::decode(&buf[..len]).unwrap();
            // First an answer to some other request, then garbage, then the real one.
            let wrong = CheckResponse {
                nonce: [0; NONCE_LEN],
                statuses: vec![CheckStatus::Found; request.checks.len()],
                observed: None,
            };
            server.send_to(&wrong.encode(), from).await.unwrap();
            server.send_to(b"garbage", from).await.unwrap();
            let right = CheckResponse {
                nonce: request.nonce,
                statuses: vec![CheckStatus::Found, CheckStatus::NotFound],
                observed: Some(from.into()),
            };
            server.send_to(&right.encode(), from).await.unwrap();
        });
        let checker = UdpChecker::new(Duration::from_secs(5), 2);
        let (statuses, observed) = checker
            .check(&url::Host::Ipv4(Ipv4Addr::LOCALHOST), port, None, checks(2))
            .await
            .unwrap();
        assert_eq!(statuses, vec![CheckStatus::Found, CheckStatus::NotFound]);
        assert!(observed.unwrap().ip().is_loopback());
    }

    #[tokio::test]
    async fn silence_is_reported_after_every_attempt() {
        // A socket that receives and drops everything.
        let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = sink.local_addr().unwrap().port();
        let checker = UdpChecker::new(Duration::from_millis(50), 3);
        let err = checker
            .check(&url::Host::Ipv4(Ipv4Addr::LOCALHOST), port, None, checks(1))
            .await
            .unwrap_err();
        assert_eq!(err, UdpError::Silent { attempts: 3 });
        drop(sink);
    }

    #[tokio::test]
    async fn reflexive_answers_are_matched_by_nonce_and_source() {
        let relay = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let (len, from) = relay.recv_from(&mut buf).await.unwrap();
            let request = CheckRequest::decode(&buf[..len]).unwrap();
            let forged = CheckResponse {
                nonce: [9; NONCE_LEN],
                statuses: vec![CheckStatus::NotFound],
                observed: Some(SocketAddr::from(([10, 0, 0, 1], 1)).into()),
            };
            relay.send_to(&forged.encode(), from).await.unwrap();
            let right = CheckResponse {
                nonce: request.nonce,
                statuses: vec![CheckStatus::NotFound],
                observed: Some(SocketAddr::from(([192, 0, 2, 7], 4242)).into()),
            };
            relay.send_to(&right.encode(), from).await.unwrap();
        });
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let found = reflexive(
            &socket,
            &[relay_addr, silent_addr],
            Duration::from_millis(200),
            2,
        )
        .await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].relay, relay_addr);
        assert_eq!(found[0].observed, SocketAddr::from(([192, 0, 2, 7], 4242)));
        drop(silent);
    }

    #[tokio::test]
    async fn localhost_resolves() {
        let checker = UdpChecker::new(Duration::from_millis(50), 1);
        let addrs = checker
            .resolve(&url::Host::Domain("localhost"))
            .await
            .unwrap();
        assert!(addrs.iter().all(IpAddr::is_loopback), "{addrs:?}");
    }
}

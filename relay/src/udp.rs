//! The UDP check socket: one datagram in, at most one datagram out.
//!
//! Each datagram is handed to [`Relay::answer_datagram`], which decodes it,
//! applies the source's token bucket and answers with a response no larger
//! than the request (a STUN Binding request, `crate::stun`, gets at most the
//! request plus its XOR-MAPPED-ADDRESS). Malformed, rate-limited and unanswerable datagrams are
//! dropped silently: a UDP answer to a spoofed source must never be an
//! amplifier. Datagrams are handled one at a time (each is a memory lookup);
//! this module has no state of its own.
//!
//! One wake-up serves every datagram already queued on the socket
//! (`try_recv_from` until `WouldBlock`, at most [`DRAIN_LIMIT`] before the
//! shutdown channel is looked at again), and answers go out with
//! `try_send_to`, awaiting `send_to` only when the socket's buffer is full.
//! What a datagram costs is mostly wake-ups and syscalls, not the check: on
//! the 2-core bench VM (`bench --quick --only checks`, 4 clients) this took
//! 16-mailbox datagrams from 6.7-8.2 to 5.8-6.3 µs of relay CPU each; with
//! 1-mailbox datagrams, rarely queued behind one another, it changed
//! nothing measurable (7.3-9.3 µs, at 0.86-0.98 of a bare tokio echo's).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;

use connectoid_protocol::limits::MAX_DATAGRAM_LEN;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::service::Relay;

/// Serves `socket` until `shutdown` changes (or its sender is dropped).
pub(crate) async fn serve(
    socket: UdpSocket,
    relay: Arc<Relay>,
    mut shutdown: watch::Receiver<bool>,
) {
    // One byte more than the largest valid datagram, so that a longer one is
    // seen as too long rather than silently truncated to a valid length.
    let mut buffer = vec![0u8; MAX_DATAGRAM_LEN + 1];
    loop {
        // Wait until the socket is readable (or shutdown), then drain it.
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            ready = socket.readable() => {
                if let Err(error) = ready {
                    tracing::debug!(%error, "UDP socket not readable");
                    continue;
                }
            }
        }
        // Serve every queued datagram on this one wake-up: `try_recv_from`
        // clears the readiness on `WouldBlock`, after which the select above
        // waits again. A burst is bounded by `DRAIN_LIMIT` so that a busy
        // socket still lets the worker (and a shutdown) in now and then.
        for _ in 0..DRAIN_LIMIT {
            let (len, source) = match socket.try_recv_from(&mut buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => {
                    // Such as an ICMP error reported for an earlier send.
                    tracing::debug!(%error, "UDP receive failed");
                    continue;
                }
            };
            if let Some(response) = relay.answer_datagram(&buffer[..len], source).await {
                send(&socket, &response, source).await;
            }
        }
    }
}

/// How many datagrams one wake-up serves before the loop looks at the
/// shutdown channel (and lets the runtime run other tasks) again.
const DRAIN_LIMIT: usize = 64;

/// Sends `response` to `target` straight away when the socket can take it,
/// else waits until it is writable (the awaited `send_to`).
async fn send(socket: &UdpSocket, response: &[u8], target: SocketAddr) {
    let sent = match socket.try_send_to(response, target) {
        Err(error) if error.kind() == ErrorKind::WouldBlock => {
            socket.send_to(response, target).await
        }
        sent => sent,
    };
    if let Err(error) = sent {
        tracing::debug!(%error, "UDP send failed");
    }
}

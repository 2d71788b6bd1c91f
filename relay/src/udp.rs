//! The UDP check socket: one datagram in, at most one datagram out.
//!
//! Each datagram is handed to [`Relay::answer_datagram`], which decodes it,
//! applies the source's token bucket and answers with a response no larger
//! than the request (a STUN Binding request, `crate::stun`, gets at most the
//! request plus its XOR-MAPPED-ADDRESS). Malformed, rate-limited and unanswerable datagrams are
//! dropped silently: a UDP answer to a spoofed source must never be an
//! amplifier. Datagrams are handled one at a time (each is a memory lookup);
//! this module has no state of its own.

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
        let (len, source) = tokio::select! {
            _ = shutdown.changed() => break,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    // Such as an ICMP error reported for an earlier send.
                    tracing::debug!(%error, "UDP receive failed");
                    continue;
                }
            },
        };
        if let Some(response) = relay.answer_datagram(&buffer[..len], source).await
            && let Err(error) = socket.send_to(&response, source).await
        {
            tracing::debug!(%error, "UDP send failed");
        }
    }
}

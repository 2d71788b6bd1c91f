//! `stun-binding`: a STUN client for the network lab. Sends one Binding
//! request (RFC 8489) from `0.0.0.0:LOCAL_PORT` to `SERVER` and prints the
//! XOR-MAPPED-ADDRESS of the answer, as a WebRTC stack would learn it.
//!
//! ```text
//! stun-binding SERVER:PORT [LOCAL_PORT]
//! ```
//!
//! Resends up to five times, 300 ms apart; exits 1 without an answer. It
//! does nothing else (no RFC 5780 behaviour tests, no TURN).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context as _, bail};
use stun_types::attribute::XorMappedAddress;
use stun_types::message::{BINDING, Message, MessageClass, MessageWriteVec};
use stun_types::prelude::MessageWrite;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server: SocketAddr = args
        .next()
        .context("usage: stun-binding SERVER:PORT [LOCAL_PORT]")?
        .parse()
        .context("SERVER:PORT")?;
    let local_port: u16 = match args.next() {
        Some(port) => port.parse().context("LOCAL_PORT")?,
        None => 0,
    };
    let socket = UdpSocket::bind(("0.0.0.0", local_port))?;
    socket.set_read_timeout(Some(Duration::from_millis(300)))?;
    let request = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
    let transaction = Message::from_bytes(&request)?.transaction_id();
    let mut buffer = [0u8; 1500];
    for _ in 0..5 {
        socket.send_to(&request, server)?;
        let Ok((len, from)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let Ok(response) = Message::from_bytes(&buffer[..len]) else {
            continue;
        };
        if from != server
            || response.transaction_id() != transaction
            || !response.has_class(MessageClass::Success)
        {
            continue;
        }
        let mapped = response
            .attribute::<XorMappedAddress>()
            .context("no XOR-MAPPED-ADDRESS in the response")?;
        println!("{}", mapped.addr(transaction));
        return Ok(());
    }
    bail!("no Binding response from {server}")
}

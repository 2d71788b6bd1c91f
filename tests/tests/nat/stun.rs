//! A standard STUN client (the `stun-binding` binary, RFC 8489 Binding)
//! inside the lab learns its public address and port from the relay: the
//! router's address, and for endpoint-independent routers the port the
//! socket has inside (Linux masquerade keeps a free port).

use connectoid_tests::lab::{Device, Lab, RouterKind};

/// The XOR-MAPPED-ADDRESS `device` gets from the relay for a socket on
/// `local_port`.
fn mapped_address(lab: &Lab, device: &Device, local_port: u16) -> std::net::SocketAddr {
    let output = device
        .command(env!("CARGO_BIN_EXE_stun-binding"))
        .arg(lab.relay_udp_addr().to_string())
        .arg(local_port.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "stun-binding in {} ({}): {}",
        device.namespace,
        device.kind,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_relay_tells_a_stun_client_its_address_across_nats() {
    let Some(lab) = Lab::start_or_skip("the_relay_tells_a_stun_client_its_address_across_nats")
    else {
        return;
    };
    lab.start_relay(&[]).unwrap();
    for (kind, port) in [
        (RouterKind::None, 40001),
        (RouterKind::Home, 40002),
        (RouterKind::DoubleNat, 40003),
    ] {
        let device = lab.add_device(kind).unwrap();
        let mapped = mapped_address(&lab, &device, port);
        assert_eq!(
            mapped,
            (device.public_address, port).into(),
            "{kind}: the router's public address and the kept port"
        );
        assert_ne!(
            kind != RouterKind::None,
            device.address == device.public_address
        );
    }
    // Behind a symmetric NAT the address is the router's; the port is one
    // the router picked for this destination.
    let device = lab.add_device(RouterKind::Symmetric).unwrap();
    let mapped = mapped_address(&lab, &device, 40004);
    assert_eq!(mapped.ip(), device.public_address);
}

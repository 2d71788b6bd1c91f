//! The UDP check through real sockets, and the size rule as a property: no
//! datagram of any size or content gets a larger answer.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use connectoid_protocol::udp::{CheckRequest, CheckResponse, CheckStatus, MailboxCheck, NONCE_LEN};
use connectoid_protocol::{PublicKey, limits};
use connectoid_relay::Rate;
use proptest::prelude::*;
use tokio::net::UdpSocket;

fn request(nonce: u8, checks: &[(&PublicKey, u64)]) -> CheckRequest {
    CheckRequest {
        nonce: [nonce; NONCE_LEN],
        ext: None,
        checks: checks
            .iter()
            .map(|(key, at)| MailboxCheck {
                key: *key.as_bytes(),
                at: connectoid_protocol::At(*at),
            })
            .collect(),
    }
}

/// Waits (bounded) for one datagram.
async fn receive(socket: &UdpSocket) -> Vec<u8> {
    let mut buffer = vec![0u8; 2048];
    let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buffer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    buffer.truncate(len);
    buffer
}

async fn client(ip: &str, server: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).await.unwrap();
    socket.connect(server).await.unwrap();
    socket
}

#[tokio::test]
async fn a_check_through_a_real_socket() {
    let (server, _dir) = spawn_server(|_| {}).await;
    let udp = server.udp_addr().unwrap();
    let (alice, bob) = (secret(1).public_key(), secret(2).public_key());
    let (status, _) = http_post(server.http_addr(), &send_body(&alice, &[5; 200]))
        .await
        .unwrap();
    assert_eq!(status, 200);

    let socket = client("127.0.0.1", udp).await;
    let request = request(9, &[(&alice, 0), (&bob, 0), (&alice, u64::MAX)]);
    let bytes = request.encode();
    socket.send(&bytes).await.unwrap();
    let answer = receive(&socket).await;
    assert!(answer.len() <= bytes.len());
    let response = CheckResponse::decode(&answer).unwrap();
    assert!(response.answers(&request));
    assert_eq!(
        response.statuses,
        vec![
            CheckStatus::Found,
            CheckStatus::NotFound,
            CheckStatus::NotFound
        ]
    );
    let observed: SocketAddr = response.observed.unwrap().into();
    assert_eq!(observed, socket.local_addr().unwrap());

    // The information document advertises the port.
    let metrics = server.relay().metrics_text().await;
    assert!(
        metrics.contains("connectoid_udp_checks_total 3"),
        "{metrics}"
    );
    assert_eq!(server.relay().info().udp_port, Some(udp.port()));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_datagrams_get_no_answer_and_do_not_crash() {
    let (server, _dir) = spawn_server(|_| {}).await;
    let socket = client("127.0.0.1", server.udp_addr().unwrap()).await;
    let key = secret(3).public_key();
    let valid = request(1, &[(&key, 0)]).encode();
    let mut trailing = valid.clone();
    trailing.push(0);
    let mut wrong_version = valid.clone();
    wrong_version[4] = 9;
    let response_type = CheckResponse {
        nonce: [0; NONCE_LEN],
        statuses: vec![CheckStatus::Found],
        observed: None,
    }
    .encode();
    let mut too_long = valid.clone();
    too_long.resize(limits::MAX_DATAGRAM_LEN + 1, 0);
    let no_checks = request(2, &[]).encode();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        b"CNID".to_vec(),
        vec![0xff; 64],
        trailing,
        wrong_version,
        response_type,
        too_long,
        no_checks,
        valid[..valid.len() - 1].to_vec(),
    ];
    for datagram in &garbage {
        socket.send(datagram).await.unwrap();
    }
    // Datagrams are handled in order: the first answer must be the valid one's.
    socket.send(&valid).await.unwrap();
    let answer = CheckResponse::decode(&receive(&socket).await).unwrap();
    assert_eq!(answer.nonce, [1; NONCE_LEN]);
    let mut buffer = [0u8; 64];
    assert!(socket.try_recv(&mut buffer).is_err(), "exactly one answer");
    let metrics = server.relay().metrics_text().await;
    assert!(
        metrics.contains(&format!(
            "connectoid_udp_datagrams_total{{result=\"malformed\"}} {}",
            garbage.len()
        )),
        "{metrics}"
    );
    let (status, _) = http_post(server.http_addr(), &check_body(&key, 0))
        .await
        .unwrap();
    assert_eq!(status, 200, "the relay still serves HTTP");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_udp_flood_from_one_address_is_dropped_while_others_are_answered() {
    let (server, _dir) = spawn_server(|config| {
        config.limits.rate.check_per_ip = Some(Rate::new(1, 3));
    })
    .await;
    let udp = server.udp_addr().unwrap();
    let key = secret(4).public_key();
    let flooder = client("127.0.0.1", udp).await;
    for nonce in 0..3 {
        flooder
            .send(&request(nonce, &[(&key, 0)]).encode())
            .await
            .unwrap();
        let answer = CheckResponse::decode(&receive(&flooder).await).unwrap();
        assert_eq!(answer.nonce, [nonce; NONCE_LEN]);
    }
    flooder
        .send(&request(3, &[(&key, 0)]).encode())
        .await
        .unwrap();
    // 127.0.0.2 is another source on Linux loopback; its answer comes after
    // the flooder's fourth datagram was handled.
    let other = client("127.0.0.2", udp).await;
    other
        .send(&request(7, &[(&key, 0)]).encode())
        .await
        .unwrap();
    let answer = CheckResponse::decode(&receive(&other).await).unwrap();
    assert_eq!(answer.nonce, [7; NONCE_LEN]);
    let mut buffer = [0u8; 64];
    assert!(
        flooder.try_recv(&mut buffer).is_err(),
        "the fourth was dropped"
    );
    let metrics = server.relay().metrics_text().await;
    assert!(
        metrics.contains("connectoid_udp_datagrams_total{result=\"rate_limited\"} 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn udp_statuses_for_api_keys_and_mailbox_limits() {
    let relay = TestRelay::new(|config| {
        config.api_keys = vec!["k1".into()];
        config.limits.rate.check_per_mailbox = Some(Rate::new(1, 1));
    });
    let source: SocketAddr = "[::ffff:192.0.2.1]:5000".parse().unwrap();
    let key = secret(5).public_key();
    let mut req = request(1, &[(&key, 0), (&key, 0)]);
    let answer = relay
        .relay
        .answer_datagram(&req.encode(), source)
        .await
        .unwrap();
    let response = CheckResponse::decode(&answer).unwrap();
    assert_eq!(response.statuses, vec![CheckStatus::Forbidden; 2]);
    // IPv4-mapped sources are reported as IPv4.
    assert_eq!(
        SocketAddr::from(response.observed.unwrap()),
        "192.0.2.1:5000".parse().unwrap()
    );
    req.ext = Some("k1".into());
    let answer = relay
        .relay
        .answer_datagram(&req.encode(), source)
        .await
        .unwrap();
    let response = CheckResponse::decode(&answer).unwrap();
    assert_eq!(
        response.statuses,
        vec![CheckStatus::NotFound, CheckStatus::TooOften]
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_datagram_gets_a_larger_answer(
        bytes in proptest::collection::vec(any::<u8>(), 0..1300),
        v6 in any::<bool>(),
    ) {
        let rt = runtime();
        let relay = rt.block_on(async { TestRelay::new(|_| {}) });
        let source: SocketAddr = if v6 { "[2001:db8::1]:65535" } else { "192.0.2.1:1" }.parse().unwrap();
        if let Some(answer) = rt.block_on(relay.relay.answer_datagram(&bytes, source)) {
            prop_assert!(answer.len() <= bytes.len());
        }
    }

    #[test]
    fn valid_requests_are_answered_within_their_size(
        nonce in any::<[u8; NONCE_LEN]>(),
        ext in proptest::option::of("[a-z]{0,128}"),
        checks in proptest::collection::vec((any::<bool>(), any::<u64>()), 1..=limits::MAX_CHECKS_PER_DATAGRAM),
        v6 in any::<bool>(),
    ) {
        let rt = runtime();
        let relay = rt.block_on(async { TestRelay::new(|_| {}) });
        let known = secret(6).public_key();
        rt.block_on(relay.post(send_body(&known, &[1; 150])));
        let request = CheckRequest {
            nonce,
            ext,
            checks: checks
                .iter()
                .enumerate()
                .map(|(i, (is_known, at))| MailboxCheck {
                    key: if *is_known { *known.as_bytes() } else { [i as u8; 49] },
                    at: connectoid_protocol::At(if *is_known { *at % 2 } else { *at }),
                })
                .collect(),
        };
        let bytes = request.encode();
        let source: SocketAddr = if v6 { "[2001:db8::1]:65535" } else { "192.0.2.1:1" }.parse().unwrap();
        let answer = rt.block_on(relay.relay.answer_datagram(&bytes, source));
        let answer = answer.expect("a valid request is always answered");
        prop_assert!(answer.len() <= bytes.len());
        let response = CheckResponse::decode(&answer).unwrap();
        prop_assert!(response.answers(&request));
        for ((is_known, _), status) in checks.iter().zip(&response.statuses) {
            let expected = if *is_known { CheckStatus::Found } else { CheckStatus::NotFound };
            prop_assert_eq!(*status, expected);
        }
    }
}

/// A STUN client's Binding request (built and read by the `stun-types`
/// codec, as a WebRTC stack's would be) through a real socket: the answer
/// carries the socket's address; the rate limit and metrics are shared with
/// check datagrams.
#[tokio::test]
async fn a_stun_binding_request_gets_the_source_address() {
    use stun_types::attribute::{Software, XorMappedAddress};
    use stun_types::message::{BINDING, Message, MessageClass, MessageWriteExt, MessageWriteVec};
    use stun_types::prelude::MessageWrite;

    let (server, _dir) = spawn_server(|config| {
        config.limits.rate.check_per_ip = Some(Rate::new(1, 2));
    })
    .await;
    let udp = server.udp_addr().unwrap();
    let socket = client("127.0.0.1", udp).await;
    let mut request = Message::builder_request(BINDING, MessageWriteVec::new());
    request
        .add_attribute(&Software::new("connectoid test").unwrap())
        .unwrap();
    let request = request.finish();
    socket.send(&request).await.unwrap();
    let answer = receive(&socket).await;
    assert!(answer.len() <= request.len() + 12, "{} bytes", answer.len());
    let response = Message::from_bytes(&answer).unwrap();
    let request = Message::from_bytes(&request).unwrap();
    assert!(response.has_class(MessageClass::Success));
    assert!(response.has_method(BINDING));
    assert_eq!(response.transaction_id(), request.transaction_id());
    let mapped = response.attribute::<XorMappedAddress>().unwrap();
    assert_eq!(
        mapped.addr(response.transaction_id()),
        socket.local_addr().unwrap()
    );

    // A check datagram from the same source takes the second token; the
    // next STUN request finds the bucket empty.
    let key = secret(5).public_key();
    socket
        .send(&self::request(1, &[(&key, 0)]).encode())
        .await
        .unwrap();
    CheckResponse::decode(&receive(&socket).await).unwrap();
    let again = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
    socket.send(&again).await.unwrap();
    // The check answer after it shows it was handled (and dropped).
    let other = client("127.0.0.2", udp).await;
    other.send(&again).await.unwrap();
    receive(&other).await;
    let mut buffer = [0u8; 64];
    assert!(socket.try_recv(&mut buffer).is_err(), "rate limited");
    let metrics = server.relay().metrics_text().await;
    for line in [
        "connectoid_stun_requests_total{result=\"answered\"} 2",
        "connectoid_stun_requests_total{result=\"rate_limited\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    server.shutdown().await.unwrap();
}

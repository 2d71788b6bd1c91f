//! A stranger who knows a mailbox's key tries to lock its owner out, with
//! the relay's default rate limits: wrong-answer receives, HTTP checks and
//! UDP checks naming the mailbox from several addresses (127.0.0.2..=5),
//! and sends to a mailbox from two addresses while a legitimate sender uses
//! it. The owner's checks and receives, over HTTP and UDP, must succeed at
//! least 99% of the time, and the legitimate sender's sends all go through.
//!
//! Bounded in rounds and requests; paced with short sleeps, no timing
//! assertions.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use connectoid_protocol::seal::open_question;
use connectoid_protocol::udp::{CheckRequest, CheckResponse, CheckStatus, MailboxCheck};
use connectoid_protocol::{Answer, PublicKey, SecretKey, b64};
use connectoid_tests::bench::load::HttpConn;
use connectoid_tests::bench::scenarios::{check_body, secret_key, send_body};
use connectoid_tests::url_of;

use super::{relay, tagged};

fn local(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn receive_body(key: &PublicKey, answer: &str) -> Vec<u8> {
    format!(r#"{{"pub":"{key}","action":"receive","answer":"{answer}","at":0,"limit":1}}"#)
        .into_bytes()
}

fn datagram(key: &PublicKey, nonce: u8) -> Vec<u8> {
    CheckRequest {
        nonce: [nonce; 16],
        ext: None,
        checks: vec![MailboxCheck {
            key: *key.as_bytes(),
            at: connectoid_protocol::At::ZERO,
        }],
    }
    .encode()
}

/// One UDP check from `from`: whether it came back `Found`.
async fn udp_check(socket: &tokio::net::UdpSocket, udp: SocketAddr, key: &PublicKey) -> bool {
    if socket.send_to(&datagram(key, 7), udp).await.is_err() {
        return false;
    }
    let mut buffer = [0u8; 1500];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer)).await {
        Ok(Ok((len, _))) => {
            CheckResponse::decode(&buffer[..len]).is_ok_and(|r| r.statuses == [CheckStatus::Found])
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_who_knows_the_key_cannot_lock_the_owner_out() -> anyhow::Result<()> {
    connectoid_tests::init_tracing();
    let data = tempfile::tempdir()?;
    let mut options = relay(data.path());
    options.no_rate_limits = false;
    let process = options.start()?;
    let (addr, udp) = (process.http_addr()?, process.udp_addr()?);
    let url = url_of(addr);

    let owner: SecretKey = secret_key(8001);
    let key = owner.public_key();
    let mut sender = HttpConn::connect_from(local(9), addr).await?;
    assert_eq!(
        sender
            .post(&send_body(&key, &tagged(1, 0)), false)
            .await?
            .status,
        200
    );
    // The mailbox a legitimate sender uses while a stranger floods it.
    let shared = secret_key(8002).public_key();

    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for n in 2..=5u8 {
        let stop = Arc::clone(&stop);
        attackers.push(tokio::spawn(async move {
            let (mut too_often, mut wrong) = (0u32, 0u32);
            let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local(n), 0))
                .await
                .unwrap();
            let mut conn = HttpConn::connect_from(local(n), addr).await.ok();
            let bogus = b64::encode(&[n; 32]);
            for i in 0..600u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for _ in 0..3 {
                    let _ = socket.send_to(&datagram(&key, n), udp).await;
                }
                if conn.is_none() {
                    conn = HttpConn::connect_from(local(n), addr).await.ok();
                }
                let Some(c) = conn.as_mut() else { continue };
                let body = if i % 2 == 0 {
                    receive_body(&key, &bogus)
                } else {
                    check_body(&key, 0)
                };
                match c.post(&body, false).await {
                    Ok(a) if a.status == 429 => too_often += 1,
                    Ok(a) if a.status == 403 => wrong += 1,
                    Ok(_) => {}
                    Err(_) => conn = None,
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (too_often, wrong)
        }));
    }
    // A stranger sending to the shared mailbox at about 4/s from two addresses.
    for n in 6..=7u8 {
        let stop = Arc::clone(&stop);
        attackers.push(tokio::spawn(async move {
            let mut too_often = 0;
            let mut conn = HttpConn::connect_from(local(n), addr).await.ok();
            for i in 0..200u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if conn.is_none() {
                    conn = HttpConn::connect_from(local(n), addr).await.ok();
                }
                let Some(c) = conn.as_mut() else { continue };
                match c
                    .post(&send_body(&shared, &tagged(u64::from(n), i)), false)
                    .await
                {
                    Ok(a) if a.status == 429 => too_often += 1,
                    Ok(_) => {}
                    Err(_) => conn = None,
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (too_often, 0)
        }));
    }
    // Let the attack drain whatever it can first.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The owner, from 127.0.0.1, within the default per-mailbox budget
    // (120/min, burst 30): a check and a receive over HTTP and a UDP check
    // every half second; the legitimate sender sends every third round.
    let mut conn = HttpConn::connect_from(local(1), addr).await?;
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local(1), 0)).await?;
    let (mut ok, mut total, mut sent) = (0u32, 0u32, 0u32);
    let mut answer = String::new();
    for round in 0..24u64 {
        total += 3;
        let check = conn.post(&check_body(&key, 0), false).await?;
        let value: serde_json::Value = serde_json::from_slice(&check.body)?;
        match value["question"].as_str() {
            Some(question) if check.status == 200 => {
                ok += 1;
                let secret = open_question(&owner, &b64::decode(question)?)
                    .map_err(|e| anyhow::anyhow!("open question: {e}"))?;
                answer = b64::encode(&Answer::for_relay(&secret, &url).0);
            }
            _ => eprintln!("owner check {round}: {} {value}", check.status),
        }
        let received = conn.post(&receive_body(&key, &answer), false).await?;
        if received.status == 200 {
            ok += 1;
        } else {
            eprintln!(
                "owner receive {round}: {} {}",
                received.status,
                String::from_utf8_lossy(&received.body)
            );
        }
        if udp_check(&socket, udp, &key).await {
            ok += 1;
        } else {
            eprintln!("owner UDP check {round}: no Found");
        }
        if round % 3 == 0 {
            let answer = sender
                .post(&send_body(&shared, &tagged(9, round)), false)
                .await?;
            if answer.status == 200 {
                sent += 1;
            } else {
                eprintln!(
                    "legitimate send {round}: {} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut too_often, mut wrong) = (0, 0);
    for attacker in attackers {
        let (t, w) = attacker.await?;
        too_often += t;
        wrong += w;
    }
    eprintln!(
        "owner: {ok}/{total}; legitimate sends {sent}/8; stranger: {too_often} refused as too often, \
         {wrong} wrong answers"
    );
    assert!(
        u64::from(ok) * 100 >= u64::from(total) * 99,
        "the owner got {ok}/{total} under the attack"
    );
    assert_eq!(sent, 8, "the legitimate sender was locked out");
    assert!(too_often > 0, "the stranger was never rate limited");
    assert!(wrong > 0, "the stranger's wrong answers were never judged");
    Ok(())
}

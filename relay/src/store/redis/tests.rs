//! Unit tests of the Redis store that need no server.

use std::time::Duration;

use super::target::DEFAULT_TIMEOUT;
use super::*;

#[test]
fn urls_parse_and_hide_passwords() {
    let single: RedisTarget = "redis://127.0.0.1:6379".parse().unwrap();
    assert!(!single.is_cluster());
    assert_eq!(single.prefix(), "cnid");
    assert_eq!(single.timeout(), DEFAULT_TIMEOUT);
    assert_eq!(single.to_string(), "redis://127.0.0.1:6379");

    let secret: RedisTarget =
        "redis://user:hunter2@db.example:6380/3?prefix=relay-a&timeout_ms=500"
            .parse()
            .unwrap();
    assert_eq!(secret.nodes, ["redis://user:hunter2@db.example:6380/3"]);
    assert_eq!(secret.prefix(), "relay-a");
    assert_eq!(secret.timeout(), Duration::from_millis(500));
    let shown = format!("{secret} {secret:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis://***@db.example:6380/3?prefix=relay-a&timeout_ms=500"));

    let cluster: RedisTarget = "redis+cluster://10.0.0.1:7000,10.0.0.2:7001"
        .parse()
        .unwrap();
    assert!(cluster.is_cluster());
    assert_eq!(
        cluster.nodes,
        ["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"]
    );

    for bad in [
        "redb",
        "rediss://x:1",
        "redis://a:1,b:2",
        "redis://",
        "redis://x:1/db",
        "redis+cluster://a:1/2",
        "redis://x:1?prefix={x}",
        "redis://x:1?timeout_ms=0",
        "redis://x:1?other=1",
    ] {
        assert!(bad.parse::<RedisTarget>().is_err(), "{bad}");
    }
}

#[test]
fn a_mailbox_is_one_slot() {
    let keys = Keys { prefix: "p".into() };
    let id = MailboxId([2; PUBLIC_KEY_LEN]);
    let home = slot(&keys.meta(&id));
    for key in [
        keys.msgs(&id),
        keys.question(&id),
        keys.floor(&id),
        keys.bucket(&Bucket::SendPerMailbox(id)),
        keys.bucket(&Bucket::CheckPerMailbox(id)),
    ] {
        assert_eq!(slot(&key), home, "{key}");
    }
    assert_ne!(slot(&keys.meta(&MailboxId([4; PUBLIC_KEY_LEN]))), home);
    assert_eq!(slot(&keys.global("stats")), slot(&keys.global("idle")));
    assert_eq!(slot(&keys.global("stats")), slot(&keys.global("questions")));
}

#[test]
fn members_round_trip() {
    let id = MailboxId([3; PUBLIC_KEY_LEN]);
    assert_eq!(parse_member(member(&id).as_bytes()), Some(id));
    assert_eq!(parse_member(b"not base64!"), None);
    assert_eq!(parse_member(b"AAAA"), None);
}

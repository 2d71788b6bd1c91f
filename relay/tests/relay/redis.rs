//! The store conformance suite against Redis: one case per test on its own
//! single `redis-server`, and the whole suite on a three-master Redis
//! Cluster. Then what is specific to a shared store: two stores (two relay
//! nodes) on one Redis see the same `at` sequence, questions and token
//! buckets; the totals stay right when Redis expired data by itself; a
//! stopped Redis gives "unavailable" and a restarted one serves again.
//!
//! Every test starts its own Redis processes (see `connectoid_relay::testing::RedisServer`);
//! without `redis-server` they are skipped, except under `CI=true`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use connectoid_protocol::At;
use connectoid_relay::Rate;
use connectoid_relay::store::conformance::{StoreFactory, T0, mailbox, options, run_all};
use connectoid_relay::store::{
    Bucket, MailboxId, Question, RedisStore, RedisTarget, SourcePrefix, Store, StoreError,
    StoreOptions,
};
use connectoid_relay::testing::{RedisCluster, RedisServer};

/// What keeps the servers of a factory alive.
enum Servers {
    Single(RedisServer),
    Cluster(RedisCluster),
}

/// Fresh stores on one Redis (or cluster): each with its own key prefix.
struct RedisFactory {
    servers: Servers,
    target: RedisTarget,
    next: AtomicU64,
}

impl RedisFactory {
    fn new(servers: Servers) -> Self {
        let url = match &servers {
            Servers::Single(server) => server.url(),
            Servers::Cluster(cluster) => cluster.url(),
        };
        Self {
            servers,
            target: url.parse().expect("redis url"),
            next: AtomicU64::new(0),
        }
    }

    fn single(test: &str) -> Option<Self> {
        Some(Self::new(Servers::Single(RedisServer::start(test)?)))
    }

    fn cluster(test: &str) -> Option<Self> {
        Some(Self::new(Servers::Cluster(RedisCluster::start(test)?)))
    }

    /// A target with a prefix no other store of this factory uses.
    fn fresh_target(&self) -> RedisTarget {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        self.target.clone().with_prefix(&format!("t{n}")).unwrap()
    }

    fn server(&mut self) -> &mut RedisServer {
        match &mut self.servers {
            Servers::Single(server) => server,
            Servers::Cluster(_) => panic!("a single server was expected"),
        }
    }
}

#[async_trait::async_trait]
impl StoreFactory for RedisFactory {
    async fn make(&self, options: StoreOptions) -> Arc<dyn Store> {
        let store = RedisStore::connect(&self.fresh_target(), options)
            .await
            .expect("connect to redis");
        Arc::new(store)
    }
}

connectoid_relay::store_conformance_tests!(optional: RedisFactory::single("redis conformance"));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_a_three_master_cluster() {
    let Some(factory) = RedisFactory::cluster("cluster conformance") else {
        return;
    };
    run_all(&factory).await;

    // A check of mailboxes spread over every master is answered in one call,
    // in order.
    let store = factory.make(options()).await;
    let ids: Vec<MailboxId> = (30..46).map(mailbox).collect();
    let mut ats = Vec::new();
    for id in ids.iter().step_by(2) {
        ats.push(store.send(*id, vec![7; 130], T0).await.unwrap());
    }
    let checks: Vec<(MailboxId, At)> = ids.iter().map(|id| (*id, At::ZERO)).collect();
    let found = store.check(&checks, T0).await.unwrap();
    let expected: Vec<bool> = (0..ids.len()).map(|i| i % 2 == 0).collect();
    assert_eq!(found, expected);
    let masters: std::collections::HashSet<String> = ids
        .iter()
        .map(|id| {
            let key = format!(
                "t-probe:{{{}}}:meta",
                connectoid_protocol::b64::encode(&id.0)
            );
            let slot = factory.cluster_slot(&key);
            factory.master_of(slot)
        })
        .collect();
    assert_eq!(masters.len(), 3, "the mailboxes span all three masters");
}

impl RedisFactory {
    fn cluster_slot(&self, key: &str) -> u16 {
        let Servers::Cluster(cluster) = &self.servers else {
            panic!("a cluster was expected");
        };
        cluster.nodes()[0]
            .cli(&["cluster", "keyslot", key])
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The port of the master serving `slot`.
    fn master_of(&self, slot: u16) -> String {
        let Servers::Cluster(cluster) = &self.servers else {
            panic!("a cluster was expected");
        };
        let shards = cluster.nodes()[0].cli(&["cluster", "slots"]).unwrap();
        // redis-cli prints each range as: start, end, ip, port, id (one per line).
        let lines: Vec<&str> = shards.lines().map(str::trim).collect();
        for window in lines.windows(4) {
            if let (Ok(start), Ok(end)) = (window[0].parse::<u16>(), window[1].parse::<u16>())
                && window[2] == "127.0.0.1"
                && (start..=end).contains(&slot)
            {
                return window[3].to_owned();
            }
        }
        panic!("no master for slot {slot} in {shards}");
    }
}

/// Two stores with the same prefix are two relay nodes on one Redis.
async fn two_nodes(factory: &RedisFactory) -> (RedisStore, RedisStore) {
    let target = factory.fresh_target();
    let a = RedisStore::connect(&target, options()).await.unwrap();
    let b = RedisStore::connect(&target, options()).await.unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_ats_questions_and_buckets() {
    let Some(factory) = RedisFactory::single("two nodes") else {
        return;
    };
    let (a, b) = two_nodes(&factory).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let id = mailbox(50);

    // Concurrent sends through both nodes: distinct `at`s, all stored.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move { node.send(id, i.to_be_bytes().repeat(40), T0).await });
    }
    let mut ats = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        ats.push(joined.unwrap().unwrap());
    }
    ats.sort();
    ats.dedup();
    assert_eq!(ats.len(), 200, "every send got its own at");
    assert_eq!(ats[0], At(T0));
    assert_eq!(ats[199], At(T0 + 199), "at = max(now, last + 1)");
    let mut received = a.receive(id, At::ZERO, 100, T0).await.unwrap();
    received.extend(b.receive(id, received[99].at, 100, T0).await.unwrap());
    assert_eq!(received.iter().map(|m| m.at).collect::<Vec<_>>(), ats);

    // The first question offered through either node is the one both keep.
    let question = |byte: u8| Question {
        secret: [byte; 32],
        sealed: vec![byte; 145],
        expires_us: T0 + 60_000_000,
    };
    let kept = a.offer_question(id, question(1), T0).await.unwrap();
    assert_eq!(kept, question(1));
    assert_eq!(
        b.offer_question(id, question(2), T0).await.unwrap(),
        question(1)
    );
    assert_eq!(b.question(id, T0).await.unwrap(), Some(question(1)));

    // One bucket, whichever node takes from it.
    assert!(a.rate_limits_shared() && b.rate_limits_shared());
    let rate = Rate::new(1, 3);
    let bucket = Bucket::SendPerSource(SourcePrefix::V4([192, 0, 2, 7]));
    assert!(a.take_token(bucket, rate, T0).await.unwrap());
    assert!(b.take_token(bucket, rate, T0).await.unwrap());
    assert!(a.take_token(bucket, rate, T0).await.unwrap());
    assert!(!b.take_token(bucket, rate, T0).await.unwrap(), "empty");
    assert!(!a.take_token(bucket, rate, T0).await.unwrap(), "empty");
    let other = Bucket::SendPerSource(SourcePrefix::V4([192, 0, 2, 8]));
    assert!(b.take_token(other, rate, T0).await.unwrap());
    // One token a minute: refilled by the relay's clock, not Redis's.
    assert!(!b.take_token(bucket, rate, T0 + 59_000_000).await.unwrap());
    assert!(b.take_token(bucket, rate, T0 + 60_000_000).await.unwrap());
    assert!(!a.take_token(bucket, rate, T0 + 60_000_000).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_stay_right_when_redis_expired_messages_itself() {
    let Some(factory) = RedisFactory::single("redis expiry") else {
        return;
    };
    let target = factory.fresh_target();
    let store = RedisStore::connect(&target, options()).await.unwrap();
    let id = mailbox(51);
    store.send(id, vec![1; 200], T0).await.unwrap();
    store.send(id, vec![2; 300], T0 + 1).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.mailboxes, stats.messages, stats.bytes), (1, 2, 500));
    // Redis drops the messages key when its newest message expires; with a
    // manual clock that has not happened, so do it by hand.
    let key = format!(
        "{}:{{{}}}:msgs",
        target.prefix(),
        connectoid_protocol::b64::encode(&id.0)
    );
    let Servers::Single(server) = &factory.servers else {
        unreachable!()
    };
    assert_eq!(server.cli(&["del", &key]).unwrap().trim(), "1");
    let expired = T0 + options().message_ttl_us + 1;
    let report = store.sweep(expired).await.unwrap();
    assert_eq!(report.messages_removed, 2, "{report:?}");
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.mailboxes, stats.messages, stats.bytes), (1, 0, 0));
    // The mailbox lives on, and its `at` keeps growing.
    let next = store.send(id, vec![3; 150], expired).await.unwrap();
    assert_eq!(next, At(expired));
    assert!(store.check(&[(id, At::ZERO)], expired).await.unwrap()[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_is_unavailable_and_a_restarted_one_serves_again() {
    let Some(mut factory) = RedisFactory::single("redis outage") else {
        return;
    };
    let target = factory
        .fresh_target()
        .with_timeout(std::time::Duration::from_millis(500));
    let store = RedisStore::connect(&target, options()).await.unwrap();
    let id = mailbox(52);
    store.send(id, vec![1; 150], T0).await.unwrap();

    factory.server().stop();
    for _ in 0..3 {
        match store.send(id, vec![2; 150], T0).await {
            Err(StoreError::Unavailable(detail)) => assert!(detail.contains("redis"), "{detail}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(matches!(
            store.check(&[(id, At::ZERO)], T0).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(store.stats().await.is_err());
    }

    // The server comes back empty (no persistence here): the same store
    // object serves again, after at most a few failed attempts.
    factory.server().restart();
    let mut served = None;
    for _ in 0..200 {
        match store.send(id, vec![3; 150], T0 + 5).await {
            Ok(at) => {
                served = Some(at);
                break;
            }
            Err(StoreError::Unavailable(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(served, Some(At(T0 + 5)));
    assert!(store.check(&[(id, At::ZERO)], T0 + 5).await.unwrap()[0]);
    store.close().await.unwrap();
    assert!(matches!(
        store.check(&[(id, At::ZERO)], T0).await,
        Err(StoreError::Closed)
    ));
}

#[tokio::test]
async fn connecting_to_nothing_fails_cleanly() {
    // Port 1 on 127.0.0.1: refused at once.
    let target: RedisTarget = "redis://127.0.0.1:1?timeout_ms=500".parse().unwrap();
    let error = RedisStore::connect(&target, options()).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Unavailable(detail) if detail.contains("127.0.0.1:1")),
        "{error}"
    );
}

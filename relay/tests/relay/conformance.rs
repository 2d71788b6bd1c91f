//! The store conformance suite against the embedded redb store, plus what is
//! specific to redb: everything a call returned survives a close and reopen,
//! and last-check times are written at close.

use std::sync::{Arc, Mutex};

use connectoid_protocol::At;
use connectoid_relay::store::conformance::{T0, mailbox, options};
use connectoid_relay::store::{RedbStore, Store, StoreOptions};
use tempfile::TempDir;

/// Fresh redb stores, each in its own temporary directory (kept until the
/// factory is dropped at the end of the test).
#[derive(Default)]
struct Redb {
    dirs: Mutex<Vec<TempDir>>,
}

#[async_trait::async_trait]
impl connectoid_relay::store::conformance::StoreFactory for Redb {
    async fn make(&self, options: StoreOptions) -> Arc<dyn Store> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(dir.path(), options).expect("open");
        self.dirs.lock().unwrap().push(dir);
        Arc::new(store)
    }
}

connectoid_relay::store_conformance_tests!(Redb::default());

#[tokio::test]
async fn everything_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (mailbox(1), mailbox(2));
    let store = RedbStore::open(dir.path(), options()).unwrap();
    let mut sent = Vec::new();
    for i in 0..10u8 {
        let id = if i % 2 == 0 { a } else { b };
        sent.push((id, store.send(id, vec![i; 130], T0).await.unwrap(), i));
    }
    // A check in memory only; close must write it.
    assert!(store.check(&[(a, At::ZERO)], T0 + 5_000_000).await.unwrap()[0]);
    store.close().await.unwrap();
    assert!(store.send(a, vec![0; 130], T0).await.is_err(), "closed");
    assert!(store.check(&[(a, At::ZERO)], T0).await.is_err(), "closed");
    assert!(store.stats().await.is_err(), "closed");

    let store = RedbStore::open(dir.path(), options()).unwrap();
    for (id, at, i) in &sent {
        let got = store.receive(*id, At(at.0 - 1), 1, T0).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].at, &got[0].data), (*at, &vec![*i; 130]));
    }
    // `at` keeps growing after a restart.
    let next = store.send(a, vec![9; 130], T0).await.unwrap();
    assert!(next > sent.iter().map(|(_, at, _)| *at).max().unwrap());
    // The check time written at close keeps `a` alive past `b`'s idle time.
    let idle = options().mailbox_idle_us;
    let report = store.sweep(T0 + idle).await.unwrap();
    assert_eq!(report.mailboxes_removed, 1, "{report:?}");
    assert!(store.check(&[(b, At::ZERO)], T0 + idle).await.unwrap() == vec![false]);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.mailboxes, 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path(), options()).unwrap();
    let error = RedbStore::open(dir.path(), options()).unwrap_err();
    assert!(!error.to_string().is_empty());
    store.close().await.unwrap();
    RedbStore::open(dir.path(), options())
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn sweep_persists_check_times_coarsely() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options();
    options.check_persist_us = 60_000_000;
    let store = RedbStore::open(dir.path(), options).unwrap();
    let a = mailbox(3);
    store.send(a, vec![1; 130], T0).await.unwrap();
    store
        .check(&[(a, At::ZERO)], T0 + 30_000_000)
        .await
        .unwrap();
    let report = store.sweep(T0 + 30_000_000).await.unwrap();
    assert_eq!(report.checks_persisted, 0, "not yet due");
    store
        .check(&[(a, At::ZERO)], T0 + 61_000_000)
        .await
        .unwrap();
    let report = store.sweep(T0 + 61_000_000).await.unwrap();
    assert_eq!(report.checks_persisted, 1);
    store.close().await.unwrap();
}

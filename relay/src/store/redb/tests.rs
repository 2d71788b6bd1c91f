//! Unit tests of the redb store's index, schema and writer.

use connectoid_protocol::keys::PUBLIC_KEY_LEN;
use redb::{ReadableTable as _, ReadableTableMetadata as _, TableDefinition, TableHandle as _};

use super::index::*;
use super::schema::*;
use super::writer::*;
use super::*;

#[test]
fn keys_order_by_at_then_mailbox() {
    let a = MailboxId([1; PUBLIC_KEY_LEN]);
    let b = MailboxId([2; PUBLIC_KEY_LEN]);
    assert!(message_key(&b, At(0)) < message_key(&a, At(1)));
    assert!(message_key(&b, At(255)) < message_key(&a, At(256)));
    assert!(message_key(&a, At(7)) < message_key(&b, At(7)));
    assert_eq!(split_key(&message_key(&b, At(77))), (b, At(77)));
    let mut v1 = b.0.to_vec();
    v1.extend_from_slice(&77u64.to_be_bytes());
    assert_eq!(split_key_v1(&v1).unwrap(), (b, At(77)));
    assert!(split_key_v1(&[0; 3]).is_err());
    assert!(split_key_v1(&[0; KEY_LEN + 1]).is_err());
}

/// The sweep removes the table's keys up to [`expired_until`] and the
/// index's messages that [`Mailbox::expired`] counts: the same ones.
#[test]
fn expired_until_agrees_with_the_ttl() {
    for (now, ttl) in [
        (0, 0),
        (0, 5),
        (4, 5),
        (5, 5),
        (100, 5),
        (100, 0),
        (u64::MAX - 1, 5),
        (u64::MAX, 5),
        (u64::MAX, u64::MAX),
        (5, u64::MAX),
    ] {
        for at in [
            0,
            1,
            94,
            95,
            96,
            99,
            100,
            101,
            u64::MAX - 7,
            u64::MAX - 6,
            u64::MAX,
        ] {
            let by_ttl = at.saturating_add(ttl) <= now;
            let by_cutoff = expired_until(now, ttl).is_some_and(|until| At(at) <= until);
            assert_eq!(by_ttl, by_cutoff, "at {at}, now {now}, ttl {ttl}");
        }
    }
}

fn id(n: u16) -> MailboxId {
    let mut bytes = [0x02; PUBLIC_KEY_LEN];
    bytes[1..3].copy_from_slice(&n.to_be_bytes());
    MailboxId(bytes)
}

#[test]
fn expiry_follows_at_order() {
    let mut mailbox = Mailbox::new(0);
    for at in [10, 20, 30] {
        mailbox.push(At(at), 1);
    }
    assert_eq!(mailbox.expired(25, 5), 2);
    assert_eq!(mailbox.live(25, 5), 1);
    assert!(mailbox.has_after(At(29), 34, 5));
    assert!(!mailbox.has_after(At(29), 35, 5));
    assert!(!mailbox.has_after(At(30), 0, 5));
}

/// An idle mailbox holds no queue; one comes with the first message and
/// goes with the last.
#[test]
fn mailboxes_go_idle_pending_idle() {
    let mut mailbox = Mailbox::new(0);
    assert!(mailbox.pending.is_none());
    assert_eq!((mailbox.pending_len(), mailbox.live(0, 5)), (0, 0));
    assert!(!mailbox.has_after(At::ZERO, 0, 5));
    assert_eq!(mailbox.remove_expired(100, 5), None);

    mailbox.push(At(10), 100);
    mailbox.push(At(20), 200);
    assert!(mailbox.has_after(At(10), 12, 5));
    assert_eq!(mailbox.remove_expired(14, 5), None, "nothing expired yet");
    let first = Expired {
        count: 1,
        bytes: 100,
    };
    assert_eq!(mailbox.remove_expired(15, 5), Some(first));
    assert_eq!(
        mailbox.pending().copied().collect::<Vec<_>>(),
        [(At(20), 200)]
    );
    let second = Expired {
        count: 1,
        bytes: 200,
    };
    assert_eq!(mailbox.remove_expired(u64::MAX, 5), Some(second));
    assert!(mailbox.pending.is_none(), "idle again");
    assert_eq!(mailbox.pending_len(), 0);

    mailbox.push(At(30), 1);
    mailbox.push(At(40), 2);
    let both = Expired { count: 2, bytes: 3 };
    assert_eq!(mailbox.remove_expired(45, 5), Some(both));
    assert!(mailbox.pending.is_none());
}

/// The record is 32 bytes, and an entry of the map (`indexmap` keeps the
/// hash, the key and the value) 96.
#[cfg(target_pointer_width = "64")]
#[test]
fn an_idle_mailbox_takes_96_bytes() {
    assert_eq!(std::mem::size_of::<Mailbox>(), 32);
    assert_eq!(std::mem::size_of::<(u64, MailboxId, Mailbox)>(), 96);
}

#[test]
fn check_lag_rounds_up_and_saturates() {
    assert!(!CheckLag::NONE.is_behind());
    assert!(!CheckLag::NONE.is_due(0));
    let tiny = CheckLag::NONE.add_us(1);
    assert!(tiny.is_behind(), "any later check must be written at close");
    assert_eq!(tiny, CheckLag(1));
    assert!(tiny.is_due(0) && tiny.is_due(1_000) && !tiny.is_due(1_001));
    let minute = CheckLag::NONE.add_us(60_000_000);
    assert!(minute.is_due(60_000_000) && !minute.is_due(60_000_001));
    assert!(
        CheckLag::NONE.add_us(59_999_001).is_due(60_000_000),
        "1 ms early at most"
    );
    assert!(!CheckLag::NONE.add_us(59_999_000).is_due(60_000_000));
    // Checks far in the future or long after the last write saturate.
    let far = CheckLag::NONE.add_us(u64::MAX);
    assert_eq!(far, CheckLag(u32::MAX));
    assert!(far.is_due(u64::MAX));
    assert_eq!(far.add_us(u64::MAX), far);
    assert_eq!(CheckLag(u32::MAX - 1).add_us(5_000), far);
}

#[test]
fn checks_move_the_time_forward_only() {
    const T0: u64 = 1_700_000_000_000_000;
    let mut mailbox = Mailbox::new(T0);
    mailbox.checked(T0 - 1);
    mailbox.checked(0);
    assert_eq!(
        (mailbox.last_check_us, mailbox.check_lag),
        (T0, CheckLag::NONE)
    );
    mailbox.checked(T0 + 1_500);
    mailbox.checked(T0 + 1_700);
    assert_eq!(mailbox.last_check_us, T0 + 1_700);
    assert_eq!(
        mailbox.check_lag,
        CheckLag(3),
        "1.5 ms and 0.2 ms, each rounded up"
    );
    mailbox.persisted();
    assert!(!mailbox.check_lag.is_behind());
    assert_eq!(mailbox.last_check_us, T0 + 1_700);
    mailbox.checked(u64::MAX);
    assert_eq!(mailbox.last_check_us, u64::MAX);
    assert!(mailbox.check_lag.is_due(u64::MAX));
    // A mailbox loaded without a record counts as checked at 0.
    let mut orphan = Mailbox::new(0);
    orphan.checked(T0);
    assert!(orphan.check_lag.is_due(3_600_000_000));
}

/// Checks that come in while a batch commits are kept, and still count
/// as not written.
#[test]
fn a_commit_keeps_checks_made_meanwhile() {
    let index = Mutex::new(Index::default());
    lock(&index).mailboxes.insert(id(4), Mailbox::new(1_000));
    let mut batch = Batch::new(&index, StoreOptions::default());
    let mailbox = batch.change(id(4)).mailbox.as_mut().unwrap();
    mailbox.last_at = At(7);
    mailbox.persisted();
    lock(&index)
        .mailboxes
        .get_mut(&id(4))
        .unwrap()
        .checked(5_000);
    batch.apply();
    let index = lock(&index);
    let mailbox = index.mailboxes.get(&id(4)).unwrap();
    assert_eq!(mailbox.last_at, At(7));
    assert_eq!(mailbox.last_check_us, 5_000);
    assert_eq!(mailbox.check_lag, CheckLag(4));
}

/// A sweep that removes most mailboxes gives their memory back, and
/// every mailbox left is still found.
#[tokio::test]
async fn a_big_sweep_gives_memory_back() {
    const T0: u64 = 1_700_000_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::default();
    let store = RedbStore::open(dir.path(), options).unwrap();
    let sends = (0..4_000).map(|n| store.send(id(n), vec![1; 10], T0));
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }
    let later = T0 + options.mailbox_idle_us;
    let kept: Vec<(MailboxId, At)> = (0..4_000).step_by(100).map(|n| (id(n), At::ZERO)).collect();
    store.check(&kept, later).await.unwrap();
    let capacity = store.open_index().unwrap().mailboxes.capacity();
    assert!(capacity >= 4_000);
    let report = store.sweep(later + 1).await.unwrap();
    assert_eq!(report.mailboxes_removed, 3_960);
    {
        let index = store.open_index().unwrap();
        assert_eq!(index.mailboxes.len(), 40);
        assert!(
            index.mailboxes.capacity() < capacity / 4,
            "memory given back: {} of {capacity}",
            index.mailboxes.capacity()
        );
        for n in 0..4_000 {
            let found = index.mailboxes.get(&id(n)).map(|m| m.last_check_us);
            assert_eq!(found, (n % 100 == 0).then_some(later), "{n}");
        }
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.mailboxes, 40);
    store.close().await.unwrap();
}

/// What the index holds after a restart: exact check times, nothing
/// behind, and a queue only where messages are left.
#[tokio::test]
async fn the_index_reloads_exactly() {
    const T0: u64 = 1_700_000_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::default();
    let ttl = options.message_ttl_us;
    let store = RedbStore::open(dir.path(), options).unwrap();
    store.send(id(5), vec![1; 100], T0).await.unwrap();
    store.send(id(6), vec![2; 100], T0).await.unwrap();
    store.send(id(6), vec![3; 50], T0 + ttl).await.unwrap();
    store
        .check(&[(id(5), At::ZERO)], T0 + 1_234_567)
        .await
        .unwrap();
    store.sweep(T0 + ttl).await.unwrap();
    store.close().await.unwrap();

    let store = RedbStore::open(dir.path(), options).unwrap();
    {
        let index = store.open_index().unwrap();
        assert_eq!(
            (index.mailboxes.len(), index.messages, index.bytes),
            (2, 1, 50)
        );
        let idle = index.mailboxes.get(&id(5)).unwrap();
        assert_eq!(idle.last_check_us, T0 + 1_234_567);
        assert_eq!(idle.check_lag, CheckLag::NONE);
        assert!(idle.pending.is_none());
        assert_eq!(idle.last_at, At(T0));
        let busy = index.mailboxes.get(&id(6)).unwrap();
        assert_eq!(busy.pending().count(), 1);
        assert_eq!(busy.last_at, At(T0 + ttl));
    }
    store.close().await.unwrap();
}

/// A new database with its (empty) index, in a temporary directory.
fn fresh_database() -> (tempfile::TempDir, Handle, Mutex<Index>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let db = Database::create(&path).unwrap();
    init_schema(&db).unwrap();
    let index = Mutex::new(load_index(&db).unwrap());
    (dir, Handle::new(path, db), index)
}

/// Queues `count` sends to one mailbox before the writer runs, runs it
/// with `options` until the queue is drained, and returns how many
/// commits it made, each send's answer, and the index.
fn run_queued_sends(count: u8, options: StoreOptions) -> (u64, Vec<Result<At, StoreError>>, Index) {
    let (_dir, db, index) = fresh_database();
    let (queue, receiver) = mpsc::channel(QUEUE);
    let mut answers = Vec::new();
    for i in 0..count {
        let (reply, answer) = oneshot::channel();
        let op = Op::Send {
            mailbox: MailboxId([2; PUBLIC_KEY_LEN]),
            data: vec![i; 120],
            now_us: 1,
            reply,
        };
        assert!(queue.try_send(op).is_ok());
        answers.push(answer);
    }
    drop(queue);
    run_writer(&db, &index, options, receiver);
    let answers = answers
        .into_iter()
        .map(|mut answer| answer.try_recv().unwrap())
        .collect();
    let index = index.into_inner().unwrap();
    (db.commits.load(Ordering::Relaxed), answers, index)
}

/// Operations that wait while the writer is busy share one commit.
#[test]
fn queued_sends_share_one_commit() {
    let (commits, answers, index) = run_queued_sends(50, StoreOptions::default());
    assert_eq!(commits, 1, "one commit for 50 sends");
    let ats: Vec<At> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(ats, (0..50).map(|i| At(1 + i)).collect::<Vec<_>>());
    assert_eq!(index.messages, 50);
}

/// `max_commit_batch: 1` turns group commit off: one commit per send.
#[test]
fn a_commit_batch_of_one_commits_every_send() {
    let options = StoreOptions {
        max_commit_batch: 1,
        ..StoreOptions::default()
    };
    let (commits, answers, _) = run_queued_sends(10, options);
    assert_eq!(commits, 10, "one commit per send");
    for answer in answers {
        assert!(answer.is_ok());
    }
}

/// Every message of the table is in the index and the other way round,
/// with its size, and the index's totals add up.
fn assert_table_matches_index(db: &Database, index: &Index) {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(MESSAGES).unwrap();
    let mut in_table = Vec::new();
    for entry in table.iter().unwrap() {
        let (key, value) = entry.unwrap();
        let (id, at) = split_key(key.value());
        in_table.push((id, at, u32::try_from(value.value().len()).unwrap()));
    }
    let mut in_index: Vec<(MailboxId, At, u32)> = index
        .mailboxes
        .iter()
        .flat_map(|(id, m)| m.pending().map(|&(at, size)| (*id, at, size)))
        .collect();
    in_table.sort();
    in_index.sort();
    assert_eq!(in_table, in_index);
    assert_eq!(index.messages, in_index.len() as u64);
    let bytes: u64 = in_index.iter().map(|(_, _, size)| u64::from(*size)).sum();
    assert_eq!(index.bytes, bytes);
}

/// Sends, deletes and sweeps (expired messages, idle mailboxes that
/// still hold live ones) leave the table and the index in agreement.
#[tokio::test]
async fn the_table_follows_the_index() {
    const T0: u64 = 1_700_000_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::default();
    let (ttl, idle) = (options.message_ttl_us, options.mailbox_idle_us);
    let store = RedbStore::open(dir.path(), options).unwrap();
    let check = |store: &RedbStore| {
        assert_table_matches_index(&store.database().unwrap(), &store.open_index().unwrap());
    };
    // Mailboxes 0..8 get messages at T0 and T0 + ttl / 2, 8 only late.
    for n in 0..8 {
        store
            .send(id(n), vec![1; 10 + usize::from(n)], T0)
            .await
            .unwrap();
    }
    for n in 0..9 {
        let half = T0 + ttl / 2;
        store.send(id(n), vec![2; 100], half).await.unwrap();
        store.send(id(n), vec![3; 7], half).await.unwrap();
    }
    // Mailbox 9 is made at T0 and sent to just before it goes idle.
    store.send(id(9), vec![4; 50], T0).await.unwrap();
    store
        .send(id(9), vec![5; 60], T0 + idle - 10)
        .await
        .unwrap();
    check(&store);
    assert_eq!(
        store.delete(id(1), false, T0 + 1).await.unwrap(),
        Deleted::Removed
    );
    check(&store);
    let report = store.sweep(T0 + ttl).await.unwrap();
    assert_eq!(report.messages_removed, 7 + 1, "the first of 0, 2..8 and 9");
    check(&store);
    // Everything but the last of mailbox 9 has expired, and every
    // mailbox made at T0 but the ones checked now is idle.
    for n in [0, 2] {
        store
            .check(&[(id(n), At::ZERO)], T0 + idle - 5)
            .await
            .unwrap();
    }
    let report = store.sweep(T0 + idle).await.unwrap();
    assert_eq!(report.messages_removed, 2 * 8, "0 and 2..8 twice");
    assert_eq!(
        report.mailboxes_removed,
        5 + 1,
        "3..7, and 9 with its message"
    );
    check(&store);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.mailboxes, stats.messages, stats.bytes), (3, 0, 0));
    store.close().await.unwrap();
}

/// A sweep also expires what the sends of its own batch stored (their
/// mailboxes are not in the index yet).
#[test]
fn a_sweep_expires_what_its_own_batch_sent() {
    const T0: u64 = 1_700_000_000_000_000;
    let (_dir, db, index) = fresh_database();
    let options = StoreOptions::default();
    let ttl = options.message_ttl_us;
    let (queue, receiver) = mpsc::channel(QUEUE);
    let mut sends = Vec::new();
    for (n, now_us) in [(0, T0), (1, T0), (2, T0), (0, T0 + ttl)] {
        let (reply, answer) = oneshot::channel();
        let data = vec![n as u8; 10 + n];
        let op = Op::Send {
            mailbox: id(n as u16),
            data,
            now_us,
            reply,
        };
        assert!(queue.try_send(op).is_ok());
        sends.push(answer);
    }
    let (reply, mut swept) = oneshot::channel();
    let sweep = Op::Sweep {
        now_us: T0 + ttl,
        reply,
    };
    assert!(queue.try_send(sweep).is_ok());
    drop(queue);
    run_writer(&db, &index, options, receiver);
    assert_eq!(db.commits.load(Ordering::Relaxed), 1);
    for mut answer in sends {
        answer.try_recv().unwrap().unwrap();
    }
    assert_eq!(swept.try_recv().unwrap().unwrap().messages_removed, 3);
    let index = index.into_inner().unwrap();
    assert_eq!((index.messages, index.bytes), (1, 10));
    assert_eq!(index.mailboxes.len(), 3);
    assert_table_matches_index(&db.database().unwrap(), &index);
}

/// A message the index lists but a later commit removed is skipped,
/// and `receive` looks further for the limit.
#[tokio::test]
async fn receive_skips_what_the_snapshot_lacks() {
    const T0: u64 = 1_700_000_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
    let a = id(1);
    let mut ats = Vec::new();
    for n in 0..6u8 {
        ats.push(store.send(a, vec![n; 20], T0).await.unwrap());
        store.send(id(2), vec![n; 30], T0).await.unwrap();
    }
    // Remove messages 0, 1 and 3 behind the index's back, as a commit
    // after the index was read would.
    let db = store.database().unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(MESSAGES).unwrap();
        for n in [0, 1, 3] {
            assert!(table.remove(&message_key(&a, ats[n])).unwrap().is_some());
        }
    }
    txn.commit().unwrap();
    let received = |after: At, limit: u32| {
        let store = &store;
        async move {
            let got = store.receive(a, after, limit, T0).await.unwrap();
            got.into_iter()
                .map(|m| (m.at, m.data[0]))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(received(At::ZERO, 1).await, [(ats[2], 2)]);
    assert_eq!(received(At::ZERO, 2).await, [(ats[2], 2), (ats[4], 4)]);
    assert_eq!(
        received(At::ZERO, 10).await,
        [(ats[2], 2), (ats[4], 4), (ats[5], 5)]
    );
    assert_eq!(received(ats[2], 1).await, [(ats[4], 4)]);
    assert_eq!(received(ats[4], 5).await, [(ats[5], 5)]);
    assert_eq!(received(ats[5], 5).await, []);
    let other = store.receive(id(2), At::ZERO, 10, T0).await.unwrap();
    assert_eq!(other.len(), 6);
    store.close().await.unwrap();
}

/// A file written by schema 1 (messages keyed `mailbox || at`) is
/// migrated when opened: every message is still there, received in
/// order, and the old table is gone.
#[tokio::test]
async fn a_schema_1_file_is_migrated() {
    const T0: u64 = 1_700_000_000_000_000;
    const OLD_MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
    const OLD_MAILBOXES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("mailboxes");
    const OLD_META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    // 7 mailboxes, `at`s that interleave and repeat across mailboxes.
    let sent: Vec<(MailboxId, At, Vec<u8>)> = (0..300u32)
        .map(|n| {
            let data = n.to_be_bytes().repeat(1 + n as usize % 5);
            (id((n % 7) as u16), At(T0 + u64::from(n / 3)), data)
        })
        .collect();
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(OLD_META).unwrap();
            meta.insert("schema", 1).unwrap();
            meta.insert("floor", T0 - 1).unwrap();
            let mut mailboxes = txn.open_table(OLD_MAILBOXES).unwrap();
            let mut messages = txn.open_table(OLD_MESSAGES).unwrap();
            for (id, at, data) in &sent {
                let mut key = id.0.to_vec();
                key.extend_from_slice(&at.0.to_be_bytes());
                messages.insert(key.as_slice(), data.as_slice()).unwrap();
                mailboxes.insert(id.0.as_slice(), (at.0, T0)).unwrap();
            }
            // A mailbox without messages.
            mailboxes.insert(id(99).0.as_slice(), (T0 - 5, T0)).unwrap();
        }
        txn.commit().unwrap();
    }
    let options = StoreOptions {
        max_pending_per_mailbox: 1_000,
        ..StoreOptions::default()
    };
    for _ in 0..2 {
        // Opened twice: the second time there is nothing to migrate.
        let store = RedbStore::open(dir.path(), options).unwrap();
        let stats = store.stats().await.unwrap();
        let bytes: usize = sent.iter().map(|(_, _, data)| data.len()).sum();
        assert_eq!(
            (stats.mailboxes, stats.messages, stats.bytes),
            (8, 300, bytes as u64)
        );
        for n in 0..7 {
            let expected: Vec<(At, Vec<u8>)> = sent
                .iter()
                .filter(|(mailbox, _, _)| *mailbox == id(n))
                .map(|(_, at, data)| (*at, data.clone()))
                .collect();
            let mut got = Vec::new();
            let mut after = At::ZERO;
            loop {
                let page = store.receive(id(n), after, 6, T0).await.unwrap();
                let Some(last) = page.last() else { break };
                after = last.at;
                got.extend(page.into_iter().map(|m| (m.at, m.data)));
            }
            assert_eq!(got, expected, "mailbox {n}");
        }
        assert_table_matches_index(&store.database().unwrap(), &store.open_index().unwrap());
        assert_eq!(store.open_index().unwrap().floor, At(T0 - 1));
        store.close().await.unwrap();
    }
    let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let tables: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|table| table.name().to_owned())
        .collect();
    assert!(!tables.iter().any(|name| name == "messages"), "{tables:?}");
    let meta = txn.open_table(META).unwrap();
    assert_eq!(meta.get("schema").unwrap().unwrap().value(), SCHEMA);
    assert!(txn.open_table(MESSAGES).unwrap().len().unwrap() == 300);
}

/// A schema this relay does not know is refused, not overwritten.
#[test]
fn an_unknown_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META).unwrap().insert("schema", 3).unwrap();
    txn.commit().unwrap();
    assert!(matches!(init_schema(&db), Err(StoreError::Corrupt(_))));
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    assert_eq!(meta.get("schema").unwrap().unwrap().value(), 3);
}

/// Runs the writer over `ops` queued before it starts: one batch.
fn run_batch(db: &Handle, index: &Mutex<Index>, options: StoreOptions, ops: Vec<Op>) {
    let (queue, receiver) = mpsc::channel(QUEUE);
    for op in ops {
        assert!(queue.try_send(op).is_ok());
    }
    drop(queue);
    let before = db.commits.load(Ordering::Relaxed);
    run_writer(db, index, options, receiver);
    assert_eq!(db.commits.load(Ordering::Relaxed), before + 1);
}

fn send_op(n: u16, now_us: u64) -> (Op, oneshot::Receiver<Result<At, StoreError>>) {
    let (reply, answer) = oneshot::channel();
    let op = Op::Send {
        mailbox: id(n),
        data: vec![n as u8; 10],
        now_us,
        reply,
    };
    (op, answer)
}

/// A batch that expires, deletes and sends on top of messages committed
/// before it leaves exactly the right queues (the batch keeps only what
/// it changed, and merges it into the index after the commit).
#[test]
fn a_batch_changes_committed_queues() {
    const T0: u64 = 1_700_000_000_000_000;
    let (_dir, db, index) = fresh_database();
    let options = StoreOptions {
        max_pending_per_mailbox: 3,
        ..StoreOptions::default()
    };
    let ttl = options.message_ttl_us;
    let first: Vec<_> = [1, 1, 1, 2, 2].map(|n| send_op(n, T0)).into();
    let (ops, answers): (Vec<Op>, Vec<_>) = first.into_iter().unzip();
    run_batch(&db, &index, options, ops);
    for mut answer in answers {
        answer.try_recv().unwrap().unwrap();
    }
    let pending = |index: &Mutex<Index>, n: u16| -> Vec<At> {
        lock(index)
            .mailboxes
            .get(&id(n))
            .map(|m| m.pending().map(|(at, _)| *at).collect())
            .unwrap_or_default()
    };
    assert_eq!(pending(&index, 1), [At(T0), At(T0 + 1), At(T0 + 2)]);
    assert_eq!(pending(&index, 2), [At(T0), At(T0 + 1)]);

    let now = T0 + 1 + ttl;
    let (reply, mut swept) = oneshot::channel();
    let mut ops = vec![Op::Sweep { now_us: now, reply }];
    let mut sends = Vec::new();
    for _ in 0..3 {
        let (op, answer) = send_op(1, now);
        ops.push(op);
        sends.push(answer);
    }
    let mut deletes = Vec::new();
    for n in [2, 3] {
        let (reply, answer) = oneshot::channel();
        ops.push(Op::Delete {
            mailbox: id(n),
            only_if_empty: true,
            now_us: now,
            reply,
        });
        deletes.push(answer);
    }
    let (op, mut remade) = send_op(2, now);
    ops.push(op);
    run_batch(&db, &index, options, ops);

    assert_eq!(swept.try_recv().unwrap().unwrap().messages_removed, 4);
    let sent: Vec<_> = sends
        .into_iter()
        .map(|mut a| a.try_recv().unwrap())
        .collect();
    assert_eq!(sent[0].as_ref().unwrap(), &At(now));
    assert_eq!(sent[1].as_ref().unwrap(), &At(now + 1));
    assert!(matches!(sent[2], Err(StoreError::MailboxFull)), "3 live");
    let deleted: Vec<_> = deletes
        .into_iter()
        .map(|mut a| a.try_recv().unwrap().unwrap())
        .collect();
    assert_eq!(deleted, [Deleted::Removed, Deleted::Absent]);
    assert_eq!(remade.try_recv().unwrap().unwrap(), At(now));
    assert_eq!(pending(&index, 1), [At(T0 + 2), At(now), At(now + 1)]);
    assert_eq!(pending(&index, 2), [At(now)]);
    let index = index.into_inner().unwrap();
    assert_eq!(index.floor, At(T0 + 1));
    assert_eq!(index.mailboxes.len(), 2);
    assert_table_matches_index(&db.database().unwrap(), &index);
}

/// The database file, failing every write with "No space left on device"
/// while `full` is set (everything else goes to the file).
#[derive(Debug)]
struct FullDisk {
    file: redb::backends::FileBackend,
    full: Arc<std::sync::atomic::AtomicBool>,
}

type Bound = std::ops::Bound<u64>;

impl redb::StorageBackend for FullDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        self.file.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }
    fn try_lock_range(&self, s: Bound, e: Bound) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(s, e)
    }
    fn try_lock_shared_range(&self, s: Bound, e: Bound) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound, e: Bound) -> Result<(), redb::BackendError> {
        self.file.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound, e: Bound) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound, e: Bound) -> Result<(), redb::BackendError> {
        self.file.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound, e: Bound) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(s, e)
    }
}

/// A commit that fails with ENOSPC answers every operation of its batch
/// "unavailable" (not "closed") and marks the store failing; the next
/// commit reopens the file (here without the fault) first and succeeds:
/// nothing acknowledged is lost, and the failure ends.
#[test]
fn a_failed_commit_reopens_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    let backend = FullDisk {
        file: redb::backends::FileBackend::new(file).unwrap(),
        full: Arc::clone(&full),
    };
    let db = Database::builder().create_with_backend(backend).unwrap();
    init_schema(&db).unwrap();
    let index = Mutex::new(load_index(&db).unwrap());
    let handle = Handle::new(path, db);
    let (first, mut acked) = send_op(1, 10);
    run_batch(&handle, &index, StoreOptions::default(), vec![first]);
    let acked = acked.try_recv().unwrap().unwrap();

    full.store(true, Ordering::SeqCst);
    let (send, mut refused) = send_op(1, 20);
    let (reply, mut flushed) = oneshot::channel();
    let (queue, receiver) = mpsc::channel(QUEUE);
    assert!(queue.try_send(send).is_ok());
    assert!(queue.try_send(Op::Flush { reply }).is_ok());
    drop(queue);
    run_writer(&handle, &index, StoreOptions::default(), receiver);
    for error in [
        refused.try_recv().unwrap().unwrap_err(),
        flushed.try_recv().unwrap().unwrap_err(),
    ] {
        assert!(
            matches!(&error, StoreError::Unavailable(why) if why.contains("os error 28")),
            "{error}"
        );
    }
    assert!(handle.failing().is_some());
    // The writer reopened the file (the plain one: space is free again)
    // for its last flush; the next commit succeeds and ends the failure.
    let (again, mut answer) = send_op(1, 30);
    run_batch(&handle, &index, StoreOptions::default(), vec![again]);
    assert!(answer.try_recv().unwrap().is_ok());
    assert_eq!(handle.failing(), None);
    let index = index.into_inner().unwrap();
    let db = handle.database().unwrap();
    assert_table_matches_index(&db, &index);
    let pending: Vec<At> = index.mailboxes[&id(1)]
        .pending()
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(pending.len(), 2, "the acknowledged send and the last one");
    assert_eq!(pending[0], acked);
}

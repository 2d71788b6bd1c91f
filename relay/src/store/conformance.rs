//! The conformance suite every [`Store`] backend must pass, written so that
//! it runs unchanged against any backend.
//!
//! A backend provides a [`StoreFactory`] that makes a new, empty store with
//! given [`StoreOptions`] (a fresh directory, a fresh Redis key prefix or
//! database, ...). Then, in an integration test file:
//!
//! ```ignore
//! connectoid_relay::store_conformance_tests!(MyFactory::new());
//! ```
//!
//! expands to one `#[tokio::test]` per case (the test crate needs `tokio`
//! with the `macros` and `rt` features). A backend that needs a server
//! which may be missing writes `store_conformance_tests!(optional:
//! EXPRESSION)` with an expression of type `Option<impl StoreFactory>`:
//! `None` skips the case (the expression says why, or panics where a skip
//! is not acceptable, such as under CI). Each case is also a plain `pub async
//! fn` here, for backends that want to run them another way. Every case
//! passes its own `now_us`, so expiry is tested without waiting; a backend
//! that expires data by its own clock must still filter reads by `now_us`.
//!
//! The cases test what the relay relies on: `at` assignment, durability of
//! what a call returned, check/receive semantics, expiry, caps, questions,
//! delete, sweep and counts. Crash recovery is backend-specific and tested
//! with each backend.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use connectoid_protocol::At;

use super::{Deleted, MailboxId, Question, Store, StoreError, StoreOptions};

/// Makes fresh, empty stores for the suite.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A new, empty store with `options`.
    async fn make(&self, options: StoreOptions) -> Arc<dyn Store>;
}

#[async_trait]
impl<F, Fut> StoreFactory for F
where
    F: Fn(StoreOptions) -> Fut + Send + Sync,
    Fut: Future<Output = Arc<dyn Store>> + Send,
{
    async fn make(&self, options: StoreOptions) -> Arc<dyn Store> {
        self(options).await
    }
}

/// Runs every case in order, on fresh stores.
pub async fn run_all(factory: &dyn StoreFactory) {
    at_is_strictly_increasing(factory).await;
    concurrent_sends_get_distinct_ats(factory).await;
    check_answers_per_mailbox_and_cursor(factory).await;
    receive_pages_in_at_order(factory).await;
    messages_expire_after_their_ttl(factory).await;
    mailbox_full_until_messages_expire(factory).await;
    relay_full_by_bytes_and_by_mailboxes(factory).await;
    questions_are_kept_once_until_they_expire(factory).await;
    delete_respects_only_if_empty(factory).await;
    sweep_removes_expired_messages(factory).await;
    sweep_removes_idle_mailboxes(factory).await;
    push_registrations_live_with_their_mailbox(factory).await;
}

/// Start of time for every case: 2023-11-14, in µs.
pub const T0: u64 = 1_700_000_000_000_000;
const SECOND: u64 = 1_000_000;

/// The options of the suite: one-hour messages, thirty-day mailboxes, small
/// caps where a case needs them.
pub fn options() -> StoreOptions {
    StoreOptions {
        message_ttl_us: 3_600 * SECOND,
        mailbox_idle_us: 30 * 86_400 * SECOND,
        check_persist_us: 3_600 * SECOND,
        max_pending_per_mailbox: 1_000,
        max_stored_bytes: 1 << 30,
        max_mailboxes: 1_000_000,
        max_commit_batch: 512,
    }
}

/// A mailbox id for tests (not a curve point; stores must not care).
pub fn mailbox(n: u8) -> MailboxId {
    let mut bytes = [n; 49];
    bytes[0] = 0x02;
    MailboxId(bytes)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

async fn send_ok(store: &dyn Store, id: MailboxId, bytes: &[u8], now: u64) -> At {
    match store.send(id, bytes.to_vec(), now).await {
        Ok(at) => at,
        Err(error) => panic!("send failed: {error}"),
    }
}

async fn check_one(store: &dyn Store, id: MailboxId, after: At, now: u64) -> bool {
    let found = store.check(&[(id, after)], now).await.expect("check");
    assert_eq!(found.len(), 1, "one answer per check");
    found[0]
}

/// `at` is `max(now, last + 1)`: equal, earlier and later clocks.
pub async fn at_is_strictly_increasing(factory: &dyn StoreFactory) {
    let store = factory.make(options()).await;
    let a = mailbox(1);
    assert_eq!(send_ok(&*store, a, &data(200), T0).await, At(T0));
    assert_eq!(send_ok(&*store, a, &data(200), T0).await, At(T0 + 1));
    // The clock steps back: `at` still grows.
    assert_eq!(
        send_ok(&*store, a, &data(200), T0 - 5 * SECOND).await,
        At(T0 + 2)
    );
    assert_eq!(
        send_ok(&*store, a, &data(200), T0 + SECOND).await,
        At(T0 + SECOND)
    );
    // Mailboxes are independent.
    assert_eq!(send_ok(&*store, mailbox(2), &data(200), T0).await, At(T0));
}

/// Many concurrent sends to one mailbox: distinct `at`s, all received.
pub async fn concurrent_sends_get_distinct_ats(factory: &dyn StoreFactory) {
    let store = factory.make(options()).await;
    let a = mailbox(3);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100u8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move { (i, store.send(a, vec![i; 150], T0).await) });
    }
    let mut ats = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.expect("task");
        ats.push((result.expect("send"), i));
    }
    ats.sort();
    for pair in ats.windows(2) {
        assert!(pair[0].0 < pair[1].0, "duplicate at {:?}", pair[0].0);
    }
    let received = store.receive(a, At::ZERO, 100, T0).await.expect("receive");
    assert_eq!(received.len(), 100);
    for (message, (at, i)) in received.iter().zip(&ats) {
        assert_eq!(message.at, *at);
        assert_eq!(message.data, vec![*i; 150]);
    }
}

/// `check` is per mailbox and cursor, keeps order, and creates nothing.
pub async fn check_answers_per_mailbox_and_cursor(factory: &dyn StoreFactory) {
    let store = factory.make(options()).await;
    let (a, b, unknown) = (mailbox(4), mailbox(5), mailbox(6));
    assert!(!check_one(&*store, unknown, At::ZERO, T0).await);
    let first = send_ok(&*store, a, &data(120), T0).await;
    let second = send_ok(&*store, a, &data(120), T0 + 10).await;
    send_ok(&*store, b, &data(120), T0).await;
    assert!(check_one(&*store, a, At::ZERO, T0).await);
    assert!(check_one(&*store, a, first, T0).await);
    assert!(!check_one(&*store, a, second, T0).await);
    assert!(!check_one(&*store, a, At(u64::MAX), T0).await);
    let found = store
        .check(&[(unknown, At::ZERO), (a, second), (b, At::ZERO)], T0)
        .await
        .expect("check");
    assert_eq!(found, vec![false, false, true]);
    assert!(store.check(&[], T0).await.expect("empty check").is_empty());
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.mailboxes, 2, "a check must not create a mailbox");
}

/// `receive` returns messages after the cursor, oldest first, up to `limit`.
pub async fn receive_pages_in_at_order(factory: &dyn StoreFactory) {
    let store = factory.make(options()).await;
    let a = mailbox(7);
    let mut sent = Vec::new();
    for i in 0..5usize {
        let bytes = data(113 + i);
        let at = send_ok(&*store, a, &bytes, T0 + i as u64).await;
        sent.push((at, bytes));
    }
    let page = store.receive(a, At::ZERO, 2, T0).await.expect("receive");
    assert_eq!(page.len(), 2);
    assert_eq!((page[0].at, &page[0].data), (sent[0].0, &sent[0].1));
    assert_eq!((page[1].at, &page[1].data), (sent[1].0, &sent[1].1));
    let rest = store
        .receive(a, page[1].at, 100, T0)
        .await
        .expect("receive");
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[2].at, sent[4].0);
    assert_eq!(rest[2].data, sent[4].1);
    assert!(
        store
            .receive(a, sent[4].0, 100, T0)
            .await
            .expect("receive")
            .is_empty()
    );
    assert!(
        store
            .receive(mailbox(8), At::ZERO, 100, T0)
            .await
            .expect("receive")
            .is_empty()
    );
    // Receiving does not delete.
    assert_eq!(
        store
            .receive(a, At::ZERO, 100, T0)
            .await
            .expect("receive")
            .len(),
        5
    );
}

/// A message is visible until `at + ttl`, then neither checked nor received.
pub async fn messages_expire_after_their_ttl(factory: &dyn StoreFactory) {
    let options = options();
    let store = factory.make(options).await;
    let a = mailbox(9);
    let first = send_ok(&*store, a, &data(150), T0).await;
    let second = send_ok(&*store, a, &data(150), T0 + 30 * SECOND).await;
    let just_before = first.0 + options.message_ttl_us - 1;
    assert!(check_one(&*store, a, At::ZERO, just_before).await);
    assert_eq!(
        store
            .receive(a, At::ZERO, 10, just_before)
            .await
            .expect("receive")
            .len(),
        2
    );
    let first_expired = first.0 + options.message_ttl_us;
    let left = store
        .receive(a, At::ZERO, 10, first_expired)
        .await
        .expect("receive");
    assert_eq!(left.iter().map(|m| m.at).collect::<Vec<_>>(), vec![second]);
    let all_expired = second.0 + options.message_ttl_us;
    assert!(!check_one(&*store, a, At::ZERO, all_expired).await);
    assert!(
        store
            .receive(a, At::ZERO, 10, all_expired)
            .await
            .expect("receive")
            .is_empty()
    );
    // A new message after expiry still gets a larger `at`.
    let later = send_ok(&*store, a, &data(150), all_expired).await;
    assert!(later > second);
}

/// The per-mailbox cap counts unexpired messages only.
pub async fn mailbox_full_until_messages_expire(factory: &dyn StoreFactory) {
    let mut options = options();
    options.max_pending_per_mailbox = 2;
    let store = factory.make(options).await;
    let a = mailbox(10);
    send_ok(&*store, a, &data(150), T0).await;
    send_ok(&*store, a, &data(150), T0).await;
    assert!(matches!(
        store.send(a, data(150), T0).await,
        Err(StoreError::MailboxFull)
    ));
    // Another mailbox is not affected, and nothing was stored by the refusal.
    send_ok(&*store, mailbox(11), &data(150), T0).await;
    assert_eq!(
        store
            .receive(a, At::ZERO, 10, T0)
            .await
            .expect("receive")
            .len(),
        2
    );
    let later = T0 + options.message_ttl_us + 1;
    send_ok(&*store, a, &data(150), later).await;
}

/// Total bytes and mailbox count are capped.
pub async fn relay_full_by_bytes_and_by_mailboxes(factory: &dyn StoreFactory) {
    let mut options = options();
    options.max_stored_bytes = 500;
    options.max_mailboxes = 2;
    let store = factory.make(options).await;
    send_ok(&*store, mailbox(12), &data(200), T0).await;
    send_ok(&*store, mailbox(12), &data(300), T0).await;
    assert!(matches!(
        store.send(mailbox(12), data(1), T0).await,
        Err(StoreError::RelayFull(_))
    ));
    let store = factory.make(options).await;
    send_ok(&*store, mailbox(13), &data(120), T0).await;
    send_ok(&*store, mailbox(14), &data(120), T0).await;
    assert!(matches!(
        store.send(mailbox(15), data(120), T0).await,
        Err(StoreError::RelayFull(_))
    ));
    // Existing mailboxes still take messages.
    send_ok(&*store, mailbox(13), &data(120), T0).await;
    assert!(!check_one(&*store, mailbox(15), At::ZERO, T0).await);
}

fn question(byte: u8, expires_us: u64) -> Question {
    Question {
        secret: [byte; 32],
        sealed: vec![byte; 145],
        expires_us,
    }
}

/// The first question offered is kept until it expires; later offers get it.
pub async fn questions_are_kept_once_until_they_expire(factory: &dyn StoreFactory) {
    let store = factory.make(options()).await;
    let a = mailbox(16);
    send_ok(&*store, a, &data(150), T0).await;
    assert_eq!(store.question(a, T0).await.expect("question"), None);
    let expires = T0 + 60 * SECOND;
    let kept = store
        .offer_question(a, question(1, expires), T0)
        .await
        .expect("offer");
    assert_eq!(kept, question(1, expires));
    let again = store
        .offer_question(a, question(2, expires + 5), T0 + SECOND)
        .await
        .expect("offer");
    assert_eq!(
        again,
        question(1, expires),
        "a live question is never replaced"
    );
    assert_eq!(
        store.question(a, expires - 1).await.expect("question"),
        Some(question(1, expires))
    );
    assert_eq!(store.question(a, expires).await.expect("question"), None);
    assert_eq!(
        store.question(mailbox(17), T0).await.expect("question"),
        None
    );
    let next = store
        .offer_question(a, question(3, expires + 60 * SECOND), expires)
        .await
        .expect("offer");
    assert_eq!(next, question(3, expires + 60 * SECOND));
}

/// `delete` removes everything of one mailbox, unless asked to keep a
/// non-empty one; it is idempotent.
pub async fn delete_respects_only_if_empty(factory: &dyn StoreFactory) {
    let store = factory.make(options()).await;
    let (a, b) = (mailbox(18), mailbox(19));
    let last = send_ok(&*store, a, &data(150), T0).await;
    send_ok(&*store, b, &data(150), T0).await;
    store
        .offer_question(a, question(4, T0 + 60 * SECOND), T0)
        .await
        .expect("offer");
    assert_eq!(
        store.delete(a, true, T0).await.expect("delete"),
        Deleted::NotEmpty
    );
    assert!(
        check_one(&*store, a, At::ZERO, T0).await,
        "NotEmpty changes nothing"
    );
    assert_eq!(
        store.delete(a, false, T0).await.expect("delete"),
        Deleted::Removed
    );
    assert!(!check_one(&*store, a, At::ZERO, T0).await);
    assert!(
        store
            .receive(a, At::ZERO, 10, T0)
            .await
            .expect("receive")
            .is_empty()
    );
    assert_eq!(store.question(a, T0).await.expect("question"), None);
    assert_eq!(
        store.delete(a, false, T0).await.expect("delete"),
        Deleted::Absent
    );
    assert!(
        check_one(&*store, b, At::ZERO, T0).await,
        "other mailboxes stay"
    );
    // An empty (all expired) mailbox may be deleted without an answer.
    let expired = T0 + options().message_ttl_us;
    assert_eq!(
        store.delete(b, true, expired).await.expect("delete"),
        Deleted::Removed
    );
    // A later send makes the mailbox anew, and even with the clock behind,
    // `at` does not go back below what the removed mailbox had.
    let again = send_ok(&*store, a, &data(150), T0 - 1_000).await;
    assert!(again > last, "{again} after {last}");
    assert_eq!(store.stats().await.expect("stats").mailboxes, 1);
}

/// A sweep removes expired messages and questions and updates the counts.
pub async fn sweep_removes_expired_messages(factory: &dyn StoreFactory) {
    let options = options();
    let store = factory.make(options).await;
    let a = mailbox(20);
    send_ok(&*store, a, &data(100), T0).await;
    send_ok(&*store, a, &data(150), T0 + 10 * SECOND).await;
    store
        .offer_question(a, question(5, T0 + 60 * SECOND), T0)
        .await
        .expect("offer");
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.messages, stats.bytes, stats.questions), (2, 250, 1));
    store
        .sweep(T0 + options.message_ttl_us)
        .await
        .expect("sweep");
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.messages, stats.bytes, stats.questions), (1, 150, 0));
    store
        .sweep(T0 + 10 * SECOND + options.message_ttl_us)
        .await
        .expect("sweep");
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.mailboxes, stats.messages, stats.bytes), (1, 0, 0));
}

/// A sweep removes mailboxes whose last check is older than the idle time.
pub async fn sweep_removes_idle_mailboxes(factory: &dyn StoreFactory) {
    let options = options();
    let idle = options.mailbox_idle_us;
    let store = factory.make(options).await;
    let (a, b) = (mailbox(21), mailbox(22));
    send_ok(&*store, a, &data(120), T0).await;
    send_ok(&*store, b, &data(120), T0).await;
    // `b` is checked just before it would be idle; `a` never is.
    assert!(!check_one(&*store, b, At(u64::MAX), T0 + idle - 1).await);
    store.sweep(T0 + idle - 1).await.expect("sweep");
    assert_eq!(store.stats().await.expect("stats").mailboxes, 2);
    store.sweep(T0 + idle).await.expect("sweep");
    assert_eq!(store.stats().await.expect("stats").mailboxes, 1);
    assert!(
        store
            .receive(a, At::ZERO, 10, T0 + 1)
            .await
            .expect("receive")
            .is_empty()
    );
    store.sweep(T0 + 2 * idle - 1).await.expect("sweep");
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.mailboxes, stats.messages), (0, 0));
}

/// A push registration needs an existing mailbox, is replaced by the next,
/// removed by its owner (or, naming its endpoint, after a push service's
/// "gone"), and goes with its mailbox: on delete and on idle removal.
pub async fn push_registrations_live_with_their_mailbox(factory: &dyn StoreFactory) {
    use connectoid_protocol::push::{PushSubscription, WebPushKeys};
    let options = options();
    let idle = options.mailbox_idle_us;
    let store = factory.make(options).await;
    let (a, b) = (mailbox(31), mailbox(32));
    let unified = PushSubscription {
        endpoint: "https://push.example/up?token=1".into(),
        web_push: None,
    };
    let mut p256dh = [7u8; 65];
    p256dh[0] = 4;
    let web = PushSubscription {
        endpoint: "https://push.example/wp/2".into(),
        web_push: Some(WebPushKeys {
            p256dh,
            auth: [9; 16],
        }),
    };
    let push = |id| {
        let store = Arc::clone(&store);
        async move { store.push(id, T0).await.expect("push") }
    };
    assert!(
        !store.set_push(a, &unified, T0).await.expect("set"),
        "no mailbox"
    );
    assert_eq!(push(a).await, None);
    send_ok(&*store, a, &data(120), T0).await;
    assert!(store.set_push(a, &unified, T0).await.expect("set"));
    assert_eq!(push(a).await, Some(unified.clone()));
    assert!(store.set_push(a, &web, T0).await.expect("set"));
    assert_eq!(push(a).await, Some(web.clone()), "replaced");
    assert!(
        !store
            .remove_push(a, Some(&unified.endpoint), T0)
            .await
            .expect("remove"),
        "another endpoint's gone does not remove it"
    );
    assert_eq!(push(a).await, Some(web.clone()));
    assert!(
        store
            .remove_push(a, Some(&web.endpoint), T0)
            .await
            .expect("remove")
    );
    assert_eq!(push(a).await, None);
    assert!(!store.remove_push(a, None, T0).await.expect("remove"));
    assert!(store.set_push(a, &unified, T0).await.expect("set"));
    assert!(store.remove_push(a, None, T0).await.expect("remove"));
    assert!(store.set_push(a, &unified, T0).await.expect("set"));
    // Sends and checks keep it.
    send_ok(&*store, a, &data(120), T0 + 1).await;
    check_one(&*store, a, At::ZERO, T0 + 2).await;
    assert_eq!(push(a).await, Some(unified.clone()));
    // Delete removes it; the mailbox made anew has none.
    store.delete(a, false, T0 + 3).await.expect("delete");
    assert_eq!(push(a).await, None);
    send_ok(&*store, a, &data(120), T0 + 4).await;
    assert_eq!(push(a).await, None);
    // Idle removal removes it.
    send_ok(&*store, b, &data(120), T0).await;
    assert!(store.set_push(b, &web, T0).await.expect("set"));
    store.sweep(T0 + idle + 10).await.expect("sweep");
    assert_eq!(push(b).await, None);
}

/// One `#[tokio::test]` per conformance case, for the factory expression
/// given (evaluated once per test). See the [module documentation](crate::store::conformance).
#[macro_export]
macro_rules! store_conformance_tests {
    (optional: $factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
            at_is_strictly_increasing,
            concurrent_sends_get_distinct_ats,
            check_answers_per_mailbox_and_cursor,
            receive_pages_in_at_order,
            messages_expire_after_their_ttl,
            mailbox_full_until_messages_expire,
            relay_full_by_bytes_and_by_mailboxes,
            questions_are_kept_once_until_they_expire,
            delete_respects_only_if_empty,
            sweep_removes_expired_messages,
            sweep_removes_idle_mailboxes,
            push_registrations_live_with_their_mailbox,
        );
    };
    ($factory:expr) => {
        $crate::store_conformance_tests!(optional: ::std::option::Option::Some($factory));
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let ::std::option::Option::Some(factory) = $factory else {
                    return;
                };
                $crate::store::conformance::$case(&factory).await;
            }
        )*
    };
}

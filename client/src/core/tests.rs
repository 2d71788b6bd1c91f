//! Two peer books, Alice and Bob, talking through simulated relays: no
//! sockets, no files, a simulated clock (plain `now` values) and a
//! repeatable RNG.

use connectoid_protocol::api::Message;
use connectoid_protocol::envelope::Kind;
use connectoid_protocol::fuzzing::RepeatableRng;
use connectoid_protocol::link::{Link, RelayEntry, RelayUrl};
use connectoid_protocol::{At, SecretKey, limits};
use serde_json::json;

use super::{Fetched, Followup, Outgoing, PeerBook};
use crate::error::ClientError;
use crate::event::{Delivery, Event, PeerStatus, PollReport, RelayPoll};

/// 2026-01-01T00:00:00Z in ms: the simulated clock starts here.
const T0: u64 = 1_767_225_600_000;

fn relay(n: u16) -> RelayEntry {
    RelayEntry::new(RelayUrl::parse(&format!("http://relay-{n}.test/")).unwrap())
}

/// A book and its RNG.
struct Side {
    book: PeerBook,
    rng: RepeatableRng,
}

impl Side {
    fn new(seed: u64) -> Self {
        Self {
            book: PeerBook::default(),
            rng: RepeatableRng::new(seed),
        }
    }

    /// Handles `fetched` at `now` with a report entry per relay; returns the
    /// deliveries, the follow-ups and the report.
    fn handle(
        &mut self,
        now: u64,
        fetched: Vec<Fetched>,
    ) -> (Vec<Delivery>, Vec<Followup>, PollReport) {
        let mut report = PollReport::default();
        for item in &fetched {
            if report.relay(&item.relay).is_none() {
                report.relays.push(RelayPoll::new(item.relay.clone()));
            }
        }
        let handled = self
            .book
            .handle_fetched(now, &mut self.rng, fetched, &mut report);
        (handled.deliveries, handled.followups, report)
    }

    /// Handles and acknowledges; returns the events.
    fn receive(&mut self, now: u64, fetched: Vec<Fetched>) -> Vec<Event> {
        let (deliveries, _, _) = self.handle(now, fetched);
        for delivery in &deliveries {
            self.book.ack(now, delivery);
        }
        deliveries.into_iter().map(|d| d.event).collect()
    }

    fn status(&self, nickname: &str) -> PeerStatus {
        self.book.peer(nickname).unwrap().status
    }
}

/// `outgoing` as the relay at `relay` would hand it out at position `at`.
fn at_relay(outgoing: &Outgoing, relay: &RelayEntry, at: u64) -> Fetched {
    Fetched {
        mailbox: outgoing.to.key,
        relay: relay.url.clone(),
        message: Message {
            at: At(at),
            data: outgoing.sealed.clone(),
        },
    }
}

/// Alice shares through relays 1 and 2; Bob accepts at `T0`. Returns the
/// link and Bob's hello.
fn share_and_accept(alice: &mut Side, bob: &mut Side) -> (Link, Outgoing) {
    let link = alice
        .book
        .share(T0, &mut alice.rng, "Bob", vec![relay(1), relay(2)], None)
        .unwrap();
    assert_eq!(alice.status("Bob"), PeerStatus::Waiting);
    let (_, hello) = bob
        .book
        .accept(
            T0,
            &mut bob.rng,
            &link,
            "Alice",
            json!({"sdp": "offer"}),
            None,
        )
        .unwrap();
    assert_eq!(bob.status("Alice"), PeerStatus::Accepted);
    (link, hello)
}

/// Both sides connected: Alice got the hello, Bob got an answer.
fn connected() -> (Side, Side, Link) {
    let (mut alice, mut bob) = (Side::new(1), Side::new(2));
    let (link, hello) = share_and_accept(&mut alice, &mut bob);
    alice.receive(T0 + 10, vec![at_relay(&hello, &relay(1), 1)]);
    let answer = alice
        .book
        .seal_to(
            T0 + 20,
            &mut alice.rng,
            "Bob",
            Kind::Answer,
            json!({"sdp": "answer"}),
        )
        .unwrap();
    let events = bob.receive(T0 + 30, vec![at_relay(&answer, &relay(1), 1)]);
    assert!(matches!(
        &events[..],
        [Event::Message {
            kind: Kind::Answer,
            ..
        }]
    ));
    assert_eq!(bob.status("Alice"), PeerStatus::Connected);
    (alice, bob, link)
}

#[test]
fn a_hello_with_the_link_proof_connects_and_one_without_is_rejected() {
    let (mut alice, mut bob) = (Side::new(1), Side::new(2));
    let (link, hello) = share_and_accept(&mut alice, &mut bob);

    // Mallory saw only the link key (as a relay does), not the secret.
    let mut mallory = Side::new(3);
    let without_secret = Link {
        secret: None,
        ..link.clone()
    };
    let (_, forged) = mallory
        .book
        .accept(
            T0,
            &mut mallory.rng,
            &without_secret,
            "Alice",
            json!({}),
            None,
        )
        .unwrap();
    let (deliveries, _, report) = alice.handle(T0 + 5, vec![at_relay(&forged, &relay(1), 1)]);
    assert!(deliveries.is_empty());
    assert_eq!(report.relays[0].rejected.len(), 1, "{report:?}");
    assert!(report.relays[0].rejected[0].reason.contains("hello from"));
    assert_eq!(alice.status("Bob"), PeerStatus::Waiting);

    let events = alice.receive(T0 + 10, vec![at_relay(&hello, &relay(1), 2)]);
    let [
        Event::PeerConnected {
            nickname,
            body,
            key,
            ..
        },
    ] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert_eq!((nickname.as_str(), body), ("Bob", &json!({"sdp": "offer"})));
    assert_eq!(*key, bob.book.peer("Alice").unwrap().our_key);
    assert_eq!(alice.status("Bob"), PeerStatus::Connected);
    assert_eq!(
        alice.book.peer("Bob").unwrap().safety_code,
        bob.book.peer("Alice").unwrap().safety_code
    );
}

#[test]
fn a_second_hello_is_refused_and_its_sender_learns_the_link_was_used() {
    let (mut alice, mut eve) = (Side::new(1), Side::new(4));
    let (link, eve_hello) = share_and_accept(&mut alice, &mut eve);
    alice.receive(T0 + 10, vec![at_relay(&eve_hello, &relay(1), 1)]);

    let mut bob = Side::new(2);
    let (_, bob_hello) = bob
        .book
        .accept(
            T0 + 20,
            &mut bob.rng,
            &link,
            "Alice",
            json!({"late": true}),
            None,
        )
        .unwrap();
    let (deliveries, followups, _) =
        alice.handle(T0 + 30, vec![at_relay(&bob_hello, &relay(2), 1)]);
    let [
        Delivery {
            event: Event::LinkReuseRefused {
                connected, refused, ..
            },
            ..
        },
    ] = &deliveries[..]
    else {
        panic!("{deliveries:?}");
    };
    assert_eq!(*connected, eve.book.peer("Alice").unwrap().our_key);
    assert_eq!(*refused, bob.book.peer("Alice").unwrap().our_key);
    // Eve stays the pinned peer.
    assert_eq!(alice.book.peer("Bob").unwrap().their_key, Some(*connected));
    let [Followup::Send(notice)] = &followups[..] else {
        panic!("{followups:?}");
    };
    assert_eq!(notice.to.key, *refused);

    // The notice reaches Bob: his peer is marked, sending is refused.
    let events = bob.receive(T0 + 40, vec![at_relay(notice, &relay(1), 1)]);
    assert!(
        matches!(&events[..], [Event::LinkAlreadyUsed { .. }]),
        "{events:?}"
    );
    assert_eq!(bob.status("Alice"), PeerStatus::LinkUsed);
    let err = bob
        .book
        .seal_to(T0 + 50, &mut bob.rng, "Alice", Kind::App, json!({}))
        .unwrap_err();
    assert!(matches!(err, ClientError::LinkAlreadyUsed { .. }));
    // A peer whose link was used elsewhere is no longer polled.
    assert!(bob.book.plan_poll(T0 + 50).is_empty());

    // A link-used notice sent to the link's owner is refused.
    let forged = eve
        .book
        .seal_to(T0 + 60, &mut eve.rng, "Alice", Kind::App, json!({}))
        .unwrap();
    let mut as_link_used = forged.clone();
    as_link_used.sealed = eve_notice(&mut eve, T0 + 60);
    let (deliveries, _, report) =
        alice.handle(T0 + 70, vec![at_relay(&as_link_used, &relay(1), 2)]);
    assert!(deliveries.is_empty());
    assert!(report.relays[0].rejected[0].reason.contains("link-used"));
}

/// A `link-used` envelope from Eve's mailbox to Alice (which only an
/// acceptor may receive).
fn eve_notice(eve: &mut Side, now: u64) -> Vec<u8> {
    let record = &eve.book.data.peers[0];
    let envelope = connectoid_protocol::envelope::Envelope {
        kind: Kind::LinkUsed,
        to: record.their.as_ref().unwrap().0.key,
        from: record.mailbox.reply_value(),
        ts: now,
        proof: None,
        body: json!({}),
    };
    connectoid_protocol::envelope::seal_envelope(&mut eve.rng, &record.mailbox.key.0, &envelope)
        .unwrap()
}

#[test]
fn a_message_through_two_relays_is_delivered_once() {
    let (mut alice, mut bob, _) = connected();
    let message = bob
        .book
        .seal_to(T0 + 100, &mut bob.rng, "Alice", Kind::App, json!({"n": 1}))
        .unwrap();
    let (deliveries, _, report) = alice.handle(
        T0 + 110,
        vec![
            at_relay(&message, &relay(1), 5),
            at_relay(&message, &relay(2), 7),
        ],
    );
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].sources.len(), 2);
    let duplicates: u32 = report.relays.iter().map(|r| r.duplicates).sum();
    assert_eq!(duplicates, 1);
    alice.book.ack(T0 + 120, &deliveries[0]);
    // Both cursors moved past it; a replay later is a duplicate.
    let cursors = &alice.book.data.peers[0].mailbox.cursors;
    assert_eq!(cursors[&relay(1).url], At(5));
    assert_eq!(cursors[&relay(2).url], At(7));
    let (deliveries, _, report) = alice.handle(T0 + 130, vec![at_relay(&message, &relay(2), 9)]);
    assert!(deliveries.is_empty());
    assert_eq!(report.relays[0].duplicates, 1);
}

#[test]
fn cursors_advance_only_over_a_processed_gap_free_prefix() {
    let (mut alice, mut bob, _) = connected();
    let r = relay(1);
    let messages: Vec<Outgoing> = (1..=3)
        .map(|n| {
            bob.book
                .seal_to(
                    T0 + 100,
                    &mut bob.rng,
                    "Alice",
                    Kind::App,
                    json!({ "n": n }),
                )
                .unwrap()
        })
        .collect();
    let fetched = messages
        .iter()
        .zip([10, 20, 30])
        .map(|(m, at)| at_relay(m, &r, at))
        .collect();
    let (deliveries, _, _) = alice.handle(T0 + 110, fetched);
    assert_eq!(deliveries.len(), 3);
    let cursor = |alice: &Side| {
        alice.book.data.peers[0]
            .mailbox
            .cursors
            .get(&r.url)
            .copied()
    };
    // The answer connected Alice's mailbox at 1 earlier.
    assert_eq!(cursor(&alice), Some(At(1)));
    // Acknowledging the second and third leaves a gap: no move.
    alice.book.ack(T0 + 120, &deliveries[2]);
    alice.book.ack(T0 + 120, &deliveries[1]);
    assert_eq!(cursor(&alice), Some(At(1)));
    // The plan fetches after what is in flight, not after the cursor.
    let plan = alice.book.plan_poll(T0 + 120);
    assert_eq!(plan[&r.url][0].after, At(30));
    // Releasing the first puts the fetch position back before it.
    alice.book.release(&deliveries[0]);
    assert_eq!(alice.book.plan_poll(T0 + 120)[&r.url][0].after, At(1));
    let (again, _, _) = alice.handle(T0 + 130, vec![at_relay(&messages[0], &r, 10)]);
    assert_eq!(again.len(), 1);
    alice.book.ack(T0 + 140, &again[0]);
    assert_eq!(cursor(&alice), Some(At(10)));
    // Once the others come again they are duplicates (seen) and the cursor
    // moves over all three.
    let (none, _, _) = alice.handle(
        T0 + 150,
        vec![
            at_relay(&messages[1], &r, 20),
            at_relay(&messages[2], &r, 30),
        ],
    );
    assert!(none.is_empty());
    assert_eq!(cursor(&alice), Some(At(30)));
}

#[test]
fn envelopes_too_old_or_from_the_future_are_rejected() {
    let (mut alice, mut bob, _) = connected();
    let old = bob
        .book
        .seal_to(T0, &mut bob.rng, "Alice", Kind::App, json!({}))
        .unwrap();
    let late = T0 + limits::ENVELOPE_MAX_AGE_MS + 1;
    let (deliveries, _, report) = alice.handle(late, vec![at_relay(&old, &relay(1), 50)]);
    assert!(deliveries.is_empty());
    assert_eq!(report.relays[0].rejected.len(), 1);
    // A rejected message is processed: the cursor moves past it.
    assert_eq!(
        alice.book.data.peers[0].mailbox.cursors[&relay(1).url],
        At(50)
    );

    let future = bob
        .book
        .seal_to(
            late + limits::ENVELOPE_MAX_SKEW_MS * 2,
            &mut bob.rng,
            "Alice",
            Kind::App,
            json!({}),
        )
        .unwrap();
    let (deliveries, _, report) = alice.handle(late, vec![at_relay(&future, &relay(1), 60)]);
    assert!(deliveries.is_empty());
    assert_eq!(report.relays[0].rejected.len(), 1);
}

#[test]
fn an_unshare_removes_the_peer_and_asks_for_its_mailboxes_deleted() {
    let (mut alice, mut bob, _) = connected();
    let plan = bob
        .book
        .unshare_plan(T0 + 100, &mut bob.rng, "Alice")
        .unwrap();
    assert_eq!(plan.mailboxes.len(), 1);
    let notice = plan.notice.expect("a connected peer is told");
    bob.book.forget(&plan.key);
    assert!(bob.book.peers().is_empty());

    let (deliveries, followups, _) = alice.handle(T0 + 110, vec![at_relay(&notice, &relay(2), 3)]);
    assert!(matches!(
        &deliveries[..],
        [Delivery {
            event: Event::PeerUnshared { .. },
            ..
        }]
    ));
    let [Followup::DeleteMailboxes(mailboxes)] = &followups[..] else {
        panic!("{followups:?}");
    };
    assert_eq!(mailboxes.len(), 1);
    assert!(alice.book.peers().is_empty());
    assert!(alice.book.plan_poll(T0 + 110).is_empty());
    // Acknowledging it after the peer is gone is harmless.
    alice.book.ack(T0 + 120, &deliveries[0]);
}

#[test]
fn a_relay_change_reaches_the_peer_and_old_relays_stay_checked_for_a_while() {
    let (mut alice, mut bob, _) = connected();
    let notice = alice
        .book
        .set_relays(T0 + 100, &mut alice.rng, "Bob", vec![relay(3)])
        .unwrap()
        .expect("a connected peer is told");
    let checked = |alice: &Side, now| alice.book.plan_poll(now).into_keys().collect::<Vec<_>>();
    assert_eq!(
        checked(&alice, T0 + 100),
        vec![relay(1).url, relay(2).url, relay(3).url]
    );
    let grace = limits::MESSAGE_TTL_US / 1000 + limits::ENVELOPE_MAX_SKEW_MS;
    assert_eq!(checked(&alice, T0 + 101 + grace), vec![relay(3).url]);

    let events = bob.receive(T0 + 110, vec![at_relay(&notice, &relay(1), 9)]);
    assert!(
        matches!(&events[..], [Event::RelaysChanged { relays, .. }] if relays == &vec![relay(3).url]),
        "{events:?}"
    );
    assert_eq!(
        bob.book.peer("Alice").unwrap().their_relays,
        vec![relay(3).url]
    );
    let next = bob
        .book
        .seal_to(T0 + 120, &mut bob.rng, "Alice", Kind::App, json!({}))
        .unwrap();
    assert_eq!(next.to.relays, vec![relay(3)]);
    // A share nobody used has nobody to tell.
    alice
        .book
        .share(T0, &mut alice.rng, "Carol", vec![relay(1)], None)
        .unwrap();
    assert!(
        alice
            .book
            .set_relays(T0 + 130, &mut alice.rng, "Carol", vec![relay(2)])
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_rotation_moves_to_new_keys_and_keeps_the_spent_link_for_late_users() {
    let (mut alice, mut bob, link) = connected();
    let (alice_old, bob_pinned_by_alice, rotated) = alice.book.link_keys("Bob").unwrap();
    assert!(!rotated);
    let (bob_old, _, _) = bob.book.link_keys("Alice").unwrap();
    let alice_new = SecretKey::generate(&mut alice.rng);
    let bob_new = SecretKey::generate(&mut bob.rng);
    assert_eq!(bob_pinned_by_alice, bob_old.public_key());
    assert!(alice.book.commit_rotation(
        "Bob",
        &alice_old.public_key(),
        Some(alice_new.clone()),
        Some(bob_new.public_key())
    ));
    assert!(bob.book.commit_rotation(
        "Alice",
        &bob_old.public_key(),
        Some(bob_new.clone()),
        Some(alice_new.public_key())
    ));
    // A second commit against the old key changes nothing.
    assert!(
        !alice
            .book
            .commit_rotation("Bob", &alice_old.public_key(), None, None)
    );
    assert!(alice.book.link_keys("Bob").unwrap().2);

    // Messages use the new keys both ways.
    let message = bob
        .book
        .seal_to(
            T0 + 200,
            &mut bob.rng,
            "Alice",
            Kind::App,
            json!({"after": "rotation"}),
        )
        .unwrap();
    assert_eq!(message.to.key, alice_new.public_key());
    let events = alice.receive(T0 + 210, vec![at_relay(&message, &relay(1), 1)]);
    assert!(matches!(&events[..], [Event::Message { .. }]), "{events:?}");

    // The spent link (the old link key) is still polled; a late hello with
    // the proof there is refused with a link-used notice.
    let polled: Vec<_> = alice.book.plan_poll(T0 + 220)[&relay(1).url]
        .iter()
        .map(|p| p.key.public_key())
        .collect();
    assert!(polled.contains(&link.key) && polled.contains(&alice_new.public_key()));
    let mut carol = Side::new(5);
    let (_, late) = carol
        .book
        .accept(T0 + 230, &mut carol.rng, &link, "Alice", json!({}), None)
        .unwrap();
    let (deliveries, followups, _) = alice.handle(T0 + 240, vec![at_relay(&late, &relay(2), 4)]);
    assert!(matches!(
        &deliveries[..],
        [Delivery {
            event: Event::LinkReuseRefused { .. },
            ..
        }]
    ));
    assert!(matches!(&followups[..], [Followup::Send(_)]));
    // Anything but a hello at the spent link is refused.
    let stale = bob_old_message(&mut bob, &bob_old, &link, T0 + 250);
    let (deliveries, _, report) = alice.handle(T0 + 260, vec![at_relay(&stale, &relay(1), 5)]);
    assert!(deliveries.is_empty());
    assert!(
        report.relays[0].rejected[0]
            .reason
            .contains("retired link key")
    );
}

/// An app message to the link key (Alice's old mailbox) signed with Bob's old key.
fn bob_old_message(bob: &mut Side, old: &SecretKey, link: &Link, now: u64) -> Outgoing {
    let envelope = connectoid_protocol::envelope::Envelope {
        kind: Kind::App,
        to: link.key,
        from: Link {
            key: old.public_key(),
            relays: vec![relay(1)],
            ext: None,
            secret: None,
        },
        ts: now,
        proof: None,
        body: json!({}),
    };
    Outgoing {
        to: Link {
            secret: None,
            ..link.clone()
        },
        sealed: connectoid_protocol::envelope::seal_envelope(&mut bob.rng, old, &envelope).unwrap(),
    }
}

#[test]
fn a_reloaded_profile_keeps_in_flight_state_only_for_mailboxes_that_remain() {
    let (mut alice, mut bob, _) = connected();
    let message = bob
        .book
        .seal_to(T0 + 100, &mut bob.rng, "Alice", Kind::App, json!({}))
        .unwrap();
    let (deliveries, _, _) = alice.handle(T0 + 110, vec![at_relay(&message, &relay(1), 40)]);
    assert_eq!(deliveries.len(), 1);
    // Another process changed only the relay list: in-flight state stays.
    let mut data = alice.book.data().clone();
    data.relays.push(relay(9));
    alice.book.replace_data(data.clone());
    assert_eq!(
        alice.book.plan_poll(T0 + 120)[&relay(1).url][0].after,
        At(40)
    );
    // Another process unshared Bob: nothing of his mailbox stays.
    data.peers.clear();
    alice.book.replace_data(data);
    assert!(alice.book.plan_poll(T0 + 120).is_empty());
    assert!(
        alice
            .book
            .inflight
            .newest_fetched(&message.to.key, &relay(1).url)
            == At::ZERO
    );
}

#[test]
fn accept_refuses_own_links_taken_nicknames_and_repeats() {
    let (mut alice, mut bob) = (Side::new(1), Side::new(2));
    let (link, _) = share_and_accept(&mut alice, &mut bob);
    let err = alice
        .book
        .accept(T0, &mut alice.rng, &link, "Me", json!({}), None)
        .unwrap_err();
    assert!(matches!(err, ClientError::OwnLink), "{err}");
    let err = bob
        .book
        .accept(T0, &mut bob.rng, &link, "Alice", json!({}), None)
        .unwrap_err();
    assert!(matches!(err, ClientError::NicknameTaken(_)), "{err}");
    let err = bob
        .book
        .accept(T0, &mut bob.rng, &link, "Alice again", json!({}), None)
        .unwrap_err();
    assert!(matches!(err, ClientError::AlreadyAccepted(_)), "{err}");
    let key = bob.book.peer("Alice").unwrap().our_key;
    bob.book.abandon("Alice", &key);
    assert!(bob.book.peers().is_empty());
}

//! The relay's Prometheus metrics, served as OpenMetrics text at `GET /metrics`.
//!
//! | name | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `connectoid_requests_total` | counter | `action`, `result` | HTTP API requests; `result` is `ok` or the error's snake-case name |
//! | `connectoid_udp_datagrams_total` | counter | `result` | UDP datagrams: `answered`, `malformed`, `rate_limited`, `unanswerable`, `failed` |
//! | `connectoid_udp_checks_total` | counter | | mailboxes checked through UDP |
//! | `connectoid_stun_requests_total` | counter | `result` | STUN messages on the UDP port: `answered`, `malformed`, `ignored` (not a Binding request, or an attribute the relay must but does not understand), `rate_limited`, `failed` |
//! | `connectoid_rate_limited_total` | counter | `bucket` | requests refused by a token bucket |
//! | `connectoid_questions_made_total` | counter | | questions sealed (at most one per mailbox per question lifetime) |
//! | `connectoid_store_commit_seconds` | histogram | | from handing a send or delete to the store until it is durable |
//! | `connectoid_mailboxes` | gauge | | mailboxes kept |
//! | `connectoid_pending_messages` | gauge | | messages kept |
//! | `connectoid_stored_bytes` | gauge | | bytes of message data kept |
//! | `connectoid_connections` | gauge | | HTTP(S) connections open |
//! | `connectoid_connections_closed_total` | counter | `reason` | connections closed or refused by the caps: `evicted`, `refused_per_source`, `refused_full` |
//! | `connectoid_held_checks` | gauge | | held checks waiting now |
//! | `connectoid_held_checks_refused_total` | counter | `limit` | held checks refused by a cap: `per_source`, `total` |
//! | `connectoid_held_checks_answered_total` | counter | `result` | held checks answered after waiting: `found`, `timeout`, `released` (shutdown) |
//!
//! Labels never carry keys, addresses or message contents. This module only
//! counts; it does not serve HTTP.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::store::StoreStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabels {
    bucket: &'static str,
}

/// The relay's counters and gauges.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    udp_datagrams: Family<ResultLabels, Counter>,
    udp_checks: Counter,
    stun_requests: Family<ResultLabels, Counter>,
    rate_limited: Family<BucketLabels, Counter>,
    questions_made: Counter,
    store_commit: Histogram,
    mailboxes: Gauge,
    pending_messages: Gauge,
    stored_bytes: Gauge,
    connections: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
    held_checks: Gauge,
    held_refused: Family<LimitLabels, Counter>,
    held_answered: Family<ResultLabels, Counter>,
    pushes: PushCounter,
}

/// Push notifications by result (`sent`, `failed`, `dropped`, `removed`,
/// `coalesced`); shared with the push sender's task.
#[derive(Debug, Clone, Default)]
pub(crate) struct PushCounter(Family<ResultLabels, Counter>);

impl PushCounter {
    pub(crate) fn count(&self, result: &'static str) {
        self.0.get_or_create(&ResultLabels { result }).inc();
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("connectoid");
        let requests = Family::<RequestLabels, Counter>::default();
        let udp_datagrams = Family::<ResultLabels, Counter>::default();
        let udp_checks = Counter::default();
        let stun_requests = Family::<ResultLabels, Counter>::default();
        let rate_limited = Family::<BucketLabels, Counter>::default();
        let questions_made = Counter::default();
        // 100 µs to ~3 s.
        let store_commit = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let mailboxes = Gauge::default();
        let pending_messages = Gauge::default();
        let stored_bytes = Gauge::default();
        let connections = Gauge::default();
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        let held_checks = Gauge::default();
        let held_refused = Family::<LimitLabels, Counter>::default();
        let held_answered = Family::<ResultLabels, Counter>::default();
        registry.register(
            "held_checks",
            "Held checks waiting now",
            held_checks.clone(),
        );
        registry.register(
            "held_checks_refused",
            "Held checks refused by a cap, by limit",
            held_refused.clone(),
        );
        registry.register(
            "held_checks_answered",
            "Held checks answered after waiting, by result",
            held_answered.clone(),
        );
        let pushes = PushCounter::default();
        registry.register(
            "pushes",
            "Push notifications by result: sent, failed (the push service refused or did not answer), dropped (the queue was full), removed (404 or 410 removed the registration), coalesced (folded into a push already due)",
            pushes.0.clone(),
        );
        registry.register(
            "connections",
            "HTTP(S) connections open",
            connections.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed or refused by the connection caps, by reason",
            connections_closed.clone(),
        );
        registry.register(
            "requests",
            "HTTP API requests by action and result",
            requests.clone(),
        );
        registry.register(
            "udp_datagrams",
            "UDP check datagrams by result",
            udp_datagrams.clone(),
        );
        registry.register(
            "udp_checks",
            "Mailboxes checked through UDP",
            udp_checks.clone(),
        );
        registry.register(
            "stun_requests",
            "STUN messages on the UDP port by result",
            stun_requests.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a token bucket",
            rate_limited.clone(),
        );
        registry.register(
            "questions_made",
            "Questions sealed to mailbox keys",
            questions_made.clone(),
        );
        registry.register_with_unit(
            "store_commit",
            "Time from handing a write to the store until it is durable",
            Unit::Seconds,
            store_commit.clone(),
        );
        registry.register("mailboxes", "Mailboxes kept", mailboxes.clone());
        registry.register(
            "pending_messages",
            "Messages kept",
            pending_messages.clone(),
        );
        registry.register(
            "stored_bytes",
            "Bytes of message data kept",
            stored_bytes.clone(),
        );
        Self {
            registry,
            requests,
            udp_datagrams,
            udp_checks,
            stun_requests,
            rate_limited,
            questions_made,
            store_commit,
            mailboxes,
            pending_messages,
            stored_bytes,
            connections,
            connections_closed,
            held_checks,
            held_refused,
            held_answered,
            pushes,
        }
    }

    /// Sets the number of held checks waiting.
    pub(crate) fn held_waiting(&self, waiting: u32) {
        self.held_checks.set(i64::from(waiting));
    }

    /// Counts a held check refused by the cap `limit` (`per_source`, `total`).
    pub(crate) fn held_refused(&self, limit: &'static str) {
        self.held_refused
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// Counts a held check answered after waiting, with `result` `found`,
    /// `timeout` or `released`.
    pub(crate) fn held_answered(&self, result: &'static str) {
        self.held_answered
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Sets the number of open connections.
    pub(crate) fn connections_open(&self, open: usize) {
        self.connections
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Counts a connection closed or refused by a cap.
    pub(crate) fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn request(&self, action: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { action, result })
            .inc();
    }

    pub(crate) fn udp_datagram(&self, result: &'static str) {
        self.udp_datagrams
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub(crate) fn stun_request(&self, result: &'static str) {
        self.stun_requests
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub(crate) fn udp_checks(&self, count: usize) {
        self.udp_checks.inc_by(count as u64);
    }

    pub(crate) fn rate_limited(&self, bucket: &'static str) {
        self.rate_limited
            .get_or_create(&BucketLabels { bucket })
            .inc();
    }

    /// The push counter, for the push sender.
    pub(crate) fn pushes(&self) -> PushCounter {
        self.pushes.clone()
    }

    pub(crate) fn question_made(&self) {
        self.questions_made.inc();
    }

    pub(crate) fn store_commit(&self, seconds: f64) {
        self.store_commit.observe(seconds);
    }

    /// The OpenMetrics text, with the gauges set from `stats`.
    pub(crate) fn encode(&self, stats: Option<StoreStats>) -> String {
        if let Some(stats) = stats {
            let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.mailboxes.set(clamp(stats.mailboxes));
            self.pending_messages.set(clamp(stats.messages));
            self.stored_bytes.set(clamp(stats.bytes));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The snake-case name of an error for metric labels.
pub(crate) fn error_label(code: connectoid_protocol::ErrorCode) -> &'static str {
    use connectoid_protocol::ErrorCode as E;
    match code {
        E::TooOften => "too_often",
        E::TooBig => "too_big",
        E::Forbidden => "forbidden",
        E::MalformedJson => "malformed_json",
        E::MissingField => "missing_field",
        E::UnknownAction => "unknown_action",
        E::BadPublicKey => "bad_public_key",
        E::BadBase64 => "bad_base64",
        E::BadValue => "bad_value",
        E::NoQuestion => "no_question",
        E::WrongAnswer => "wrong_answer",
        E::AnswerRequired => "answer_required",
        E::MailboxFull => "mailbox_full",
        E::RelayFull => "relay_full",
        E::Unavailable => "unavailable",
        E::NotFound => "not_found",
        E::MethodNotAllowed => "method_not_allowed",
        _ => "internal_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_metric() {
        let metrics = Metrics::new();
        metrics.request("send", "ok");
        metrics.udp_datagram("answered");
        metrics.rate_limited("check_per_ip");
        metrics.store_commit(0.001);
        metrics.connections_open(5);
        metrics.connection_closed("evicted");
        metrics.held_waiting(3);
        metrics.held_refused("per_source");
        metrics.held_answered("found");
        let text = metrics.encode(Some(StoreStats {
            mailboxes: 2,
            messages: 3,
            bytes: 4,
            questions: 0,
        }));
        for name in [
            "connectoid_requests_total{action=\"send\",result=\"ok\"} 1",
            "connectoid_udp_datagrams_total{result=\"answered\"} 1",
            "connectoid_udp_checks_total 0",
            "connectoid_rate_limited_total{bucket=\"check_per_ip\"} 1",
            "connectoid_questions_made_total 0",
            "connectoid_store_commit_seconds_count 1",
            "connectoid_mailboxes 2",
            "connectoid_pending_messages 3",
            "connectoid_stored_bytes 4",
            "connectoid_connections 5",
            "connectoid_connections_closed_total{reason=\"evicted\"} 1",
            "connectoid_held_checks 3",
            "connectoid_held_checks_refused_total{limit=\"per_source\"} 1",
            "connectoid_held_checks_answered_total{result=\"found\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}

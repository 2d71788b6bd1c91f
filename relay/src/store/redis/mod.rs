//! The shared store: Redis (one server, or a Redis Cluster), so that several
//! stateless relay nodes behind a load balancer serve the same mailboxes.
//!
//! **Key layout** (`P` is the key prefix, `cnid` unless the URL says
//! `?prefix=`; `M` is the mailbox key in base64url, 66 characters). Every key
//! of one mailbox carries the hash tag `{M}`, so a mailbox lives in one
//! cluster slot and each operation on it is one atomic Lua script:
//!
//! | key | type | holds | Redis expiry |
//! | --- | --- | --- | --- |
//! | `P:{M}:meta` | hash | `last` (newest `at` ever), `n` and `bytes` (messages and bytes counted in the totals), `check` (last check, µs), `push` (the push registration, if any: removed and expired with the mailbox) | idle time after the stored check plus one day, and not before its newest message expires |
//! | `P:{M}:msgs` | sorted set | one member per message: `at` as 20 decimal digits, then the sealed bytes; score `at` | when its newest message expires |
//! | `P:{M}:q` | hash | the live question: `e` (expiry, µs), `v` (secret and sealed bytes) | when the question expires |
//! | `P:{M}:floor` | string | the newest `at` of a removed mailbox | the idle time |
//! | `P:{M}:rl:send`, `P:{M}:rl:check` | string | per-mailbox token buckets (GCRA: the theoretical arrival time, µs) | when the bucket is full again |
//! | `P:{src:KIND:ADDR}` | string | per-source token buckets | when the bucket is full again |
//! | `P:{global}:stats` | hash | `bytes`, `messages`, `mailboxes`: the totals the caps and metrics use | none |
//! | `P:{global}:expiry` | sorted set | mailboxes with messages, scored by (a lower bound of) their oldest `at` | none |
//! | `P:{global}:idle` | sorted set | mailboxes, scored by (a lower bound of) their last check | none |
//! | `P:{global}:questions` | sorted set | mailboxes with a question, scored by its expiry | none |
//!
//! **Atomicity.** `send` assigns `at = max(now, last + 1)` ([`At::next`]),
//! enforces the per-mailbox cap, drops expired messages and stores the new
//! one in one script on the mailbox's slot, so concurrent sends through any
//! number of relay nodes get distinct, increasing `at`s. Questions are kept
//! with "first live question wins" in one script. Token buckets are one
//! script per bucket, shared by every node.
//!
//! **Time.** Every decision uses the relay's `now_us`, never Redis's clock:
//! reads filter expired data by `now_us`, and the expiries given to Redis
//! (`PEXPIRE`) are durations computed from the relay's clock, so with real
//! clocks Redis drops expired data by itself, and with a test's manual clock
//! nothing disappears behind the test's back.
//!
//! **Approximations.** The totals (`P:{global}:*`) live in another slot than
//! the mailbox, and a Lua script may not touch two slots of a cluster, so a
//! `send` reads the totals, runs the mailbox script, then adds its change to
//! the totals: concurrent sends may together pass `max_stored_bytes` or
//! `max_mailboxes` by what is in flight, and a node that dies between the
//! two steps leaves the totals off by one message until that mailbox is
//! swept or removed (each mailbox's `meta` knows exactly what it counted, so
//! the sweep corrects the totals). The global indexes only name candidates
//! for the sweep, which decides from each mailbox's own keys. A check writes
//! its time only when the stored one is at least
//! [`StoreOptions::check_persist_us`] old (a check costs no write
//! otherwise), so an idle mailbox may be removed up to that much early.
//!
//! **Wake-ups.** A stored `send` publishes the mailbox's 49 key bytes on the
//! channel `P:wake` (beside the update of its totals, before the send is
//! answered); every node subscribes to that one channel
//! ([`Store::listen_for_sends`]) and wakes the checks it holds for that
//! mailbox. One shared channel, not one per mailbox: a node needs one
//! subscription whatever it holds, and a node that holds nothing for a
//! mailbox ignores its message (cost: every node hears every send). After a
//! lost subscription every held check looks again.
//!
//! **Failures.** Every call is bounded by the URL's `timeout_ms` (default
//! 2000 ms); an unreachable Redis gives [`StoreError::Unavailable`] (the API
//! answers 503), and the connection is re-established by itself when Redis
//! is back. A script that timed out may still have run: as with any
//! unacknowledged send, the message may or may not be stored.
//!
//! This module does not make questions, check answers or read the clock.

mod keys;
mod reply;
mod scripts;
mod target;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::Slot;
use ::redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use async_trait::async_trait;
use connectoid_protocol::At;
use connectoid_protocol::api::Message;
use connectoid_protocol::keys::PUBLIC_KEY_LEN;
use connectoid_protocol::push::PushSubscription;
use futures::StreamExt as _;

use self::keys::{Keys, member, parse_member};
use self::reply::{array, bytes, corrupt, count, decode_question, int, ms, redis_error};
use self::scripts::Scripts;
pub use self::target::{RedisTarget, RedisUrlError};
use super::{
    Bucket, Deleted, MailboxId, Question, SendListener, Store, StoreError, StoreOptions,
    StoreStats, SweepReport, decode_push, encode_push,
};
use crate::bucket::Rate;

/// How long after a mailbox is due for idle removal Redis drops its `meta`
/// by itself, in case no relay swept it (normally the sweep removes it first).
const BACKSTOP_MS: u64 = 86_400_000;
/// Mailboxes the sweep takes from an index at once.
const SWEEP_BATCH: usize = 256;
/// Batches one sweep takes at most from each index; the rest waits for the next sweep.
const SWEEP_ROUNDS: usize = 1_000;
/// Mailbox scripts the sweep runs at the same time.
const SWEEP_CONCURRENCY: usize = 16;
/// Digits of the `at` that starts each message member.
const AT_DIGITS: usize = 20;

/// One connection handle, to a single server or to a cluster; cheap to clone
/// (both multiplex every request over their connections).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis store. See the module documentation.
pub struct RedisStore {
    target: RedisTarget,
    options: StoreOptions,
    conn: Conn,
    keys: Keys,
    scripts: Scripts,
    closed: AtomicBool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// One batch of per-mailbox results of a sweep, to add to the totals.
#[derive(Default)]
struct Totals {
    bytes: i64,
    messages: i64,
    mailboxes: i64,
}

impl RedisStore {
    /// Connects to `target` (waiting at most its timeout, per connection
    /// attempt) and checks that it answers. Fails with
    /// [`StoreError::Unavailable`] when it does not; once connected, the
    /// store reconnects by itself after any outage.
    pub async fn connect(target: &RedisTarget, options: StoreOptions) -> Result<Self, StoreError> {
        let timeout = target.timeout;
        let unreachable =
            |e: &dyn fmt::Display| StoreError::Unavailable(format!("cannot reach {target}: {e}"));
        let connecting = async {
            if target.cluster {
                let client = ::redis::cluster::ClusterClientBuilder::new(target.nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(500)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            } else {
                let client = ::redis::Client::open(target.nodes[0].as_str())?;
                // One quick retry per reconnection: a request during an
                // outage fails within about one connection timeout, and the
                // next request tries again.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
        };
        let conn: Conn = match tokio::time::timeout(timeout.saturating_mul(3), connecting).await {
            Err(_) => return Err(unreachable(&"no answer")),
            Ok(Err(e)) => return Err(unreachable(&e as &RedisError)),
            Ok(Ok(conn)) => conn,
        };
        let store = Self {
            target: target.clone(),
            options,
            conn,
            keys: Keys {
                prefix: target.prefix.clone(),
            },
            scripts: Scripts::new(),
            closed: AtomicBool::new(false),
        };
        store
            .io(|mut c| async move { ::redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(store)
    }

    /// Where this store is.
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Runs one Redis exchange on a clone of the connection, bounded by the
    /// timeout; fails with [`StoreError::Closed`] after [`Store::close`].
    async fn io<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        match tokio::time::timeout(self.target.timeout, call(self.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(redis_error(error)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis: no answer within {} ms",
                self.target.timeout.as_millis()
            ))),
        }
    }

    /// Announces a stored message on the wake-up channel (a failure is
    /// logged: held checks on other nodes then find it at the end of their
    /// wait, or when the subscription is re-established).
    async fn announce(&self, mailbox: &MailboxId) {
        let channel = self.keys.wake_channel();
        let published = self
            .io(|mut c| async move {
                ::redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&mailbox.0[..])
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "announcing a stored message to other nodes");
        }
    }

    /// Adds `totals` to the global counters (one round trip; failures are
    /// logged: the totals are approximate, see the module documentation).
    async fn add_totals(&self, totals: &Totals, extra: impl FnOnce(&mut Pipeline)) {
        let stats = self.keys.global("stats");
        let mut pipe = ::redis::pipe();
        if totals.bytes != 0 {
            pipe.hincr(&stats, "bytes", totals.bytes).ignore();
        }
        if totals.messages != 0 {
            pipe.hincr(&stats, "messages", totals.messages).ignore();
        }
        if totals.mailboxes != 0 {
            pipe.hincr(&stats, "mailboxes", totals.mailboxes).ignore();
        }
        extra(&mut pipe);
        if pipe.is_empty() {
            return;
        }
        if let Err(error) = self
            .io(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
        {
            tracing::warn!(%error, "updating the Redis store's totals failed");
        }
    }

    /// Runs the removal script on one mailbox.
    async fn remove(
        &self,
        mailbox: MailboxId,
        mode: &'static str,
        now_us: u64,
    ) -> Result<Removal, StoreError> {
        let keys = [
            self.keys.meta(&mailbox),
            self.keys.msgs(&mailbox),
            self.keys.question(&mailbox),
            self.keys.floor(&mailbox),
        ];
        let options = self.options;
        let reply: Value = self
            .io(|mut c| async move {
                let mut call = self.scripts.remove.prepare_invoke();
                for key in &keys {
                    call.key(key);
                }
                call.arg(now_us)
                    .arg(options.message_ttl_us)
                    .arg(mode)
                    .arg(options.mailbox_idle_us)
                    .arg(ms(options.mailbox_idle_us).max(1));
                call.invoke_async(&mut c).await
            })
            .await?;
        let reply = array(reply, 4)?;
        Ok(match int(&reply[0])? {
            0 => Removal::Absent,
            1 => Removal::Removed {
                messages: int(&reply[1])?,
                bytes: int(&reply[2])?,
            },
            2 => Removal::NotEmpty,
            3 => Removal::Alive {
                check_us: int(&reply[1])?,
            },
            other => return Err(corrupt(format!("remove status {other}"))),
        })
    }

    /// Takes the totals and index entries of removed mailboxes away.
    async fn forget(&self, removed: &[MailboxId], totals: &Totals) {
        let members: Vec<String> = removed.iter().map(member).collect();
        let (expiry, idle, questions) = (
            self.keys.global("expiry"),
            self.keys.global("idle"),
            self.keys.global("questions"),
        );
        self.add_totals(totals, |pipe| {
            if !members.is_empty() {
                pipe.zrem(&expiry, &members).ignore();
                pipe.zrem(&idle, &members).ignore();
                pipe.zrem(&questions, &members).ignore();
            }
        })
        .await;
    }

    /// Up to [`SWEEP_BATCH`] members of a global index scored at most `max`.
    async fn candidates(&self, index: &str, max: u64) -> Result<Vec<MailboxId>, StoreError> {
        let key = self.keys.global(index);
        let found: Vec<Vec<u8>> = self
            .io(|mut c| async move {
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(max)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(SWEEP_BATCH)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::with_capacity(found.len());
        for text in found {
            match parse_member(&text) {
                Some(id) => out.push(id),
                None => {
                    // Not ours: drop it so that it is not found again.
                    tracing::warn!("dropping a malformed member of the Redis store's index");
                    let key = self.keys.global(index);
                    self.io(|mut c| async move {
                        ::redis::cmd("ZREM")
                            .arg(&key)
                            .arg(&text)
                            .query_async::<()>(&mut c)
                            .await
                    })
                    .await?;
                }
            }
        }
        Ok(out)
    }

    /// Removes expired messages of the mailboxes the expiry index names.
    async fn sweep_messages(
        &self,
        now_us: u64,
        report: &mut SweepReport,
    ) -> Result<(), StoreError> {
        let ttl = self.options.message_ttl_us;
        let cutoff = now_us.saturating_sub(ttl);
        for _ in 0..SWEEP_ROUNDS {
            let batch = self.candidates("expiry", cutoff).await?;
            let results: Vec<Result<(MailboxId, Vec<Value>), StoreError>> =
                futures::stream::iter(batch.iter().copied())
                    .map(|id| async move {
                        let keys = [self.keys.meta(&id), self.keys.msgs(&id)];
                        let reply: Value = self
                            .io(|mut c| async move {
                                self.scripts
                                    .trim
                                    .key(&keys[0])
                                    .key(&keys[1])
                                    .arg(now_us)
                                    .arg(ttl)
                                    .invoke_async(&mut c)
                                    .await
                            })
                            .await?;
                        Ok((id, array(reply, 4)?))
                    })
                    .buffer_unordered(SWEEP_CONCURRENCY)
                    .collect()
                    .await;
            let mut totals = Totals::default();
            let mut gone = Vec::new();
            let mut rescored = Vec::new();
            for result in results {
                let (id, reply) = result?;
                let (removed, removed_bytes, oldest) =
                    (int(&reply[1])?, int(&reply[2])?, int(&reply[3])?);
                totals.messages -= removed;
                totals.bytes -= removed_bytes;
                report.messages_removed += u64::try_from(removed).unwrap_or(0);
                if int(&reply[0])? == 0 || oldest < 0 {
                    gone.push(member(&id));
                } else {
                    rescored.push((oldest, member(&id)));
                }
            }
            let expiry = self.keys.global("expiry");
            self.add_totals(&totals, |pipe| {
                if !gone.is_empty() {
                    pipe.zrem(&expiry, &gone).ignore();
                }
                for (score, member) in &rescored {
                    pipe.cmd("ZADD")
                        .arg(&expiry)
                        .arg("XX")
                        .arg(score)
                        .arg(member)
                        .ignore();
                }
            })
            .await;
            if batch.len() < SWEEP_BATCH {
                break;
            }
        }
        Ok(())
    }

    /// Removes the mailboxes whose last check is older than the idle time.
    async fn sweep_idle(&self, now_us: u64, report: &mut SweepReport) -> Result<(), StoreError> {
        let cutoff = now_us.saturating_sub(self.options.mailbox_idle_us);
        for _ in 0..SWEEP_ROUNDS {
            let batch = self.candidates("idle", cutoff).await?;
            let results: Vec<Result<(MailboxId, Removal), StoreError>> =
                futures::stream::iter(batch.iter().copied())
                    .map(|id| async move { Ok((id, self.remove(id, "idle", now_us).await?)) })
                    .buffer_unordered(SWEEP_CONCURRENCY)
                    .collect()
                    .await;
            let mut totals = Totals::default();
            let mut removed = Vec::new();
            let mut rescored = Vec::new();
            for result in results {
                match result? {
                    (id, Removal::Removed { messages, bytes }) => {
                        totals.mailboxes -= 1;
                        totals.messages -= messages;
                        totals.bytes -= bytes;
                        report.mailboxes_removed += 1;
                        removed.push(id);
                    }
                    (id, Removal::Absent | Removal::NotEmpty) => removed.push(id),
                    (id, Removal::Alive { check_us }) => rescored.push((check_us, member(&id))),
                }
            }
            let idle = self.keys.global("idle");
            self.forget(&removed, &totals).await;
            if !rescored.is_empty() {
                let mut pipe = ::redis::pipe();
                for (score, member) in &rescored {
                    pipe.cmd("ZADD")
                        .arg(&idle)
                        .arg("XX")
                        .arg(score)
                        .arg(member)
                        .ignore();
                }
                self.io(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                    .await?;
            }
            if batch.len() < SWEEP_BATCH {
                break;
            }
        }
        Ok(())
    }
}

/// What the removal script did.
enum Removal {
    Absent,
    Removed { messages: i64, bytes: i64 },
    NotEmpty,
    Alive { check_us: i64 },
}

#[async_trait]
impl Store for RedisStore {
    async fn send(&self, mailbox: MailboxId, data: Vec<u8>, now_us: u64) -> Result<At, StoreError> {
        let options = self.options;
        let size = data.len() as u64;
        let stats = self.keys.global("stats");
        let (stored_bytes, mailboxes): (Option<i64>, Option<i64>) = self
            .io(|mut c| async move {
                ::redis::cmd("HMGET")
                    .arg(&stats)
                    .arg("bytes")
                    .arg("mailboxes")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let stored_bytes = u64::try_from(stored_bytes.unwrap_or(0)).unwrap_or(0);
        let mailboxes = u64::try_from(mailboxes.unwrap_or(0)).unwrap_or(0);
        if stored_bytes.saturating_add(size) > options.max_stored_bytes {
            return Err(StoreError::RelayFull("storage limit reached"));
        }
        let may_create = mailboxes < options.max_mailboxes;
        let keys = [
            self.keys.meta(&mailbox),
            self.keys.msgs(&mailbox),
            self.keys.floor(&mailbox),
        ];
        let reply: Vec<i64> = self
            .io(|mut c| async move {
                self.scripts
                    .send
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .arg(now_us)
                    .arg(options.message_ttl_us)
                    .arg(options.max_pending_per_mailbox)
                    .arg(if may_create { "1" } else { "0" })
                    .arg(data.as_slice())
                    .arg(options.mailbox_idle_us)
                    .arg(BACKSTOP_MS)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let [status, at, created, removed, removed_bytes] = reply[..] else {
            return Err(corrupt(format!("send reply {reply:?}")));
        };
        let stored = status == 0;
        let totals = Totals {
            bytes: if stored { size as i64 } else { 0 } - removed_bytes,
            messages: i64::from(stored) - removed,
            mailboxes: created,
        };
        let at = At(u64::try_from(at).map_err(|_| corrupt("negative at"))?);
        let id = member(&mailbox);
        let (expiry, idle) = (self.keys.global("expiry"), self.keys.global("idle"));
        let totals = self.add_totals(&totals, |pipe| {
            if stored {
                pipe.cmd("ZADD")
                    .arg(&expiry)
                    .arg("NX")
                    .arg(at.0)
                    .arg(&id)
                    .ignore();
            }
            if created == 1 {
                pipe.cmd("ZADD")
                    .arg(&idle)
                    .arg("NX")
                    .arg(now_us)
                    .arg(&id)
                    .ignore();
            }
        });
        // The announcement goes beside the totals, not in their pipeline:
        // in a cluster a keyless command would move that pipeline off the
        // totals' slot.
        let announce = async {
            if stored {
                self.announce(&mailbox).await;
            }
        };
        futures::join!(totals, announce);
        match status {
            0 => Ok(at),
            1 => Err(StoreError::MailboxFull),
            2 => Err(StoreError::RelayFull("too many mailboxes")),
            other => Err(corrupt(format!("send status {other}"))),
        }
    }

    async fn check(
        &self,
        checks: &[(MailboxId, At)],
        now_us: u64,
    ) -> Result<Vec<bool>, StoreError> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        // One script per cluster slot (all of them at once); one in all
        // for a single server.
        let mut groups: HashMap<Option<Slot>, Vec<usize>> = HashMap::new();
        for (i, (mailbox, _)) in checks.iter().enumerate() {
            let slot = match self.conn {
                Conn::Cluster(_) => Some(slot(&self.keys.meta(mailbox))),
                Conn::Single(_) => None,
            };
            groups.entry(slot).or_default().push(i);
        }
        let options = self.options;
        let answers = futures::future::try_join_all(groups.into_values().map(|indexes| {
            let keys: Vec<String> = indexes
                .iter()
                .map(|&i| self.keys.meta(&checks[i].0))
                .collect();
            let afters: Vec<u64> = indexes.iter().map(|&i| checks[i].1.0).collect();
            async move {
                let found: Vec<i64> = self
                    .io(|mut c| async move {
                        let mut call = self.scripts.check.prepare_invoke();
                        for key in &keys {
                            call.key(key);
                        }
                        call.arg(now_us)
                            .arg(options.message_ttl_us)
                            .arg(options.check_persist_us)
                            .arg(options.mailbox_idle_us)
                            .arg(BACKSTOP_MS);
                        for after in &afters {
                            call.arg(after);
                        }
                        call.invoke_async(&mut c).await
                    })
                    .await?;
                if found.len() != indexes.len() {
                    return Err(corrupt("check reply length"));
                }
                Ok::<_, StoreError>(indexes.into_iter().zip(found).collect::<Vec<_>>())
            }
        }))
        .await?;
        let mut out = vec![false; checks.len()];
        for (i, found) in answers.into_iter().flatten() {
            out[i] = found == 1;
        }
        Ok(out)
    }

    async fn receive(
        &self,
        mailbox: MailboxId,
        after: At,
        limit: u32,
        now_us: u64,
    ) -> Result<Vec<Message>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let min = after
            .0
            .max(now_us.saturating_sub(self.options.message_ttl_us));
        let key = self.keys.msgs(&mailbox);
        let members: Vec<Vec<u8>> = self
            .io(|mut c| async move {
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg(format!("({min}"))
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        members
            .into_iter()
            .map(|mut m| {
                if m.len() < AT_DIGITS {
                    return Err(corrupt("message member too short"));
                }
                let at = std::str::from_utf8(&m[..AT_DIGITS])
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or_else(|| corrupt("message member without at"))?;
                Ok(Message {
                    at: At(at),
                    data: m.split_off(AT_DIGITS),
                })
            })
            // Scores above 2^53 could round onto the cursor: filter exactly.
            .filter(|m| m.as_ref().map_or(true, |m| m.at > after))
            .collect()
    }

    async fn question(
        &self,
        mailbox: MailboxId,
        now_us: u64,
    ) -> Result<Option<Question>, StoreError> {
        let key = self.keys.question(&mailbox);
        let (expires, value): (Option<u64>, Option<Vec<u8>>) = self
            .io(|mut c| async move {
                ::redis::cmd("HMGET")
                    .arg(&key)
                    .arg("e")
                    .arg("v")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        match (expires, value) {
            (Some(expires_us), Some(value)) if expires_us > now_us => {
                Ok(Some(decode_question(expires_us, value)?))
            }
            _ => Ok(None),
        }
    }

    async fn offer_question(
        &self,
        mailbox: MailboxId,
        question: Question,
        now_us: u64,
    ) -> Result<Question, StoreError> {
        let keys = [self.keys.meta(&mailbox), self.keys.question(&mailbox)];
        let mut value = question.secret.to_vec();
        value.extend_from_slice(&question.sealed);
        let ttl_ms = ms(question.expires_us.saturating_sub(now_us)) + 1;
        let expires = question.expires_us;
        let reply: Value = self
            .io(|mut c| async move {
                self.scripts
                    .offer
                    .key(&keys[0])
                    .key(&keys[1])
                    .arg(now_us)
                    .arg(expires)
                    .arg(value.as_slice())
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut reply = array(reply, 1)?;
        match int(&reply[0])? {
            0 if reply.len() == 3 => {
                let value = bytes(reply.swap_remove(2))?;
                let expires_us = count(&reply[1])?;
                decode_question(expires_us, value)
            }
            1 => {
                let (questions, id) = (self.keys.global("questions"), member(&mailbox));
                self.add_totals(&Totals::default(), |pipe| {
                    pipe.zadd(&questions, &id, expires).ignore();
                })
                .await;
                Ok(question)
            }
            2 => Ok(question),
            other => Err(corrupt(format!("offer status {other}"))),
        }
    }

    async fn delete(
        &self,
        mailbox: MailboxId,
        only_if_empty: bool,
        now_us: u64,
    ) -> Result<Deleted, StoreError> {
        let mode = if only_if_empty { "empty" } else { "any" };
        match self.remove(mailbox, mode, now_us).await? {
            Removal::Absent => Ok(Deleted::Absent),
            Removal::NotEmpty => Ok(Deleted::NotEmpty),
            Removal::Removed { messages, bytes } => {
                let totals = Totals {
                    bytes: -bytes,
                    messages: -messages,
                    mailboxes: -1,
                };
                self.forget(&[mailbox], &totals).await;
                Ok(Deleted::Removed)
            }
            Removal::Alive { .. } => Err(corrupt("delete answered as a sweep")),
        }
    }

    async fn set_push(
        &self,
        mailbox: MailboxId,
        subscription: &PushSubscription,
        _now_us: u64,
    ) -> Result<bool, StoreError> {
        let meta = self.keys.meta(&mailbox);
        let text = encode_push(subscription);
        let kept: i64 = self
            .io(|mut c| async move {
                self.scripts
                    .push_set
                    .key(&meta)
                    .arg(&text)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(kept == 1)
    }

    async fn remove_push(
        &self,
        mailbox: MailboxId,
        only_endpoint: Option<&str>,
        _now_us: u64,
    ) -> Result<bool, StoreError> {
        let meta = self.keys.meta(&mailbox);
        let endpoint = only_endpoint.unwrap_or("").to_owned();
        let removed: i64 = self
            .io(|mut c| async move {
                self.scripts
                    .push_remove
                    .key(&meta)
                    .arg(&endpoint)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(removed == 1)
    }

    async fn push(
        &self,
        mailbox: MailboxId,
        _now_us: u64,
    ) -> Result<Option<PushSubscription>, StoreError> {
        let meta = self.keys.meta(&mailbox);
        let stored: Option<String> = self
            .io(|mut c| async move {
                ::redis::cmd("HGET")
                    .arg(&meta)
                    .arg("push")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        stored.as_deref().map(decode_push).transpose()
    }

    async fn sweep(&self, now_us: u64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let questions = self.keys.global("questions");
        let expired: u64 = self
            .io(|mut c| async move {
                ::redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&questions)
                    .arg("-inf")
                    .arg(now_us)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        report.questions_removed = expired;
        self.sweep_messages(now_us, &mut report).await?;
        self.sweep_idle(now_us, &mut report).await?;
        Ok(report)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let (stats, questions) = (self.keys.global("stats"), self.keys.global("questions"));
        let (counts, questions): (Vec<Value>, Value) = self
            .io(|mut c| async move {
                ::redis::pipe()
                    .cmd("HMGET")
                    .arg(&stats)
                    .arg("mailboxes")
                    .arg("messages")
                    .arg("bytes")
                    .zcard(&questions)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if counts.len() != 3 {
            return Err(corrupt("stats reply length"));
        }
        Ok(StoreStats {
            mailboxes: count(&counts[0])?,
            messages: count(&counts[1])?,
            bytes: count(&counts[2])?,
            questions: count(&questions)?,
        })
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Every write went to Redis when it was made: nothing to flush.
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn listen_for_sends(
        &self,
        listener: Arc<dyn SendListener>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(tokio::spawn(listen(
            self.target.clone(),
            self.keys.wake_channel(),
            listener,
        )))
    }

    fn rate_limits_shared(&self) -> bool {
        true
    }

    async fn take_token(
        &self,
        bucket: Bucket,
        rate: Rate,
        now_us: u64,
    ) -> Result<bool, StoreError> {
        let key = self.keys.bucket(&bucket);
        let per_token_us = 60_000_000.0 / f64::from(rate.per_minute.max(1));
        let taken: i64 = self
            .io(|mut c| async move {
                self.scripts
                    .take
                    .key(&key)
                    .arg(now_us)
                    .arg(per_token_us)
                    .arg(rate.burst.max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(taken == 1)
    }
}

/// The cluster slot of a key (of its hash tag).
fn slot(key: &str) -> Slot {
    Slot::for_key(key)
}

// A mailbox id is always this long; the key layout relies on it only for
// documentation (66 base64url characters).
const _: () = assert!(PUBLIC_KEY_LEN == 49);

/// Subscribes to `channel` on the first node of `target` and reports every
/// mailbox published there to `listener`, resubscribing (with a growing
/// pause, up to 2 s) whenever the subscription fails or ends. (In a Redis
/// Cluster a `PUBLISH` reaches the subscribers of every node.)
async fn listen(target: RedisTarget, channel: String, listener: Arc<dyn SendListener>) {
    let mut pause = Duration::from_millis(50);
    loop {
        let subscribed = async {
            let client = ::redis::Client::open(target.nodes[0].as_str())?;
            let mut pubsub = tokio::time::timeout(target.timeout, client.get_async_pubsub())
                .await
                .map_err(|_| {
                    RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
                })??;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                // Sends during the gap were not heard.
                listener.feed_interrupted();
                pause = Duration::from_millis(50);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    match <[u8; PUBLIC_KEY_LEN]>::try_from(message.get_payload_bytes()) {
                        Ok(bytes) => listener.message_stored(&MailboxId(bytes)),
                        Err(_) => tracing::warn!(
                            channel,
                            "ignored a wake-up message that is not a mailbox"
                        ),
                    }
                }
                tracing::warn!(redis = %target, "the wake-up subscription ended; subscribing again");
            }
            Err(error) => {
                tracing::warn!(redis = %target, %error, "cannot subscribe to wake-ups; retrying");
            }
        }
        listener.feed_interrupted();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

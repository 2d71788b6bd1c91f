//! The Lua scripts the Redis store runs (each in its own `.lua` file next to
//! this one), and their contracts: which keys and arguments each takes and
//! what it returns. Every script runs after [`PRELUDE`].

use ::redis::Script;

/// Lua shared by the scripts: number formatting that keeps every digit of a
/// µs time (Lua numbers are doubles, exact below 2^53), and the removal of
/// expired messages.
const PRELUDE: &str = include_str!("prelude.lua");

/// KEYS: meta, msgs, floor. ARGV: now, ttl, max pending, may create (1/0),
/// data, idle, backstop ms. Returns {status, at, created, removed, removed
/// bytes}; status 0 stored, 1 mailbox full, 2 no new mailbox allowed.
const SEND: &str = include_str!("send.lua");

/// KEYS: meta of each mailbox. ARGV: now, ttl, check persist, idle,
/// backstop ms, then one `after` per key. Returns 1/0 per key.
const CHECK: &str = include_str!("check.lua");

/// KEYS: meta, q. ARGV: now, expires, secret and sealed bytes, ttl ms.
/// Returns {0, expires, value} for a live question already there, {1} when
/// the offered one is kept, {2} when there is no mailbox (nothing kept).
const OFFER: &str = include_str!("offer.lua");

/// KEYS: meta, msgs, q, floor. ARGV: now, ttl, mode (`any`, `empty`,
/// `idle`), idle, floor ms. Returns {status, n, bytes, had question} with
/// status 0 absent, 1 removed, 2 not empty (mode `empty`), 3 not idle (mode
/// `idle`; then n is the stored check time).
const REMOVE: &str = include_str!("remove.lua");

/// KEYS: meta, msgs. ARGV: now, ttl. Returns {status, removed, removed
/// bytes, oldest at or -1}; status 0: no such mailbox.
const TRIM: &str = include_str!("trim.lua");

/// GCRA token bucket. KEYS: bucket. ARGV: now, µs per token, burst. Returns
/// 1 when a token was taken, 0 when the bucket is empty.
const TAKE: &str = include_str!("take.lua");

/// KEYS: meta. ARGV: the registration text. Keeps it in the `push` field
/// of an existing mailbox's `meta`; returns 1, or 0 when there is no mailbox.
const PUSH_SET: &str = include_str!("push_set.lua");

/// KEYS: meta. ARGV: an endpoint, or empty for any. Removes the `push`
/// field if it names that endpoint; returns 1 when it removed one.
const PUSH_REMOVE: &str = include_str!("push_remove.lua");

pub(super) struct Scripts {
    pub(super) send: Script,
    pub(super) check: Script,
    pub(super) offer: Script,
    pub(super) remove: Script,
    pub(super) trim: Script,
    pub(super) take: Script,
    pub(super) push_set: Script,
    pub(super) push_remove: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            send: script(SEND),
            check: script(CHECK),
            offer: script(OFFER),
            remove: script(REMOVE),
            trim: script(TRIM),
            take: script(TAKE),
            push_set: script(PUSH_SET),
            push_remove: script(PUSH_REMOVE),
        }
    }
}

//! The redb tables, their schema version and the migration from schema 1,
//! and loading the in-memory index from the tables.

use std::hash::RandomState;

use connectoid_protocol::At;
use connectoid_protocol::keys::PUBLIC_KEY_LEN;
use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition,
};

use super::index::{Index, Mailbox, Mailboxes};
use super::unavailable;
use crate::store::{MailboxId, StoreError};

/// Every message, in `at` order: `at || mailbox` -> sealed bytes.
pub(super) const MESSAGES: TableDefinition<&[u8; KEY_LEN], &[u8]> =
    TableDefinition::new("messages_by_at");
pub(super) const MAILBOXES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("mailboxes");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Push registrations: mailbox -> [`crate::store::encode_push`] text. A
/// table added without a schema change: older relays ignore it.
pub(super) const PUSH: TableDefinition<&[u8], &str> = TableDefinition::new("push");
pub(super) const SCHEMA: u64 = 2;
/// Schema 1's messages, by mailbox: `mailbox || at` -> sealed bytes.
pub(super) const MESSAGES_V1: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");

pub(super) const KEY_LEN: usize = 8 + PUBLIC_KEY_LEN;

/// A message's key: `at` first, so that keys sort in time order.
pub(super) fn message_key(mailbox: &MailboxId, at: At) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..8].copy_from_slice(&at.0.to_be_bytes());
    key[8..].copy_from_slice(&mailbox.0);
    key
}

pub(super) fn split_key(key: &[u8; KEY_LEN]) -> (MailboxId, At) {
    let (mut at, mut mailbox) = ([0u8; 8], [0u8; PUBLIC_KEY_LEN]);
    at.copy_from_slice(&key[..8]);
    mailbox.copy_from_slice(&key[8..]);
    (MailboxId(mailbox), At(u64::from_be_bytes(at)))
}

/// Splits a schema 1 key, `mailbox || at`.
pub(super) fn split_key_v1(key: &[u8]) -> Result<(MailboxId, At), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("schema 1 message key of {} bytes", key.len()));
    let (mailbox, at) = key
        .split_first_chunk::<PUBLIC_KEY_LEN>()
        .ok_or_else(corrupt)?;
    let at: [u8; 8] = at.try_into().map_err(|_| corrupt())?;
    Ok((MailboxId(*mailbox), At(u64::from_be_bytes(at))))
}

pub(super) fn mailbox_id(key: &[u8]) -> Result<MailboxId, StoreError> {
    let bytes: [u8; PUBLIC_KEY_LEN] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("mailbox key of {} bytes", key.len())))?;
    Ok(MailboxId(bytes))
}

/// Makes the tables of a new database, or brings an older schema's up to
/// date (in one write transaction, so a crash leaves the old schema whole).
pub(super) fn init_schema(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let found = meta.get("schema").map_err(unavailable)?.map(|v| v.value());
        match found {
            None | Some(SCHEMA) => {}
            Some(1) => {
                let moved = migrate_v1(&txn)?;
                tracing::info!(messages = moved, "store migrated from schema 1 to {SCHEMA}");
            }
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "schema version {other}, this relay reads 1 and {SCHEMA}"
                )));
            }
        }
        meta.insert("schema", SCHEMA).map_err(unavailable)?;
        txn.open_table(MESSAGES).map_err(unavailable)?;
        txn.open_table(MAILBOXES).map_err(unavailable)?;
        txn.open_table(PUSH).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)
}

/// Moves schema 1's messages (by mailbox) to [`MESSAGES`] (by `at`) and
/// deletes the old table; returns how many it moved.
pub(super) fn migrate_v1(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let mut moved = 0;
    {
        let old = txn.open_table(MESSAGES_V1).map_err(unavailable)?;
        let mut new = txn.open_table(MESSAGES).map_err(unavailable)?;
        for entry in old.iter().map_err(unavailable)? {
            let (key, value) = entry.map_err(unavailable)?;
            let (id, at) = split_key_v1(key.value())?;
            new.insert(&message_key(&id, at), value.value())
                .map_err(unavailable)?;
            moved += 1;
        }
    }
    txn.delete_table(MESSAGES_V1).map_err(unavailable)?;
    Ok(moved)
}

pub(super) fn load_index(db: &Database) -> Result<Index, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let mailboxes = txn.open_table(MAILBOXES).map_err(unavailable)?;
    let count = mailboxes.len().map_err(unavailable)?;
    let mut index = Index {
        // Exactly as many as there are: the index does not grow while loading.
        mailboxes: Mailboxes::with_capacity_and_hasher(
            usize::try_from(count).unwrap_or(0),
            RandomState::new(),
        ),
        ..Index::default()
    };
    for entry in mailboxes.iter().map_err(unavailable)? {
        let (key, value) = entry.map_err(unavailable)?;
        let (last_at, last_check_us) = value.value();
        let mut mailbox = Mailbox::new(last_check_us);
        mailbox.last_at = At(last_at);
        index.mailboxes.insert(mailbox_id(key.value())?, mailbox);
    }
    let meta = txn.open_table(META).map_err(unavailable)?;
    if let Some(floor) = meta.get("floor").map_err(unavailable)? {
        index.floor = At(floor.value());
    }
    // In `at` order, so each mailbox's queue is filled oldest first.
    let messages = txn.open_table(MESSAGES).map_err(unavailable)?;
    for entry in messages.iter().map_err(unavailable)? {
        let (key, value) = entry.map_err(unavailable)?;
        let (id, at) = split_key(key.value());
        let size = u32::try_from(value.value().len()).unwrap_or(u32::MAX);
        // A message without a mailbox record cannot be written by this
        // version; keep it anyway, its mailbox then counts as created now.
        let mailbox = index.mailboxes.entry(id).or_insert_with(|| Mailbox::new(0));
        mailbox.push(at, size);
        mailbox.last_at = mailbox.last_at.max(at);
        index.messages += 1;
        index.bytes += u64::from(size);
    }
    Ok(index)
}

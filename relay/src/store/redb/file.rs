//! Opening the database file: at start with redb's integrity check, and
//! again after a failed write (a full disk) without it.
//!
//! At start, [`open_checked`] refuses a file that is not what redb wrote:
//! a 0-byte file, a file redb cannot open (a damaged header, garbage), a
//! file whose pages fail their checksums ([`Database::check_integrity`]),
//! and a file that made redb panic while it was read (the panic is caught
//! and becomes the same error, with no backtrace). The error names the
//! file and the way out. A file that does not exist yet is created, and the
//! log says so loudly: a relay that starts empty when its operator expected
//! data has lost an hour of messages.
//!
//! After redb reported an I/O error it refuses every later operation until
//! the database is closed; [`reopen`] closes and opens it again (redb's own
//! crash recovery runs if the failed commit left the file unfinished).
//!
//! This module does not parse the file (redb does) and does not decide
//! when to reopen (the writer does).

use std::os::unix::fs::OpenOptionsExt as _;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::Database;

use super::index::Index;
use super::schema::{init_schema, load_index};
use super::{CACHE_BYTES, lock};
use crate::store::StoreError;

/// The way out, said with every refusal of a damaged file.
fn damaged(path: &Path, what: &str) -> StoreError {
    let path = path.display();
    StoreError::Corrupt(format!(
        "{path}: {what}. The relay does not serve a damaged database. Move the file aside \
         (`mv {path} {path}.damaged`) and start again: the relay starts with an empty store, and \
         since messages live an hour, clients send again what they still need"
    ))
}

/// Opens the database at `path` (creating it if it does not exist), checks
/// its integrity, and refuses it with [`StoreError::Corrupt`] naming the
/// file if it is damaged; then makes the tables of a new file (or migrates
/// an old one) and loads the index. Blocking; reads the whole file
/// (`spec/relay.md` §10 says what that costs).
pub(super) fn open_checked(path: &Path) -> Result<(Database, Index), StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => {
            return Err(damaged(
                path,
                "the file is empty (0 bytes), which redb never leaves behind",
            ));
        }
        Ok(meta) => tracing::info!(
            path = %path.display(),
            bytes = meta.len(),
            "checking the database file's integrity"
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                path = %path.display(),
                "NO DATABASE FILE: creating a new, empty one (if this relay held messages before, \
                 its data directory is not where it was)"
            );
            // Empty and private (0600); redb initializes an empty file.
            private_file(path).map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })?;
        }
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            });
        }
    }
    let opened = catch_panics(|| {
        let mut db = open(path)?;
        match db.check_integrity() {
            Ok(true) => {
                init_schema(&db)?;
                let index = load_index(&db)?;
                Ok((db, index))
            }
            Ok(false) => Err(damaged(
                path,
                "redb's integrity check found damage and rolled the file back to its last intact \
                 commit, so messages of the newest commit may be missing",
            )),
            Err(error) => Err(damaged(
                path,
                &format!("redb's integrity check failed: {error}"),
            )),
        }
    });
    opened.map_err(|error| match error {
        Panicked(message) => damaged(
            path,
            &format!("the storage library failed while reading it ({message})"),
        ),
        Refused(error) => error,
    })
}

/// Opens the database at `path` again after an I/O error, without the
/// integrity check: redb's recovery handles a commit the error interrupted.
/// Loads the index anew from what the file holds.
pub(super) fn reopen(path: &Path) -> Result<(Database, Index), StoreError> {
    catch_panics(|| {
        let db = open(path)?;
        let index = load_index(&db)?;
        Ok((db, index))
    })
    .map_err(|error| match error {
        Panicked(message) => damaged(
            path,
            &format!("the storage library failed while reopening it ({message})"),
        ),
        Refused(error) => error,
    })
}

/// A plain redb open with the store's cache size.
fn open(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_repair_callback(|session| {
            tracing::info!(
                progress = format!("{:.0}%", session.progress() * 100.0),
                "repairing the database file (it was not closed cleanly)"
            );
        })
        .create(path)
        .map_err(|error| match error {
            // What redb says of a file that is not one of its own.
            redb::DatabaseError::Storage(redb::StorageError::Io(source))
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                damaged(path, &format!("redb cannot read it: {source}"))
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(source)) => StoreError::Io {
                path: path.to_owned(),
                source,
            },
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
                damaged(path, &format!("redb cannot read it: {what}"))
            }
            other => StoreError::Unavailable(format!("{}: {other}", path.display())),
        })
}

/// How a [`catch_panics`] call failed.
enum Failure {
    /// `f` panicked with this message.
    Panicked(String),
    /// `f` returned this error.
    Refused(StoreError),
}
use Failure::{Panicked, Refused};

/// Runs `f`, turning a panic on this thread into [`Failure::Panicked`]
/// instead of printing it: redb panics on some damaged files (`entered
/// unreachable code`, a slice index out of range). Panics of other threads
/// meanwhile go to the hook that was installed before.
fn catch_panics<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, Failure> {
    type Hook = dyn Fn(&PanicHookInfo<'_>) + Send + Sync;
    let previous: Arc<Hook> = Arc::from(std::panic::take_hook());
    let caught: Arc<Mutex<Option<String>>> = Arc::default();
    let this = std::thread::current().id();
    {
        let (previous, caught) = (Arc::clone(&previous), Arc::clone(&caught));
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == this {
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                *lock(&caught) = Some(format!("{payload}{location}"));
            } else {
                previous(info);
            }
        }));
    }
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    drop(std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| previous(info)));
    match result {
        Ok(result) => result.map_err(Refused),
        Err(_) => Err(Panicked(
            lock(&caught).take().unwrap_or_else(|| "a panic".to_owned()),
        )),
    }
}

/// The mode of a data directory the relay creates.
const PRIVATE_DIR: u32 = 0o700;

/// The mode of a file the relay creates in its data directory.
const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` (and its missing parents) with mode 0700. An existing
/// directory is not changed: if group or others may read or enter it, a
/// warning says so and how to fix it.
pub(super) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    match std::fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "the data directory {} has mode {mode:o}: group or others can read it; \
                     the relay leaves it as it is (chmod 700 it to keep the mailboxes private)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR)
            .create(dir),
        Err(error) => Err(error),
    }
}

/// Creates the empty file `path` with mode 0600 (failing if it exists).
fn private_file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .map(drop)
}

/// Bytes [`probe`] writes.
const PROBE_BYTES: usize = 1 << 20;

/// Whether the file system takes new data: writes [`PROBE_BYTES`] to
/// `path`, syncs and removes it. A full disk fails here cheaply, where a
/// redb commit could still succeed by reusing free pages of its file.
pub(super) fn probe(path: &Path) -> Result<(), String> {
    use std::io::Write as _;
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE)
            .open(path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let removed = std::fs::remove_file(path);
    written.and(removed).map_err(|error| {
        format!(
            "writing {PROBE_BYTES} bytes to {} failed: {error}",
            path.display()
        )
    })
}

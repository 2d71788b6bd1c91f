//! Where the profile is kept: the [`ProfileStore`] trait, the directory
//! store (the default) and a store in memory.
//!
//! A store holds the profile's serialized bytes and a lock. The client
//! takes the lock only while it reads, changes and writes the profile back
//! (one read-modify-write), and re-reads the bytes first, so several
//! processes (a `poll --watch` in one terminal, `send` in another) share one
//! profile and no change of one is lost by another. Reads without a change
//! (listing peers, planning a poll) take no lock: a store's `read` always
//! returns one complete earlier write.
//!
//! The directory store writes atomically (a temporary file in the same
//! directory, `fsync`, `rename`, `fsync` of the directory) with mode 0600,
//! so a crash leaves either the old or the new profile, never a torn one;
//! its lock is an exclusive advisory lock on [`LOCK_FILE`].
//!
//! Every method here blocks (file I/O, waiting for the lock); the client
//! calls them off the async runtime's threads (`spawn_blocking`). This
//! module does not interpret the bytes.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::profile::{LOCK_FILE, PROFILE_FILE, ProfileError};

/// The longest wait for a store's lock: 30 seconds. A change holds it for
/// one read and one write, so only a process hung in the middle of a change
/// makes another wait this long; then [`ProfileError::Locked`].
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Where a client keeps its profile. Implement it to keep the profile in an
/// app's own database; [`DirectoryStore`] is the default and
/// [`MemoryStore`] serves tests.
///
/// The bytes hold private keys: a store must keep them private and must not
/// print them (in `Debug` or logs).
pub trait ProfileStore: Send + Sync + std::fmt::Debug {
    /// The profile as last written: `None` when none was written yet. Never
    /// a partial write, even while another writer is at work.
    fn read(&self) -> Result<Option<Vec<u8>>, ProfileError>;

    /// Takes the store's exclusive lock, waiting (at most [`LOCK_WAIT`],
    /// for stores that can wait) while another holder, in this process or
    /// another one, has it. The lock is held until the returned
    /// [`ProfileLock`] is dropped.
    fn lock(&self) -> Result<ProfileLock, ProfileError>;

    /// Replaces the profile with `bytes`, atomically and durably. Called
    /// only by a holder of the lock.
    fn write(&self, bytes: &[u8]) -> Result<(), ProfileError>;

    /// Where the profile is, for messages (a path for a directory store).
    fn location(&self) -> PathBuf;
}

/// A held store lock; dropping it releases the lock.
pub struct ProfileLock {
    _guard: Box<dyn Send>,
}

impl ProfileLock {
    /// A lock held as long as `guard` lives (an open lock file, a database
    /// transaction...).
    pub fn new(guard: impl Send + 'static) -> Self {
        Self {
            _guard: Box::new(guard),
        }
    }
}

impl std::fmt::Debug for ProfileLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProfileLock")
    }
}

/// The default store: [`PROFILE_FILE`] and [`LOCK_FILE`] in a directory
/// (created with mode 0700 if missing).
#[derive(Debug, Clone)]
pub struct DirectoryStore {
    dir: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError {
    let path = path.to_owned();
    move |source| ProfileError::Io {
        action,
        path,
        source,
    }
}

impl DirectoryStore {
    /// The store in `dir`, created (mode 0700) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ProfileError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// The profile directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl ProfileStore for DirectoryStore {
    fn read(&self) -> Result<Option<Vec<u8>>, ProfileError> {
        let path = self.dir.join(PROFILE_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    fn lock(&self) -> Result<ProfileLock, ProfileError> {
        lock_file(&self.dir.join(LOCK_FILE), &self.dir).map(ProfileLock::new)
    }

    fn write(&self, bytes: &[u8]) -> Result<(), ProfileError> {
        write_atomically(&self.dir, PROFILE_FILE, bytes)
    }

    fn location(&self) -> PathBuf {
        self.dir.clone()
    }
}

/// Opens `path` (mode 0600) and takes an exclusive advisory lock on it,
/// waiting at most [`LOCK_WAIT`]. The lock lasts as long as the file is
/// open. `dir` names the profile in the error.
pub(crate) fn lock_file(path: &Path, dir: &Path) -> Result<File, ProfileError> {
    let file = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io("open lock file", path))?;
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(ProfileError::Locked {
                    dir: dir.to_owned(),
                    waited: LOCK_WAIT,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock", path)(e)),
        }
    }
}

/// Writes `bytes` to `dir/name` atomically: temporary file (mode 0600),
/// fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ProfileError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp-{}", std::process::id()));
    let mut file = private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("create temporary file", &tmp))?;
    set_private_mode(&file, &tmp)?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    // Make the rename durable. Opening a directory for fsync works on Unix.
    #[cfg(unix)]
    if let Ok(handle) = File::open(dir) {
        handle.sync_all().map_err(io("fsync directory", dir))?;
    }
    Ok(())
}

fn private_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}

fn set_private_mode(file: &File, path: &Path) -> Result<(), ProfileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io("chmod 0600", path))?;
    }
    #[cfg(not(unix))]
    let _ = (file, path);
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), ProfileError> {
    if dir.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create directory", dir))
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir).map_err(io("create directory", dir))
}

/// A store in memory, for tests and apps that keep nothing on disk. Clones
/// share one profile (like two processes on one directory).
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<MemoryShared>,
}

#[derive(Default)]
struct MemoryShared {
    bytes: Mutex<Option<Vec<u8>>>,
    locked: Mutex<bool>,
    released: Condvar,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Releases a [`MemoryStore`]'s lock when dropped.
struct MemoryGuard(Arc<MemoryShared>);

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        let mut locked = self.0.locked.lock().unwrap_or_else(|e| e.into_inner());
        *locked = false;
        self.0.released.notify_one();
    }
}

impl ProfileStore for MemoryStore {
    fn read(&self) -> Result<Option<Vec<u8>>, ProfileError> {
        Ok(self
            .shared
            .bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    fn lock(&self) -> Result<ProfileLock, ProfileError> {
        let mut locked = self.shared.locked.lock().unwrap_or_else(|e| e.into_inner());
        while *locked {
            let (again, timeout) = self
                .shared
                .released
                .wait_timeout(locked, LOCK_WAIT)
                .unwrap_or_else(|e| e.into_inner());
            locked = again;
            if timeout.timed_out() && *locked {
                return Err(ProfileError::Locked {
                    dir: self.location(),
                    waited: LOCK_WAIT,
                });
            }
        }
        *locked = true;
        Ok(ProfileLock::new(MemoryGuard(Arc::clone(&self.shared))))
    }

    fn write(&self, bytes: &[u8]) -> Result<(), ProfileError> {
        *self.shared.bytes.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes.to_vec());
        Ok(())
    }

    fn location(&self) -> PathBuf {
        PathBuf::from("(memory)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `writers` threads, each on its own store of `dir`, each appending
    /// `per_writer` numbers to one list under the lock.
    fn concurrent_appends(make: impl Fn() -> Box<dyn ProfileStore>, writers: usize) -> Vec<u32> {
        let per_writer = 25;
        std::thread::scope(|scope| {
            for writer in 0..writers {
                let store = make();
                scope.spawn(move || {
                    for n in 0..per_writer {
                        let _lock = store.lock().unwrap();
                        let mut list: Vec<u32> = store
                            .read()
                            .unwrap()
                            .map(|b| serde_json::from_slice(&b).unwrap())
                            .unwrap_or_default();
                        list.push(u32::try_from(writer * 1000 + n).unwrap());
                        store.write(&serde_json::to_vec(&list).unwrap()).unwrap();
                    }
                });
            }
        });
        let bytes = make().read().unwrap().unwrap();
        let mut list: Vec<u32> = serde_json::from_slice(&bytes).unwrap();
        list.sort_unstable();
        assert_eq!(list.len(), writers * per_writer);
        list
    }

    #[test]
    fn directory_store_serializes_writers_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        concurrent_appends(|| Box::new(DirectoryStore::open(&path).unwrap()), 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join(PROFILE_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn memory_store_clones_share_one_profile_and_one_lock() {
        let store = MemoryStore::new();
        assert_eq!(store.read().unwrap(), None);
        concurrent_appends(|| Box::new(store.clone()), 3);
    }

    #[test]
    fn a_directory_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::open(dir.path()).unwrap();
        let held = store.lock().unwrap();
        let other = File::open(dir.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(held);
        other.try_lock().unwrap();
    }
}

//! Storage faults of the embedded store, with real relay processes:
//!
//! - `a_full_disk_is_survived_without_a_restart`: the relay runs in its own
//!   mount namespace (`unshare --mount`) on a 16 MiB tmpfs; the test fills
//!   it (`nsenter` + `dd`), sees sends and `/healthz` answer 503, frees the
//!   space, and sees the relay write again with every acknowledged message
//!   still there;
//! - `a_failing_final_flush_exits_1`: SIGTERM on a full disk with check
//!   times to write;
//! - `damaged_files_are_refused_at_start`: kinds of damage to a cleanly
//!   closed `relay.redb` (zero bytes, truncated, extended, garbage, header,
//!   data pages), each refused with the message naming the file, and random
//!   damaged pages either refused or served unaltered.
//!
//! The tmpfs tests need root (CI runs as root); without it they print
//! SKIPPED, and fail under `CI=true`. Counts are bounded; no wall-clock
//! assertion.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use connectoid_protocol::SecretKey;
use connectoid_tests::bench::load::HttpConn;
use connectoid_tests::bench::scenarios::{check_body, secret_key, send_body};
use connectoid_tests::process::spawn_listening;
use connectoid_tests::{init_tracing, relay_binary};

use super::{Rng, receive_all};

/// A relay process whose stderr goes to a file, stopped by SIGKILL when
/// dropped.
struct Relay {
    child: Child,
    http: SocketAddr,
    stderr: PathBuf,
}

impl Relay {
    /// Starts `connectoid-relay` on `data` (no rate limits), wrapped in
    /// `wrapper` (a command and its arguments, or nothing).
    fn start(wrapper: &[&str], data: &Path, logs: &Path) -> anyhow::Result<Self> {
        let stderr = logs.join("relay.stderr");
        let relay = relay_binary()?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&relay);
                command
            }
            None => Command::new(&relay),
        };
        command
            .args(["--http", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(["--max-pending", "100000"])
            .env("RUST_LOG", "warn")
            .stderr(std::fs::File::create(&stderr)?);
        for flag in [
            "--send-rate-ip",
            "--send-rate-mailbox",
            "--check-rate-ip",
            "--check-rate-mailbox",
        ] {
            command.args([flag, "off"]);
        }
        let listening = spawn_listening(command, true, false)?;
        let http = listening
            .http
            .ok_or_else(|| anyhow::anyhow!("no HTTP address"))?;
        Ok(Self {
            child: listening.child,
            http,
            stderr,
        })
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(self.child.wait()?)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Whether this process may make a mount namespace with a tmpfs (root);
/// panics under CI when not.
fn tmpfs_available(test: &str) -> bool {
    let works = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m tmpfs /mnt",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return true;
    }
    assert!(
        !is_ci(),
        "{test}: cannot mount a tmpfs in a new mount namespace (unshare --mount needs root); \
         CI=true requires this test to run"
    );
    eprintln!("SKIPPED {test}: unshare --mount with a tmpfs needs root");
    false
}

/// A relay in its own mount namespace, on a tmpfs of `size` mounted over
/// the (empty) directory `mount`, its data in `mount/data`.
struct TmpfsRelay {
    relay: Relay,
    mount: PathBuf,
}

impl TmpfsRelay {
    fn start(mount: &Path, size: &str, logs: &Path) -> anyhow::Result<Self> {
        let script = format!(
            "mount -t tmpfs -o size={size} tmpfs '{}' && exec \"$@\"",
            mount.display()
        );
        let wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ];
        let relay = Relay::start(&wrapper, &mount.join("data"), logs)?;
        Ok(Self {
            relay,
            mount: mount.to_owned(),
        })
    }

    /// Runs `script` with `sh` in the relay's mount namespace.
    fn inside(&self, script: &str) -> anyhow::Result<std::process::Output> {
        Ok(Command::new("nsenter")
            .args(["--mount", "--target", &self.relay.child.id().to_string()])
            .args(["sh", "-c", script])
            .output()?)
    }

    /// Fills the tmpfs with a file named `name` until it is full.
    fn fill(&self, name: &str) -> anyhow::Result<()> {
        let out = self.inside(&format!(
            "dd if=/dev/zero of='{}/{name}' bs=64k 2>&1; df -k '{}'",
            self.mount.display(),
            self.mount.display()
        ))?;
        eprintln!("fill: {}", String::from_utf8_lossy(&out.stdout).trim());
        Ok(())
    }

    /// Removes the files [`TmpfsRelay::fill`] made.
    fn free(&self) -> anyhow::Result<()> {
        let out = self.inside(&format!("rm -f '{}'/filler*", self.mount.display()))?;
        anyhow::ensure!(out.status.success(), "rm in the namespace failed");
        Ok(())
    }
}

/// A message body: a tag (sender, n) and a recognizable pattern, `len`
/// bytes in all.
fn tagged(sender: u64, n: u64, len: usize) -> Vec<u8> {
    let mut data: Vec<u8> = b"CONNECTOID-STORAGE-FAULT-TEST-"
        .iter()
        .copied()
        .cycle()
        .take(len.max(16))
        .collect();
    data[..8].copy_from_slice(&sender.to_be_bytes());
    data[8..16].copy_from_slice(&n.to_be_bytes());
    data
}

/// Whether a 503 body is the storage error (not "shutting down").
fn is_storage_unavailable(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("\"Unavailable\"") && text.contains("storage is unavailable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_survived_without_a_restart() -> anyhow::Result<()> {
    init_tracing();
    if !tmpfs_available("a_full_disk_is_survived_without_a_restart") {
        return Ok(());
    }
    let (mount, logs) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut relay = TmpfsRelay::start(mount.path(), "16m", logs.path())?;
    let addr = relay.relay.http;
    let secret: SecretKey = secret_key(6000);
    let key = secret.public_key();
    let mut conn = HttpConn::connect(addr).await?;
    let mut acked = Vec::new();
    let mut n = 0;
    for _ in 0..20 {
        let data = tagged(1, n, 4000);
        n += 1;
        let answer = conn.post(&send_body(&key, &data), false).await?;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        acked.push(data);
    }
    assert_eq!(conn.get("/healthz").await?.status, 200);

    // Fill the disk; sends go on until one fails (redb may reuse free
    // pages of its file for a while).
    relay.fill("filler")?;
    let mut failed = 0;
    for _ in 0..400 {
        let data = tagged(1, n, 16_000);
        n += 1;
        let answer = conn.post(&send_body(&key, &data), false).await?;
        match answer.status {
            200 => acked.push(data),
            503 => {
                assert!(
                    is_storage_unavailable(&answer.body),
                    "a full disk is not a shutdown: {}",
                    String::from_utf8_lossy(&answer.body)
                );
                failed += 1;
                if failed == 3 {
                    break;
                }
            }
            other => panic!(
                "send on a full disk: {other} {}",
                String::from_utf8_lossy(&answer.body)
            ),
        }
    }
    assert_eq!(failed, 3, "400 sends of 16 kB fit on a full 16 MiB tmpfs?");
    // Whatever a reopen gave back is taken too.
    relay.fill("filler2")?;
    let health = conn.get("/healthz").await?;
    assert_eq!(
        health.status,
        503,
        "/healthz while writes fail: {}",
        String::from_utf8_lossy(&health.body)
    );
    eprintln!("{} sends acknowledged before writes failed", acked.len());

    // Free the space: the relay writes again, without a restart.
    relay.free()?;
    let mut healthy = false;
    for _ in 0..200 {
        if conn.get("/healthz").await?.status == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        healthy,
        "/healthz did not come back after the space was freed"
    );
    for _ in 0..20 {
        let data = tagged(1, n, 4000);
        n += 1;
        let answer = conn.post(&send_body(&key, &data), false).await?;
        assert_eq!(
            answer.status,
            200,
            "send after the disk was freed: {}",
            String::from_utf8_lossy(&answer.body)
        );
        acked.push(data);
    }
    let stored = receive_all(addr, &secret).await?;
    for (i, data) in acked.iter().enumerate() {
        assert!(
            stored.contains(data),
            "acknowledged message {i} of {} is missing",
            acked.len()
        );
    }
    let status = relay.relay.terminate()?;
    assert_eq!(status.code(), Some(0), "{}", relay.relay.stderr());
    assert!(
        relay
            .relay
            .stderr()
            .contains("storage writes succeed again")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_final_flush_exits_1() -> anyhow::Result<()> {
    init_tracing();
    if !tmpfs_available("a_failing_final_flush_exits_1") {
        return Ok(());
    }
    const MAILBOXES: u64 = 2000;
    let (mount, logs) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut relay = TmpfsRelay::start(mount.path(), "16m", logs.path())?;
    let addr = relay.relay.http;
    let keys: Vec<_> = (0..MAILBOXES)
        .map(|i| secret_key(7000 + i).public_key())
        .collect();
    // On 8 connections, so that sends share commits.
    let posts = |bodies: Vec<Vec<u8>>| async move {
        let mut tasks = Vec::new();
        for chunk in bodies.chunks(bodies.len().div_ceil(8)) {
            let chunk = chunk.to_vec();
            tasks.push(tokio::spawn(async move {
                let mut conn = HttpConn::connect(addr).await?;
                for body in chunk {
                    let answer = conn.post(&body, false).await?;
                    anyhow::ensure!(answer.status == 200, "status {}", answer.status);
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    };
    posts(
        keys.iter()
            .enumerate()
            .map(|(i, key)| send_body(key, &tagged(2, i as u64, 128)))
            .collect(),
    )
    .await?;
    relay.fill("filler")?;
    // Checks move the last-check times in memory: the shutdown must write
    // 2000 mailbox records (many more pages than redb keeps free).
    posts(keys.iter().map(|key| check_body(key, 0)).collect()).await?;
    let status = relay.relay.terminate()?;
    let stderr = relay.relay.stderr();
    assert_eq!(status.code(), Some(1), "exit status {status}: {stderr}");
    assert!(stderr.contains("closing the store"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

/// A way to damage a cleanly closed database file.
struct Damage {
    name: &'static str,
    apply: fn(&mut Vec<u8>),
}

/// Flips every byte of every copy of the messages' pattern (in whichever
/// pages hold them, live or stale).
fn flip_messages(file: &mut [u8]) {
    let pattern = b"CONNECTOID-STORAGE-FAULT-TEST-";
    let mut flipped = 0;
    let mut i = 0;
    while i + pattern.len() <= file.len() {
        if &file[i..i + pattern.len()] == pattern {
            file[i + 3] ^= 0x01;
            flipped += 1;
            i += pattern.len();
        } else {
            i += 1;
        }
    }
    assert!(flipped > 0, "the messages' pattern is not in the file");
}

const DAMAGES: &[Damage] = &[
    Damage {
        name: "zero bytes",
        apply: |file| file.clear(),
    },
    Damage {
        name: "truncated to half",
        apply: |file| file.truncate(file.len() / 2),
    },
    Damage {
        name: "truncated to one page",
        apply: |file| file.truncate(4096),
    },
    Damage {
        name: "extended with garbage",
        apply: |file| file.extend(std::iter::repeat_n(0x5a, 5000)),
    },
    Damage {
        name: "garbage",
        apply: |file| {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let len = file.len();
            *file = rng.bytes(len);
        },
    },
    Damage {
        name: "magic number",
        apply: |file| file[..9].copy_from_slice(b"NOT-REDB!"),
    },
    Damage {
        name: "both commit slots of the header",
        apply: |file| file[64..320].fill(0xa5),
    },
    Damage {
        name: "flipped bytes in the message pages",
        apply: |file| flip_messages(file),
    },
];

/// Starts the relay on `data` and expects it to refuse the file: exit 1,
/// one clear message naming it, no panic. Bounded wait.
fn assert_refused(data: &Path, what: &str) -> anyhow::Result<()> {
    let mut child = Command::new(relay_binary()?)
        .args(["--http", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut status = None;
    for _ in 0..1200 {
        if let Some(exited) = child.try_wait()? {
            status = Some(exited);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what}: the relay started on a damaged file");
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr)?;
    }
    let file = data.join("relay.redb");
    assert_eq!(status.code(), Some(1), "{what}: {status}: {stderr}");
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("Move the file aside"),
        "{what}: the message names neither the file nor the way out: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: {stderr}"
    );
    eprintln!("{what}: {}", stderr.lines().last().unwrap_or_default());
    Ok(())
}

/// A cleanly closed `relay.redb` holding `count` messages of `secret`'s
/// mailbox; returns the file and the messages.
async fn pristine(secret: &SecretKey, count: u64) -> anyhow::Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let (data, logs) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut relay = Relay::start(&[], data.path(), logs.path())?;
    let mut conn = HttpConn::connect(relay.http).await?;
    let mut sent = Vec::new();
    for n in 0..count {
        let message = tagged(3, n, 1500);
        let answer = conn
            .post(&send_body(&secret.public_key(), &message), false)
            .await?;
        assert_eq!(answer.status, 200);
        sent.push(message);
    }
    drop(conn);
    assert_eq!(relay.terminate()?.code(), Some(0), "{}", relay.stderr());
    Ok((std::fs::read(data.path().join("relay.redb"))?, sent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_refused_at_start() -> anyhow::Result<()> {
    init_tracing();
    let secret = secret_key(8000);
    let (file, sent) = pristine(&secret, 60).await?;
    for damage in DAMAGES {
        let dir = tempfile::tempdir()?;
        let mut damaged = file.clone();
        (damage.apply)(&mut damaged);
        std::fs::write(dir.path().join("relay.redb"), &damaged)?;
        assert_refused(dir.path(), damage.name)?;
    }

    // Random pages overwritten: refused, or (a page redb no longer uses)
    // served with every message exactly as sent.
    let mut rng = Rng::new("damaged_pages");
    let pages = file.len() / 4096;
    let (mut refused, mut served) = (0, 0);
    for _ in 0..12 {
        let page = rng.below(pages as u64) as usize;
        let mut damaged = file.clone();
        let garbage = rng.bytes(4096);
        damaged[page * 4096..(page + 1) * 4096].copy_from_slice(&garbage);
        let (dir, logs) = (tempfile::tempdir()?, tempfile::tempdir()?);
        std::fs::write(dir.path().join("relay.redb"), &damaged)?;
        match Relay::start(&[], dir.path(), logs.path()) {
            Ok(mut relay) => {
                let stored = receive_all(relay.http, &secret).await?;
                assert_eq!(stored, sent, "page {page} damaged: messages served altered");
                relay.terminate()?;
                served += 1;
            }
            Err(_) => {
                let dir2 = tempfile::tempdir()?;
                std::fs::write(dir2.path().join("relay.redb"), &damaged)?;
                assert_refused(dir2.path(), &format!("page {page}"))?;
                refused += 1;
            }
        }
    }
    eprintln!("random damaged pages: {refused} refused, {served} served unaltered");

    // The undamaged file starts and serves every message.
    let (dir, logs) = (tempfile::tempdir()?, tempfile::tempdir()?);
    std::fs::write(dir.path().join("relay.redb"), &file)?;
    let mut relay = Relay::start(&[], dir.path(), logs.path())?;
    assert_eq!(receive_all(relay.http, &secret).await?, sent);
    assert_eq!(relay.terminate()?.code(), Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_is_announced() -> anyhow::Result<()> {
    init_tracing();
    let (data, logs) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut relay = Relay::start(&[], &data.path().join("new"), logs.path())?;
    assert_eq!(relay.terminate()?.code(), Some(0));
    assert!(
        relay.stderr().contains("NO DATABASE FILE"),
        "{}",
        relay.stderr()
    );
    let mut again = Relay::start(&[], &data.path().join("new"), logs.path())?;
    assert_eq!(again.terminate()?.code(), Some(0));
    assert!(!again.stderr().contains("NO DATABASE FILE"));
    Ok(())
}

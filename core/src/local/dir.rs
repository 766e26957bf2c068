//! The data directory: an exclusive lock so that only one handle in one
//! process uses it, and an identity file that fixes the node name, node id
//! and engine when the directory is first created.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local::storage::EngineKind;

const IDENTITY_FILE: &str = "tidelog.json";
const LOCK_FILE: &str = "LOCK";
const FORMAT: u32 = 1;
/// How long an open waits for a directory lock that is taken (see
/// [`DirLock::acquire`]) before it says the directory is in use.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Holds the directory's advisory lock for as long as it lives.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock, or fails once it has stayed taken for
    /// [`LOCK_WAIT`]. On Linux this is `flock`, whose locks belong to the
    /// open file description, so a second open in this same process is
    /// refused too, not only one from another process.
    ///
    /// The short wait is for a lock that is already let go: a process that
    /// starts a child (fork, then exec) gives the child a copy of every
    /// descriptor until the exec closes them, so a handle closed meanwhile
    /// keeps its lock for that long. A test reopening a directory right
    /// after a refused open, while another test started a process, was
    /// told the directory was in use.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Locked {
                        path: dir.to_path_buf(),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) format: u32,
    pub(crate) engine: String,
    pub(crate) node_name: String,
    pub(crate) node_id: u64,
}

/// Loads the identity, or creates it on first open; refuses a directory made
/// with another engine or for another node name.
pub(crate) fn load_or_create_identity(
    dir: &Path,
    node_name: &str,
    engine: EngineKind,
) -> Result<Identity> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let id: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
            if id.format != FORMAT {
                return Err(Error::Unsupported(format!(
                    "data directory format {} (this build reads format {FORMAT})",
                    id.format
                )));
            }
            if id.engine != engine.as_str() {
                return Err(Error::EngineMismatch {
                    path: dir.to_path_buf(),
                    found: id.engine,
                    requested: engine.as_str().into(),
                });
            }
            if id.node_name != node_name {
                return Err(Error::NodeNameMismatch {
                    path: dir.to_path_buf(),
                    found: id.node_name,
                    requested: node_name.into(),
                });
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Identity {
                format: FORMAT,
                engine: engine.as_str().into(),
                node_name: node_name.into(),
                node_id: random_node_id(dir)?,
            };
            write_atomically(&path, &serde_json::to_vec_pretty(&id).unwrap_or_default())?;
            Ok(id)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Writes a small file so that a crash leaves either the old or the new
/// contents, never a torn one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn random_node_id(dir: &Path) -> Result<u64> {
    let mut buf = [0u8; 8];
    let mut f = File::open("/dev/urandom").map_err(|e| Error::io("/dev/urandom", e))?;
    std::io::Read::read_exact(&mut f, &mut buf).map_err(|e| Error::io(dir, e))?;
    // Zero is reserved so that "no origin" can never collide with a node.
    Ok(u64::from_le_bytes(buf).max(1))
}

/// Node names double as TLS DNS names, so they follow DNS label rules.
pub(crate) fn validate_node_name(name: &str) -> Result<()> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(ok_label) {
        return Err(Error::invalid(
            "node name",
            format!(
                "`{name}` is not a DNS name (letters, digits, '-' and '.' only); it must equal the DNS name in this node's TLS certificate"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_within_one_process_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(Error::Locked { .. })
        ));
        drop(first);
        DirLock::acquire(dir.path()).expect("free again after drop");
    }

    /// A lock let go while an open waits (as when a started child process
    /// still held a copy of the handle's descriptor) is taken; one held
    /// past the wait is refused.
    #[test]
    fn an_open_waits_briefly_for_a_lock_that_is_being_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        // Before the spawn: the lock goes no sooner than LOCK_WAIT / 5
        // after this instant, so the open cannot have waited less.
        let started = std::time::Instant::now();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(LOCK_WAIT / 5);
            drop(held);
        });
        DirLock::acquire(dir.path()).expect("taken once the other handle let go");
        assert!(started.elapsed() >= LOCK_WAIT / 5);
        letting_go.join().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(Error::Locked { .. })
        ));
        assert!(started.elapsed() >= LOCK_WAIT);
    }

    #[test]
    fn identity_is_created_once_and_then_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path(), "edge-1", EngineKind::Fjall).unwrap();
        let b = load_or_create_identity(dir.path(), "edge-1", EngineKind::Fjall).unwrap();
        assert_eq!(a, b);
        assert!(a.node_id != 0);
        assert!(matches!(
            load_or_create_identity(dir.path(), "edge-1", EngineKind::Sled),
            Err(Error::EngineMismatch { .. })
        ));
        assert!(matches!(
            load_or_create_identity(dir.path(), "edge-2", EngineKind::Fjall),
            Err(Error::NodeNameMismatch { .. })
        ));
    }

    #[test]
    fn node_names_must_be_dns_names() {
        for good in ["edge-1", "cloud.example.com", "a"] {
            validate_node_name(good).unwrap();
        }
        for bad in ["", "-x", "a..b", "under_score", "sp ace", "x-"] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
    }
}

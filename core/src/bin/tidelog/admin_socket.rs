//! The admin socket's file: made owner-only, never stolen from a serve
//! that is still running, taken over from one that was killed, and
//! removed on a clean exit.
//!
//! Who may connect is decided by the file system (mode 0600, so only the
//! serve's user can connect on Linux) and checked again per connection
//! with the peer's credentials (`admin::handle`), since some systems
//! ignore a socket's mode and a client could connect in the moment
//! between `bind` and `chmod`. The directory matters too: anyone who may
//! write to it may replace the socket with one of their own, so a
//! directory writable by every user is refused unless it is sticky
//! (`/tmp`), where only the owner may remove the file.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::CliError;

/// A bound admin socket. Dropping it removes the file, unless another
/// process has since put its own there.
pub struct AdminSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// Device and inode of the file this process made.
    id: (u64, u64),
    /// The file's owner: the only user (with root) that may talk to it.
    pub owner: u32,
}

impl AdminSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listener, once, for the runtime that serves it.
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("cannot remove admin socket {}: {e}", self.path.display());
            }
        }
    }
}

/// Binds the admin socket at `path` (mode 0600).
pub fn bind(path: &Path) -> Result<AdminSocket, CliError> {
    let shown = path.display();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    check_dir(dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(CliError::Runtime(format!(
                    "another `tidelog serve` is running: its admin socket {shown} answers. Stop it first, or give this one its own [admin] socket (and data_dir)"
                )))
            }
            // Nothing listens: the serve that made it was killed.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|e| {
                    CliError::Runtime(format!(
                        "cannot remove the stale admin socket {shown}: {e}"
                    ))
                })?;
                log::warn!(
                    "replaced stale admin socket {shown} (left by a serve that did not stop cleanly)"
                );
            }
            Err(e) => {
                return Err(CliError::Runtime(format!(
                    "cannot tell whether admin socket {shown} is in use ({e}): check who owns it, or set another [admin] socket"
                )))
            }
        },
        Ok(_) => {
            return Err(CliError::Config(format!(
                "[admin] socket {shown} exists and is not a socket: move that file away or set another path"
            )))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CliError::Runtime(format!(
                "cannot look at admin socket {shown}: {e}"
            )))
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        CliError::Runtime(match e.kind() {
            // Two serves starting at once: the other one won.
            ErrorKind::AddrInUse => format!(
                "admin socket {shown} was just made by another `tidelog serve`: stop it first, or give this one its own [admin] socket"
            ),
            _ => format!("cannot make admin socket {shown}: {e}"),
        })
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        CliError::Runtime(format!("cannot make admin socket {shown} owner-only: {e}"))
    })?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| CliError::Runtime(format!("cannot look at admin socket {shown}: {e}")))?;
    Ok(AdminSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
        owner: meta.uid(),
    })
}

/// The socket's directory exists (the data directory is made here if it
/// is the one) and no other user may swap the socket for their own.
fn check_dir(dir: &Path) -> Result<(), CliError> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // The default is inside data_dir, which the database would
            // create anyway; owner-only like the database makes it.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    CliError::Runtime(format!(
                        "cannot create {} for the admin socket: {e}",
                        dir.display()
                    ))
                })?;
            return Ok(());
        }
        Err(e) => {
            return Err(CliError::Runtime(format!(
                "cannot look at {}, the admin socket's directory: {e}",
                dir.display()
            )))
        }
    };
    let mode = meta.permissions().mode();
    if !meta.is_dir() {
        return Err(CliError::Config(format!(
            "the admin socket's directory {} is not a directory",
            dir.display()
        )));
    }
    // Writable by every user and not sticky: anyone could replace it.
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(CliError::Config(format!(
            "the admin socket's directory {} is writable by every user (mode {:o}): anyone could replace the socket; set [admin] socket to a directory only tidelog's user may write (the default is in data_dir)",
            dir.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_owner_only_refused_while_live_and_replaced_when_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.sock");
        let first = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = bind(&path).err().unwrap().to_string();
        assert!(e.contains("another `tidelog serve` is running"), "{e}");
        // A killed process leaves the file without a listener.
        let mut stale = first;
        drop(stale.take_listener());
        std::mem::forget(stale);
        let second = bind(&path).unwrap();
        drop(second);
        assert!(!path.exists(), "a clean exit removes the socket");
    }

    #[test]
    fn hostile_places_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let e = bind(&file).err().unwrap().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind(&open.join("s")).err().unwrap().to_string();
        assert!(e.contains("writable by every user"), "{e}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(bind(&open.join("s")).is_ok(), "a sticky directory is fine");
    }
}

//! File helpers the store, the sandboxes and the plugin share: private directories, writes
//! that a reader sees whole or not at all, and directory locks that survive their directory
//! being removed by their holder.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::ConfError;

/// The names in a directory of the store (subdirectories, claims), hidden ones (`.lock`,
/// temporary files) left out; none if it does not exist.
pub fn subdirectory_names(dir: &Path) -> Result<Vec<String>, ConfError> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ConfError::io(dir, e)),
    }
}

/// Creates `dir` and its missing parents with mode 0750 (inside a prepared state directory
/// they inherit its group and set-group-ID bit: readable by the resolvers' group only).
pub fn create_private_dir(dir: &Path) -> Result<(), ConfError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| ConfError::io(dir, e))
}

/// Opens `path` read-only as root may open what another user controls: a symlink as its last
/// component is refused (ELOOP), a FIFO does not block, and `dir` asks for a directory. What
/// is then checked (`fstat`) and changed (`fchown`, `fchmod`) is what was opened, never a
/// link's target nor a file swapped in after a check by path.
pub fn open_nofollow(path: &Path, dir: bool) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    let mut flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
}

/// Reads a regular file another party may write (a container's resolv.conf), as root may:
/// not through a symlink, never blocking on a FIFO or device, and at most `max` bytes (more is
/// an error, not a partial read).
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = open_nofollow(path, false)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("over {max} bytes"),
        ));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Opens `path` for appending as root may open a file at a path another party could plant
/// a link at: a symlink as its last component is refused, a FIFO does not block, only a
/// regular file is kept, one made here is 0600.
pub fn open_append_nofollow(path: &Path) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(
            (OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).bits(),
        )
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// The lock file inside a locked directory.
pub const LOCK_FILE: &str = ".lock";

/// Creates `dir` (0750) if needed and takes an exclusive flock on its `.lock` (0600),
/// blocking until it is free.
///
/// The holder of a directory's lock may remove the directory, lock file included
/// ([`remove_locked_dir`]). A waiter then wakes up holding a lock on an unlinked file while a
/// newcomer creates and locks a new one: two holders of "the" lock. So after `flock` the lock
/// is kept only if the path still names the locked file; otherwise it starts over.
pub fn lock_dir(dir: &Path) -> Result<Flock<File>, ConfError> {
    let path = dir.join(LOCK_FILE);
    loop {
        match create_private_dir(dir) {
            // mkdir found it, then it was removed before it could be checked: start over.
            Err(ConfError::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                continue
            }
            r => r?,
        }
        let file = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            // Removed between the mkdir and the open: start over.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(ConfError::io(path, e)),
        };
        let locked = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| ConfError::io(&path, std::io::Error::from(errno)))?;
        if still_linked(&locked, &path) {
            return Ok(locked);
        }
    }
}

/// Takes the lock of an existing directory if no one holds it; `None` when someone does or
/// when the directory (or its lock file) is gone.
pub fn try_lock_dir(dir: &Path) -> Result<Option<Flock<File>>, ConfError> {
    try_lock_file(&dir.join(LOCK_FILE), false)
}

/// Takes the lock of the file `path` (made, mode 0600, when `create`) if no one holds it;
/// `None` when someone does, or when it does not exist and is not to be made.
pub fn try_lock_file(path: &Path, create: bool) -> Result<Option<Flock<File>>, ConfError> {
    let opened = OpenOptions::new()
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfError::io(path, e)),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) if still_linked(&l, path) => Ok(Some(l)),
        Ok(_) => Ok(None),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(ConfError::io(path, std::io::Error::from(errno))),
    }
}

/// Whether `path` still names the open file `file` (same device and inode).
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Removes a directory whose lock the caller holds: everything but the lock file first, the
/// lock file last (waiters then see it unlinked and start over), then the directory. If a
/// newcomer created a new lock file in between, the directory stays with only that file,
/// which its holder uses.
pub fn remove_locked_dir(dir: &Path, _held: Flock<File>) -> Result<(), ConfError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ConfError::io(dir, e)),
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name() == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(ConfError::io(path, e)),
        }
    }
    remove_if_exists(&dir.join(LOCK_FILE))?;
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty) => Ok(()),
        Err(e) => Err(ConfError::io(dir, e)),
    }
}

/// Writes `path` atomically with mode 0640: a temporary file in the same directory, then a
/// rename over the target, so a reader sees the old content or the new, never a mix. No
/// fsync: this is runtime state (`/run` is tmpfs) that does not outlive a reboot, and a
/// flush would cost every ADD a disk round trip where the state dir is on disk.
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<(), ConfError> {
    write_atomic_mode(path, body, 0o640)
}

/// [`write_atomic`] with an explicit mode (a container's resolv.conf must be world-readable).
pub fn write_atomic_mode(path: &Path, body: &[u8], mode: u32) -> Result<(), ConfError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| ConfError::io(dir, e))?;
    tmp.write_all(body)
        .and_then(|_| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(mode))
        })
        .map_err(|e| ConfError::io(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| ConfError::io(path, e.error))?;
    Ok(())
}

/// Removes a file; a missing file is not an error.
pub fn remove_if_exists(path: &Path) -> Result<(), ConfError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ConfError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_removed_while_held_is_never_held_twice() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Eight lockers of one directory; every other holder removes the directory (lock
        // file included, as DEL does) before it lets go. A waiter that kept a lock on the
        // unlinked file would hold "the" lock next to a newcomer that made a new file.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandbox");
        let (holders, overlaps, removals) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        std::thread::scope(|s| {
            for t in 0..8 {
                let (dir, holders, overlaps, removals) = (&dir, &holders, &overlaps, &removals);
                s.spawn(move || {
                    for i in 0..200 {
                        let held = lock_dir(dir).unwrap();
                        if holders.fetch_add(1, Ordering::SeqCst) != 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::yield_now();
                        holders.fetch_sub(1, Ordering::SeqCst);
                        if (i + t) % 2 == 0 {
                            remove_locked_dir(dir, held).unwrap();
                            removals.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(removals.load(Ordering::SeqCst), 800);
        assert_eq!(
            overlaps.load(Ordering::SeqCst),
            0,
            "two holders of one lock"
        );
    }
}

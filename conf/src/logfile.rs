//! A log file rotated by size while its writer runs, so that no client, no outage and no
//! writer of garbage values in etcd can grow a log without bound on the tmpfs that also holds
//! the store (a full `/run` fails every ADD). The resolvers and the sync processes log through
//! it.
//!
//! Why not a crate: `file-rotate` 0.8 (the maintained size-rotating writer) re-creates a
//! missing log directory on every write and rotation, panicking when it cannot (a resolver's
//! log lives in the sandbox directory, which DEL removes, and must never be resurrected), and
//! creates a new file at each rotation (the confined resolver may create none). It also pulls
//! chrono and flate2 into binaries that need neither. What we need is forty lines.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// A log file that, when a write would take it past `cap` bytes, becomes `<name>.1`
/// (replacing the previous one) while writing goes on in a fresh `<name>`: at most about
/// 2 × `cap` on disk. The size is the file's own (one `fstat` per message; messages are few
/// and rate-limited), so what was there before, or was appended by another writer, counts.
///
/// Both files are opened when the log is, and rotation swaps their names (`renameat2`
/// with `RENAME_EXCHANGE`) after emptying the old one: the resolver never creates a file once
/// it serves, which lets its seccomp filter forbid every open for writing.
pub struct RotatingLog {
    path: PathBuf,
    old_path: PathBuf,
    current: File,
    spare: File,
    cap: u64,
}

impl RotatingLog {
    /// Opens (appending) or creates `path` and `path.1` with mode 0600.
    pub fn open(path: PathBuf, cap: u64) -> std::io::Result<RotatingLog> {
        let old_path = RotatingLog::old_path(&path);
        let (current, spare) = (open_append(&path)?, open_append(&old_path)?);
        Ok(RotatingLog::from_files(path, current, spare, cap))
    }

    /// The log at `path` over files already open for appending: `current` (named `path`) and
    /// `spare` (named [`RotatingLog::old_path`]).
    pub fn from_files(path: PathBuf, current: File, spare: File, cap: u64) -> RotatingLog {
        RotatingLog {
            old_path: RotatingLog::old_path(&path),
            path,
            current,
            spare,
            cap,
        }
    }

    /// `<path>.1`, the rotated log.
    pub fn old_path(path: &std::path::Path) -> PathBuf {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        PathBuf::from(old)
    }

    fn rotate(&mut self) {
        // The directory may be gone (DEL removed the sandbox): then keep writing where we are.
        if self.spare.set_len(0).is_err() {
            return;
        }
        let swapped = nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &self.path,
            nix::fcntl::AT_FDCWD,
            &self.old_path,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        );
        if swapped.is_ok() {
            std::mem::swap(&mut self.current, &mut self.spare);
        }
    }
}

fn open_append(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = self.current.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 && len + buf.len() as u64 > self.cap {
            self.rotate();
        }
        self.current.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.current.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_cap_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolver.log");
        let mut log = RotatingLog::open(path.clone(), 100).unwrap();
        for _ in 0..25 {
            log.write_all(b"0123456789\n").unwrap();
        }
        let cur = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("resolver.log.1"))
            .unwrap()
            .len();
        assert!(cur <= 100 && old <= 100, "{cur} {old}");
        assert_eq!(cur % 11, 0);
    }

    #[test]
    fn a_removed_directory_is_not_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sandbox");
        std::fs::create_dir(&sub).unwrap();
        let mut log = RotatingLog::open(sub.join("resolver.log"), 10).unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        for _ in 0..5 {
            log.write_all(b"0123456789\n").unwrap();
        }
        assert!(!sub.exists());
    }
}

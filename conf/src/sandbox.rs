//! A container's sandbox: its netns, its attachments to networks, its one resolver, and the
//! resolv.conf files written for it. The plugin changes it only under the sandbox lock; the
//! resolver reads it on start and on a `reload` from the plugin.

use std::fs::File;
use std::path::PathBuf;

use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use crate::paths::StatePaths;
use crate::store::{create_private_dir, lock_file, write_atomic};
use crate::ConfError;

/// One network the container is attached to, in attach order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub ifname: String,
}

/// The running resolver: enough to find it, verify it is ours, and undo its redirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolverInfo {
    pub pid: i32,
    /// Process start time in clock ticks since boot (/proc/PID/stat field 22): a recycled pid
    /// has another, so DEL never signals a stranger.
    pub start_time: u64,
    pub udp_port: u16,
    pub tcp_port: u16,
}

/// A file embedns wrote for the container, and what to put back on DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    pub path: PathBuf,
    /// The previous content, restored on DEL; `None` if the file did not exist.
    pub original: Option<String>,
    /// A directory embedns created to hold the file (`/etc/netns/<name>`), removed on DEL.
    #[serde(default)]
    pub created_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub container_id: String,
    pub netns: String,
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub resolver: Option<ResolverInfo>,
    #[serde(default)]
    pub files: Vec<WrittenFile>,
}

/// Proof that the caller holds the sandbox lock.
pub struct SandboxLock(#[allow(dead_code)] Flock<File>);

/// Takes a container's sandbox lock (blocking), creating its directory.
pub fn lock(paths: &StatePaths, container_id: &str) -> Result<SandboxLock, ConfError> {
    let dir = paths.sandbox(container_id);
    create_private_dir(&dir)?;
    lock_file(&dir.join(".lock")).map(SandboxLock)
}

/// Reads a sandbox; `Ok(None)` if there is none.
pub fn load(paths: &StatePaths, container_id: &str) -> Result<Option<Sandbox>, ConfError> {
    let path = paths.sandbox_file(container_id);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ConfError::Corrupt { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfError::Io { path, source: e }),
    }
}

/// Writes a sandbox atomically.
pub fn save(paths: &StatePaths, _lock: &SandboxLock, sb: &Sandbox) -> Result<(), ConfError> {
    let body = serde_json::to_vec_pretty(sb).expect("a sandbox always serializes");
    write_atomic(&paths.sandbox_file(&sb.container_id), &body)
}

/// Removes the sandbox's directory (its lock file included: the caller's lock stays valid
/// until dropped, and a waiter that then locks the unlinked file re-creates the directory).
pub fn remove(
    paths: &StatePaths,
    _lock: &SandboxLock,
    container_id: &str,
) -> Result<(), ConfError> {
    let dir = paths.sandbox(container_id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ConfError::Io {
            path: dir,
            source: e,
        }),
    }
}

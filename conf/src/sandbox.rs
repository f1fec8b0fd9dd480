//! A container's sandbox: its netns, its attachments to networks, its one resolver, and the
//! resolv.conf files written for it. The plugin changes it only under the sandbox lock; the
//! resolver reads it on start and on a `reload` from the plugin.

use std::fs::File;
use std::path::PathBuf;

use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use crate::fsutil::{lock_dir, remove_locked_dir, try_lock_dir, write_atomic};
use crate::paths::StatePaths;
use crate::ConfError;

/// One network the container is attached to, in attach order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub ifname: String,
    /// The address this attachment's CNI result names as nameserver: 127.0.0.11 for the
    /// first, the next free of 127.0.0.12-15 for others, all redirected to the one resolver.
    /// podman concatenates the results of a container's networks, and its `network
    /// disconnect` removes the nameservers that network's result named: distinct addresses
    /// neither repeat nor leave the container without one (R23).
    #[serde(default = "first_nameserver")]
    pub nameserver: std::net::Ipv4Addr,
    /// The nameservers a runtime may write for this attachment instead of ours, whose queries
    /// the resolver answers too (R26): the `dns` capability's servers, else the host's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caught: Vec<std::net::Ipv4Addr>,
    /// The IPv6 ones (a field of their own: releases before them read `caught` as IPv4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caught6: Vec<std::net::Ipv6Addr>,
}

/// The embedded resolver's address, Docker's.
pub const EMBEDDED_RESOLVER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 11);

/// The addresses attachments may name: 127.0.0.11-15, inside the redirected 127.0.0.8/29.
pub const NAMESERVERS: std::ops::RangeInclusive<u8> = 11..=15;

fn first_nameserver() -> std::net::Ipv4Addr {
    EMBEDDED_RESOLVER
}

impl Sandbox {
    /// The nameserver address for a new attachment: the lowest of [`NAMESERVERS`] no other
    /// attachment names (127.0.0.11 again when all are taken).
    pub fn free_nameserver(&self) -> std::net::Ipv4Addr {
        NAMESERVERS
            .map(|last| std::net::Ipv4Addr::new(127, 0, 0, last))
            .find(|a| !self.attachments.iter().any(|x| x.nameserver == *a))
            .unwrap_or(EMBEDDED_RESOLVER)
    }

    /// The nameservers caught for the container (R26): its attachments' together, in attach
    /// order (IPv4 first), each once.
    pub fn caught(&self) -> Vec<std::net::IpAddr> {
        let v4 = self
            .attachments
            .iter()
            .flat_map(|a| &a.caught)
            .map(|ip| (*ip).into());
        let v6 = self
            .attachments
            .iter()
            .flat_map(|a| &a.caught6)
            .map(|ip| (*ip).into());
        let mut all = Vec::new();
        for ip in v4.chain(v6) {
            if !all.contains(&ip) {
                all.push(ip);
            }
        }
        all
    }
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
    /// Its sockets on `[::1]` for the IPv6 nameservers caught (R26); `None` where the netns has
    /// no IPv6 (or a release before them started it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp6_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp6_port: Option<u16>,
}

impl ResolverInfo {
    /// Its IPv6 ports, when it has both sockets.
    pub fn ports6(&self) -> Option<(u16, u16)> {
        self.udp6_port.zip(self.tcp6_port)
    }
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

/// A container's state across its networks: attachments, resolver, files written, netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub container_id: String,
    pub netns: String,
    /// The inode of the namespace `netns` named at ADD: the same path may later name a new
    /// namespace (a netns deleted and re-created under the same name).
    #[serde(default)]
    pub netns_inode: Option<u64>,
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub resolver: Option<ResolverInfo>,
    /// False from just before an ADD starts installing the redirect until that ADD has seen
    /// the resolver answer through it: a teardown then first waits for an `iptables-restore`
    /// the killed ADD may have left running in the netns, which would otherwise put the rules
    /// back after their removal.
    #[serde(default = "settled")]
    pub redirect_settled: bool,
    /// The `UID:GID` exempt from the catch of R26 (the resolver's), once the redirect has
    /// the catch chain; `None`: installed by an earlier version, whose rules lack it until
    /// the next change of the container's networks adds it.
    #[serde(default)]
    pub catch_owner: Option<(u32, u32)>,
    /// Whether the IPv6 catch (R26, ip6tables: its chain and jump) is in the netns.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catch6: bool,
    #[serde(default)]
    pub files: Vec<WrittenFile>,
    /// The cgroups made for the resolver (its leaves, then parents made for them, deepest
    /// first), removed by DEL once it is stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<PathBuf>,
}

fn settled() -> bool {
    true
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            container_id: String::new(),
            netns: String::new(),
            netns_inode: None,
            attachments: Vec::new(),
            resolver: None,
            redirect_settled: true,
            catch_owner: None,
            catch6: false,
            files: Vec::new(),
            cgroups: Vec::new(),
        }
    }
}

/// Proof that the caller holds the sandbox lock.
pub struct SandboxLock(Flock<File>);

/// Takes a container's sandbox lock (blocking), creating its directory.
pub fn lock(paths: &StatePaths, container_id: &str) -> Result<SandboxLock, ConfError> {
    lock_dir(&paths.sandbox(container_id)).map(SandboxLock)
}

/// Takes a sandbox's lock if it exists and no one holds it (GC passes over busy sandboxes).
pub fn try_lock(paths: &StatePaths, container_id: &str) -> Result<Option<SandboxLock>, ConfError> {
    Ok(try_lock_dir(&paths.sandbox(container_id))?.map(SandboxLock))
}

/// The container IDs that have a sandbox directory.
pub fn list(paths: &StatePaths) -> Result<Vec<String>, ConfError> {
    crate::fsutil::subdirectory_names(&paths.sandboxes())
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

/// Removes the sandbox's directory and releases its lock. The lock file goes last, and a
/// waiter that then holds the unlinked file starts over on a new one (`fsutil::lock_dir`).
pub fn remove(paths: &StatePaths, lock: SandboxLock, container_id: &str) -> Result<(), ConfError> {
    remove_locked_dir(&paths.sandbox(container_id), lock.0)
}

/// A redirect that a DEL could not remove from a namespace that still exists. DEL succeeds
/// anyway (CNI spec); the note is shown by `embedns status` and retried by GC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    pub container_id: String,
    pub netns: String,
    /// The inode of the namespace the rules were left in (absent from earlier versions'
    /// notes): GC retries only in that namespace, and not while a live sandbox uses it.
    #[serde(default)]
    pub netns_inode: Option<u64>,
    pub error: String,
}

/// Notes a leftover (replacing an earlier note of the same container).
pub fn save_leftover(paths: &StatePaths, leftover: &Leftover) -> Result<(), ConfError> {
    crate::fsutil::create_private_dir(&paths.leftovers())?;
    let body = serde_json::to_vec_pretty(leftover).expect("a leftover always serializes");
    write_atomic(&paths.leftover(&leftover.container_id), &body)
}

/// Every leftover noted (unreadable notes are skipped).
pub fn leftovers(paths: &StatePaths) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(paths.leftovers()) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Forgets a container's leftover (removed since, or its netns is gone).
pub fn clear_leftover(paths: &StatePaths, container_id: &str) -> Result<(), ConfError> {
    crate::fsutil::remove_if_exists(&paths.leftover(container_id))
}

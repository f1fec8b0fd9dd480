//! The layout of the state directory (`dataDir`, default `/run/embedns`, or
//! `$XDG_RUNTIME_DIR/embedns` unprivileged: `user::default_data_dir`):
//!
//! ```text
//! networks/<network>/<cid>@<ifname>.json   one record per attachment (store.rs)
//! networks/<network>/.index                the network's shared index, mapped by its resolvers
//!                                          (index/)
//! networks/<network>/.lock                 serializes writers of that network
//! networks/<network>/.names/<name>/<key>   who claims a container name (stale-name cleanup)
//! networks/<network>/.remote/<host>/<key>.json  another host's record, copied from etcd by
//!                                          the network's sync process (shared networks only)
//! networks/<network>/.etcd.json            the etcd config the sync process runs with
//! networks/<network>/.sync.lock            held by the network's sync process while it runs
//! networks/<network>/.sync.json            the sync process's status (shared.rs)
//! sync/<network>.log                       the sync process's log
//! sync/host-id                             this host's random id in its name's claims
//! sandboxes/<cid>/sandbox.json             a container's attachments, resolver and files
//! sandboxes/<cid>/.lock                    serializes ADD/DEL of that container
//! sandboxes/<cid>/control.sock             the resolver's control channel
//! sandboxes/<cid>/log/resolver.log         the resolver's log (rotated at 1 MiB, 2 files), in
//!                                          the one directory the resolver's user owns
//! leftovers/<cid>.json                     a redirect a DEL could not remove (GC retries it)
//! removers/<netns inode>                   the pid of the remover a DEL left for that netns
//! ```
//!
//! The state directory is root's, group the resolvers' (`resolverUser`), mode 2750: below it
//! directories are 2750 (group and set-group-ID inherited) and files 0640 (the resolvers read
//! them, no one else does: records say which containers exist and where); lock files and
//! control sockets are 0600.

use std::path::{Path, PathBuf};

/// Suffix of record files; anything else in a network directory is not a record.
pub const RECORD_SUFFIX: &str = ".json";

/// The name of a shared network's etcd config in its directory (`.etcd.json`).
pub const ETCD_CONF_FILE: &str = ".etcd.json";

/// Paths under one state directory.
#[derive(Debug, Clone)]
pub struct StatePaths {
    root: PathBuf,
}

impl StatePaths {
    /// The paths under the state directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StatePaths { root: root.into() }
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `networks/`: one directory per network.
    pub fn networks(&self) -> PathBuf {
        self.root.join("networks")
    }

    /// `networks/<network>/`: its records, index and lock.
    pub fn network(&self, network: &str) -> PathBuf {
        self.networks().join(network)
    }

    /// `networks/<network>/.etcd.json`: the config the network's sync process runs with.
    pub fn etcd_conf(&self, network: &str) -> PathBuf {
        self.network(network).join(ETCD_CONF_FILE)
    }

    /// `networks/<network>/.sync.lock`: held by the network's sync process.
    pub fn sync_lock(&self, network: &str) -> PathBuf {
        self.network(network).join(".sync.lock")
    }

    /// `networks/<network>/.sync.json`: the sync process's status.
    pub fn sync_status(&self, network: &str) -> PathBuf {
        self.network(network).join(".sync.json")
    }

    /// `sync/host-id`: this host's random id in its claims (made once per state directory).
    pub fn host_id(&self) -> PathBuf {
        self.root.join("sync").join("host-id")
    }

    /// `sync/<network>.log`: the sync process's log (kept when the network's directory goes).
    pub fn sync_log(&self, network: &str) -> PathBuf {
        self.root.join("sync").join(format!("{network}.log"))
    }

    /// `sandboxes/`: one directory per container.
    pub fn sandboxes(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// `sandboxes/<cid>/`: a container's sandbox, lock, control socket and log.
    pub fn sandbox(&self, container_id: &str) -> PathBuf {
        self.sandboxes().join(container_id)
    }

    /// `sandboxes/<cid>/sandbox.json`.
    pub fn sandbox_file(&self, container_id: &str) -> PathBuf {
        self.sandbox(container_id).join("sandbox.json")
    }

    /// `sandboxes/<cid>/control.sock`: the resolver's control channel.
    pub fn control_socket(&self, container_id: &str) -> PathBuf {
        self.sandbox(container_id).join("control.sock")
    }

    /// The control socket as a path short enough for `sun_path` (108 bytes) whatever the
    /// state directory: through `dir`, an open handle on the sandbox directory, which the
    /// caller keeps open while it binds or connects.
    pub fn control_socket_via(dir: &std::fs::File) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}/control.sock", dir.as_raw_fd()))
    }

    /// `sandboxes/<cid>/supervisor.json`: what the resolver's supervisor says of its
    /// restarts (`embedns_conf::supervision`).
    pub fn supervision(&self, container_id: &str) -> PathBuf {
        self.sandbox(container_id).join("supervisor.json")
    }

    /// Where DEL notes what it could not remove.
    pub fn leftovers(&self) -> PathBuf {
        self.root.join("leftovers")
    }

    /// `leftovers/<cid>.json`: a redirect a DEL could not remove.
    pub fn leftover(&self, container_id: &str) -> PathBuf {
        self.leftovers().join(format!("{container_id}.json"))
    }

    /// The directory the resolver's user owns, where it writes (and rotates) its log.
    pub fn resolver_log_dir(&self, container_id: &str) -> PathBuf {
        self.sandbox(container_id).join("log")
    }

    /// `sandboxes/<cid>/log/resolver.log`.
    pub fn resolver_log(&self, container_id: &str) -> PathBuf {
        self.resolver_log_dir(container_id).join("resolver.log")
    }
}

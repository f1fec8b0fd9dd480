//! What a daemon's `--confinement-check` prints: it confines itself exactly as it does to
//! serve, then tries what a daemon taken over would, and says each outcome (`ok`, or the
//! error as the OS words it). The tests read these, each field by its name.

use serde::{Deserialize, Serialize};

/// `ok`, or the error.
pub fn outcome(r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

/// A resolver's: `embedns-resolverd --confinement-check UID:GID PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolverConfinement {
    /// Appending to `PATH` (a file of root's) with the resolver's identity, before the filter.
    pub write_as_user: String,
    /// The same once confined.
    pub write: String,
    /// Creating a file in a world-writable directory.
    pub create: String,
    /// Opening a netlink socket.
    pub netlink: String,
    /// Running a program.
    pub exec: String,
    /// A rename that replaces a file.
    pub rename_over: String,
    /// Asking for another process to be signalled (F_SETOWN).
    pub setown: String,
    /// A TCP connect to a port no upstream uses.
    pub connect_tcp: String,
    /// System calls the filter refused.
    pub denied: u64,
    pub uid: u32,
    pub gid: u32,
}

/// A sync worker's: `embedns-syncd --confinement-check DATA_DIR NETWORK PATH SOCKET PID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncConfinement {
    /// Appending to `PATH` (a file of root's).
    pub write: String,
    /// Creating a file in the temporary directory.
    pub create_tmp: String,
    /// Creating a file in its own network's directory (allowed).
    pub create_own: String,
    /// A TCP connect to a port that is no endpoint's.
    pub connect_tcp: String,
    /// Making a TCP socket (allowed: its bind is Landlock's to refuse).
    pub tcp_socket: String,
    /// Connecting to `SOCKET` (a root UNIX socket).
    pub connect_unix: String,
    /// Signalling `PID` (another root process).
    pub signal: String,
    /// Running a program.
    pub exec: String,
}

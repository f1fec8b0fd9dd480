//! What a resolver's supervisor says of the resolvers it ran: `sandboxes/<cid>/supervisor.json`,
//! written (atomically, by root, in root's sandbox directory) on each restart and each change
//! of R26's catch, read by `embedns status`. The supervisor is the process the sandbox records
//! as its resolver; each resolver is its child (`embedns-resolverd`'s supervisor.rs).

use serde::{Deserialize, Serialize};

/// The supervisor's account of its resolvers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Supervision {
    /// The supervisor's pid (the sandbox's resolver pid).
    pub pid: u32,
    /// The serving child's pid, 0 while none runs.
    pub resolver_pid: u32,
    /// Resolvers started after the first.
    pub restarts: u64,
    /// How the last resolver that ended did (`killed by SIGKILL`, `exited with 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Unix time (ms) of the last end of a resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_unix_ms: Option<u64>,
    /// Resolvers in a row that ended before serving for a while: what the back-off counts.
    pub failures_in_a_row: u32,
    /// Milliseconds until the next start, while none runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_in_ms: Option<u64>,
    /// Whether R26's catch is taken away (no resolver could answer for a while): the
    /// container asks the runtime's nameservers directly until one answers again.
    pub catch_cleared: bool,
}

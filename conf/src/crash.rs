//! Crash points: named places in ADD and DEL where a test can have the plugin killed with
//! SIGKILL, as a runtime's timeout does, to prove that whatever is left is cleaned up by a
//! later DEL or GC. `EMBEDNS_TEST_CRASH_AT=<point>` in the plugin's environment arms one point;
//! without it each call is one cached environment lookup. The plugin passes it on to the
//! resolvers it starts, whose point `resolver:udp` panics the UDP task on a query for
//! `panic.embedns.test` (a task's panic must end the resolver), and whose point
//! `resolver:restart` makes every resolver after the first fail at its start.
//! `<point>@<path>` arms the point only while `<path>` exists, so a test can end a failure.

use std::sync::OnceLock;

/// The environment variable that names the armed point.
pub const CRASH_ENV: &str = "EMBEDNS_TEST_CRASH_AT";

/// Whether `point` is the armed one.
pub fn armed(point: &str) -> bool {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let Some(value) = ARMED.get_or_init(|| std::env::var(CRASH_ENV).ok()) else {
        return false;
    };
    match value.split_once('@') {
        Some((p, path)) => p == point && std::path::Path::new(path).exists(),
        None => value == point,
    }
}

/// Kills the calling process with SIGKILL if `point` is the armed one.
pub fn point(point: &str) {
    if armed(point) {
        tracing::warn!(point, "test crash point reached: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

//! The defaults of what a conf may leave out and a record carries to the resolvers, each
//! decided here once: the conf takes them when a key is missing, a record read without the
//! field (one written by an older version) takes them too, so a resolver never sees 0 for
//! "unset".

/// Docker's TTL for local answers (R11).
pub const TTL: u32 = 600;
/// Per-upstream timeout (R19); Docker uses 4 s.
pub const UPSTREAM_TIMEOUT_MS: u64 = 2000;
/// Forwarded queries in flight per resolver (R20), Docker's value.
pub const MAX_INFLIGHT: usize = 1024;

/// [`UPSTREAM_TIMEOUT_MS`], for serde.
pub fn upstream_timeout_ms() -> u64 {
    UPSTREAM_TIMEOUT_MS
}

/// [`MAX_INFLIGHT`], for serde.
pub fn max_inflight() -> usize {
    MAX_INFLIGHT
}

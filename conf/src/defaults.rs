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

/// Bytes of forwarded answers a resolver's cache holds (R34): about 1,100 answers of one A
/// record each, as counted (`make bench` fills it).
pub const CACHE_SIZE: usize = 256 * 1024;
/// The longest a cached positive answer is served (R34), NodeLocal DNSCache's 30 s.
pub const CACHE_MAX_TTL: u32 = 30;
/// The longest a cached NXDOMAIN or NODATA answer is served (R34), NodeLocal DNSCache's 5 s.
pub const CACHE_MAX_NEGATIVE_TTL: u32 = 5;

/// [`UPSTREAM_TIMEOUT_MS`], for serde.
pub fn upstream_timeout_ms() -> u64 {
    UPSTREAM_TIMEOUT_MS
}

/// [`MAX_INFLIGHT`], for serde.
pub fn max_inflight() -> usize {
    MAX_INFLIGHT
}

//! What a session asks of etcd, as a small trait: the few requests the sync process makes, in
//! its own words (a claim's transaction, writes fenced on the claim, a listing, a watch, a
//! lease). `client.rs` implements it with etcd's gRPC API (endpoints, TLS, users, paging,
//! timeouts, the leader's changes); the unit tests of the session and the claim use an etcd
//! in memory (`fake.rs`).

use anyhow::Result;

// The traits' futures need not be Send: the sync process runs on one thread (a current-thread
// runtime, `main.rs`).

/// A key and its value as etcd holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// One change a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub deleted: bool,
    /// The key with its new value (empty for a delete) and the change's revision.
    pub kv: Kv,
}

/// What one message of a watch holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    /// The store's revision when it was sent.
    pub revision: i64,
    /// The watch ended: why, and the revision compacted away if that is the reason.
    pub cancelled: Option<Cancelled>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    pub reason: String,
    /// Non-zero: the events from the watch's start were compacted away (list again).
    pub compact_revision: i64,
}

/// What a claim's create-if-absent found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The key was absent: it is ours now.
    Created,
    /// Someone holds it: its value and lease.
    Held { value: Vec<u8>, lease: i64 },
    /// It was there when compared and gone when read.
    Gone,
}

/// The condition of every write of a host: its claim still says it (R32).
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub claim: &'a str,
    pub claimant: &'a str,
}

/// The requests of a session, on one endpoint.
#[allow(async_fn_in_trait)]
pub trait Etcd {
    /// Sends a lease's renewals.
    type Renew: Renew;
    /// Their replies.
    type Renewals: Renewals;
    type Watch: Watch;

    /// Whether `lease` is still alive (an error if the member cannot tell).
    async fn lease_alive(&mut self, lease: i64) -> Result<bool>;
    /// A new lease of `ttl` seconds.
    async fn grant(&mut self, ttl: u64) -> Result<i64>;
    /// Starts renewing `lease`.
    async fn keep_alive(&mut self, lease: i64) -> Result<(Self::Renew, Self::Renewals)>;
    async fn revoke(&mut self, lease: i64) -> Result<()>;
    /// Puts `key` = `value` with `lease` if `key` does not exist.
    async fn create(&mut self, key: &str, value: &str, lease: i64) -> Result<Created>;
    /// Puts `key` = `value` with `lease` if its value is `value` now (a claim taken over from
    /// an earlier process of the same claimant); whether it did.
    async fn renew_claim(&mut self, key: &str, value: &str, lease: i64) -> Result<bool>;
    /// Puts every key with `lease` in one transaction, if `fence` holds: the revision of the
    /// transaction, `None` if the fence did not hold.
    async fn put_fenced(
        &mut self,
        fence: Fence<'_>,
        puts: &[(String, Vec<u8>)],
        lease: i64,
    ) -> Result<Option<i64>>;
    /// Deletes `key` if it still has `mod_revision` and `fence` holds.
    async fn delete_fenced(&mut self, fence: Fence<'_>, key: &str, mod_revision: i64)
        -> Result<()>;
    /// Every key under `prefix` at one revision, and that revision.
    async fn list(&mut self, prefix: &str) -> Result<(i64, Vec<Kv>)>;
    /// The changes under `prefix` from revision `from` on.
    async fn watch(&mut self, prefix: &str, from: i64) -> Result<Self::Watch>;
}

/// Sends one renewal of a lease.
#[allow(async_fn_in_trait)]
pub trait Renew {
    async fn renew(&mut self) -> Result<()>;
}

/// The replies to a lease's renewals: the TTL left (0: expired), `None` once they end.
#[allow(async_fn_in_trait)]
pub trait Renewals {
    async fn next(&mut self) -> Result<Option<i64>>;
}

/// A watch's messages, `None` once it ends.
#[allow(async_fn_in_trait)]
pub trait Watch {
    async fn next(&mut self) -> Result<Option<WatchBatch>>;
}

/// Opens a session's [`Etcd`] on one endpoint.
#[allow(async_fn_in_trait)]
pub trait Connect {
    type Etcd: Etcd;

    /// Connects to `endpoint` with `conf`; `claim` is a key the session may read (the real
    /// client follows the member's leader with it).
    async fn connect(
        &self,
        conf: &embedns_conf::multihost::shared::EtcdConf,
        endpoint: &str,
        claim: &str,
    ) -> Result<Self::Etcd>;
}

/// The errors of etcd's a session acts on, each by what follows it (`backoff.rs`, the
/// session); any other error ends a session and is retried after the usual pause.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A message from etcd over what the client takes in one (`client::DECODE_LIMIT`): a
    /// watch's catch-up over many large values. The session ends and the next lists anew, in
    /// pages it can take, instead of resuming into the same message.
    #[error("a message from etcd over {0} bytes")]
    TooLarge(usize),
    /// The member has no leader (an election, or a member cut off from the majority): it
    /// refuses requests under require-leader, or a request that needs the leader had no
    /// answer in time. The client makes this of etcd's "no leader" status, the one place that
    /// reads etcd's text.
    #[error("{0}")]
    NoLeader(String),
    /// The member's leader changed while a request waited: the member forwarded it to the
    /// leader that died, which never answers it. The member follows a new leader: the next
    /// session may begin at once, on the same member.
    #[error("a new leader was elected (raft term {0}) while a request waited")]
    LeaderChanged(u64),
}

impl EtcdError {
    /// The first of these in `e`'s chain, if any.
    pub fn of(e: &anyhow::Error) -> Option<&EtcdError> {
        e.chain().find_map(|c| c.downcast_ref::<EtcdError>())
    }
}

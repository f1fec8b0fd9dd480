//! The multi-host format (R27-R33), in one place: etcd's key layout and its one grammar
//! (`keys.rs`), the value another host reads (`peer.rs`), and a shared network's config and
//! its sync process's status (`shared.rs`). The keys an attachment has in the store are
//! `attachment.rs`'s, the other hosts' records there `store/remote.rs`'s.

pub mod keys;
pub mod peer;
pub mod shared;

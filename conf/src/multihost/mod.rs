//! The multi-host format (R27-R33), in one place: etcd's key layout and the typed keys
//! (`keys.rs`), the value another host reads (`peer.rs`), and a shared network's config and
//! its sync process's status (`shared.rs`). The other hosts' records in the store are
//! `store/remote.rs`'s.

pub mod keys;
pub mod peer;
pub mod shared;

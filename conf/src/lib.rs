//! What the `embedns` plugin, `embedns-resolverd` and `embedns-syncd` share: the CNI types and
//! the plugin's network configuration, name validation, resolv.conf handling, the on-disk
//! record store through which the plugin tells every resolver who is on which network, and
//! what a network shared across hosts needs (`shared`: the etcd config, the sync status;
//! `keys`: its keys in etcd; `peer`: the value other hosts read); the protocols between the
//! binaries (`control`, `ready`, `report`: what `embedns status --json` prints).
//!
//! Everything here is pure logic or plain file I/O, but `capabilities`, which both daemons
//! drop alike; namespaces, iptables and processes live in the binaries.

pub mod attachment;
pub mod capabilities;
pub mod catch;
pub mod cgroup;
pub mod cni;
pub mod commands;
pub mod conflist;
pub mod crash;
pub mod defaults;
pub mod error;
pub mod fsutil;
pub mod index;
pub mod logfile;
pub mod multihost;
pub mod names;
pub mod netconf;
pub mod paths;
pub mod protocol;
pub mod record;
pub mod resolv;
pub mod sandbox;
pub mod store;
pub mod supervision;
pub mod user;

pub use error::ConfError;

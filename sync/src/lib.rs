//! `embedns-syncd`: one network's records shared across hosts through etcd (`conf::shared`).
//! One sync process per host and network (a supervisor and the worker it restarts, `main.rs`),
//! started by the plugin's ADD (or CHECK, GC) when the network's config names an etcd cluster,
//! elected by a lock on the network's directory, gone when the network's last local container
//! leaves. It publishes this host's records and copies the
//! other hosts' into the local store and index, which the resolvers read as always: no query
//! waits for etcd.

mod backoff;
mod claim;
pub mod client;
pub mod doors;
pub mod etcd;
#[cfg(test)]
mod fake;
pub mod local;
pub mod mirror;
pub mod run;

//! embedns-resolverd: the per-container resolver behind `127.0.0.11:53`.
//!
//! `peers` is what the naming rules need of one network (the addresses of a name, the name
//! of an address, the asker's own records); `index` is the production source, the network's
//! shared, memory-mapped index read at query time; `lookup` is Docker's naming rules over
//! those; `answer` turns a query into a local reply or a miss (`fast` answers the common
//! A/AAAA query from its bytes, the same reply at a fraction of the cost; `wire` is what both
//! and the forwarder share about DNS on the wire); `forward` takes the misses upstream;
//! `handler` decides between the two for each message; `server` owns the sockets and only
//! receives and sends; `control` is the plugin's channel (`reload`, `status`); `hostns`
//! makes sockets in the host's netns (R18); `log` rotates the log by size and rate-limits
//! what a query can log; `liveness` ends a resolver whose container is gone; `supervisor` is
//! the process the plugin starts, which forks each resolver and restarts one that dies.

pub mod answer;
pub mod cache;
pub mod channel;
pub mod coalesce;
pub mod confine;
pub mod control;
pub mod failover;
pub mod fast;
pub mod forward;
pub mod gone;
pub mod handler;
pub mod hostns;
pub mod iptables;
pub mod liveness;
pub mod log;
pub mod lookup;
pub mod network_index;
pub mod peers;
pub mod server;
pub mod state;
pub mod supervisor;
pub mod title;
pub mod wire;

//! embedns-resolverd: the per-container resolver behind `127.0.0.11:53`.
//!
//! `index` holds the records of the networks the container is on; `lookup` is Docker's
//! naming rules over it, pure; `answer` turns a query into a local reply or a miss; `forward`
//! takes the misses upstream; `server` owns the sockets; `watch` keeps the index live;
//! `control` is the plugin's channel; `hostns` makes sockets in the host's netns (R18).

pub mod answer;
pub mod control;
pub mod forward;
pub mod hostns;
pub mod index;
pub mod lookup;
pub mod server;
pub mod state;
pub mod sys;
pub mod watch;

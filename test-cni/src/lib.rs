//! The embedns test harness: each test builds a [`World`], a host netns of its own in which
//! cnitool (built from Debian's libcni source) runs the reference `bridge` + `host-local`
//! plugins and embedns, container netns attached to it, and fake upstream DNS servers on the
//! host netns' loopback. Nothing touches the machine's own network or nameserver. A World
//! deletes everything it made when dropped, also when the test panics.

pub mod add;
pub mod bins;
pub mod calls;
pub mod certs;
pub mod cri;
pub mod dig;
pub mod host;
pub mod image;
pub mod multihost;
pub mod parse;
pub mod podman;
pub mod rootless;
pub mod runner;
pub mod upstream;
pub mod wait;
pub mod world;

pub use add::Add;
pub use bins::example_entry;
pub use dig::Dig;
pub use host::{
    command_in, context_switches, kill_resolvers, must, pgrep, require_root, resolver_pids,
    sync_pids, unique,
};
pub use parse::{ip_of, line_starting, nslookup_addresses};
pub use upstream::{FakeUpstream, Mode};
pub use wait::wait_until;
pub use world::{Container, Network, World};

//! The system call the resolver makes on itself: entering the container's netns (its
//! listening sockets come from the plugin, already bound there).

use std::fs::File;
use std::os::fd::AsFd;

use anyhow::Context;
use nix::sched::{setns, CloneFlags};

/// Moves the calling thread (the main thread, before the runtime starts) into `path`.
pub fn enter_netns(path: &str) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("opening netns {path}"))?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {path}"))
}

//! Entering a network namespace and coming back, for the current thread.

use std::fs::File;
use std::os::fd::AsFd;

use anyhow::Context;
use nix::sched::{setns, CloneFlags};

use crate::error::{PluginError, NETNS_FAILED};

/// While alive, the thread is in another netns; dropped, it is back where it was.
pub struct InNetns {
    original: File,
}

/// Moves the current thread into the netns at `path`.
pub fn enter(path: &str) -> anyhow::Result<InNetns> {
    let original = File::open("/proc/thread-self/ns/net").context("opening the current netns")?;
    let target = File::open(path)
        .map_err(|e| PluginError::new(NETNS_FAILED, format!("cannot open netns {path}: {e}")))?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| PluginError::new(NETNS_FAILED, format!("cannot enter netns {path}: {e}")))?;
    Ok(InNetns { original })
}

impl Drop for InNetns {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Staying in the container's netns would make every later step wrong.
            tracing::error!("cannot return to the original netns: {e}");
            std::process::abort();
        }
    }
}

/// Whether a netns path still names a namespace (DEL may come after it was deleted).
pub fn exists(path: &str) -> bool {
    !path.is_empty() && std::path::Path::new(path).exists()
}

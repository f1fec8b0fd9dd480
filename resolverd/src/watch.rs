//! Live updates (R8, R22): inotify events on the watched network directories and host
//! resolv.conf directories, applied one file at a time.

use std::sync::Arc;

use futures_util::StreamExt;
use inotify::{EventStream, Inotify};

use crate::state::Resolver;

/// One inotify instance per resolver: the kernel's default of 128 instances per user is less
/// than a host's containers, so when it is reached the limit is raised (we run as root, one
/// instance per container is what embedns needs) and logged.
pub fn init(st: &Resolver) -> std::io::Result<EventStream<Vec<u8>>> {
    let inotify = match Inotify::init() {
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
            raise_limit(INSTANCES)?;
            Inotify::init()?
        }
        other => other?,
    };
    let stream = inotify.into_event_stream(vec![0u8; 16 * 1024])?;
    st.set_watches(stream.watches());
    Ok(stream)
}

pub const INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";
pub const WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// Doubles an inotify limit (to at least 1024).
pub fn raise_limit(path: &str) -> std::io::Result<()> {
    let current: u64 = std::fs::read_to_string(path)?.trim().parse().unwrap_or(128);
    let new = (current * 2).max(1024);
    std::fs::write(path, new.to_string())?;
    tracing::warn!("{path} was {current}, raised to {new} (one inotify instance per container)");
    Ok(())
}

pub async fn run(mut events: EventStream<Vec<u8>>, st: Arc<Resolver>) {
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => st.apply_event(&ev.wd, ev.mask, ev.name.as_deref()),
            Err(e) => tracing::error!("inotify: {e}"),
        }
    }
}

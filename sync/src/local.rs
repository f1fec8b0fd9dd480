//! This host's side: which of the network's records changed, told by inotify on the network's
//! directory (the plugin writes a record by renaming a temporary file into place and removes
//! it by unlinking: `IN_MOVED_TO` and `IN_DELETE`), so the plugin does nothing for the sync
//! process but write its records as always.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use anyhow::Context;
use embedns_conf::paths::ETCD_CONF_FILE;
use embedns_conf::store::record_key;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// What changed in the network's directory since the last call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The keys of the record files written or removed.
    pub keys: BTreeSet<String>,
    /// Events were lost (the kernel's queue overflowed): read every record again.
    pub rescan: bool,
    /// The directory itself is gone (the network's last local container left).
    pub gone: bool,
    /// The etcd config the plugin leaves there (`.etcd.json`) was written.
    pub config: bool,
}

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// An inotify watch on one network's directory.
pub struct LocalWatch(AsyncFd<Fd>);

impl LocalWatch {
    /// Watches `dir` (it must exist).
    pub fn new(dir: &Path) -> anyhow::Result<LocalWatch> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .context("inotify_init")?;
        ino.add_watch(
            dir,
            AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_ONLYDIR,
        )
        .with_context(|| format!("watching {}", dir.display()))?;
        // SAFETY: `Fd` owns the inotify descriptor for as long as the AsyncFd lives, and
        // `as_raw_fd` always returns that one.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(ino), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("registering inotify")?;
        Ok(LocalWatch(fd))
    }

    /// Waits for at least one change, then returns the changes read at once.
    pub async fn changed(&mut self) -> anyhow::Result<Changed> {
        let mut out = Changed::default();
        loop {
            let mut ready = self.0.readable().await?;
            // Events are read and returned in one poll, so a caller's select! that drops
            // this future never loses any.
            match ready.get_inner().0.read_events() {
                Ok(events) => {
                    for e in events {
                        if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            out.rescan = true;
                        }
                        if e.mask
                            .intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_IGNORED)
                        {
                            out.gone = true;
                        }
                        let name = e.name.as_ref().map(|n| n.to_string_lossy());
                        if name.as_deref() == Some(ETCD_CONF_FILE) {
                            out.config = true;
                        }
                        if let Some(key) = name.as_deref().and_then(record_key) {
                            out.keys.insert(key.to_string());
                        }
                    }
                    if out != Changed::default() {
                        return Ok(out);
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => return Err(e).context("reading inotify events"),
            }
        }
    }
}

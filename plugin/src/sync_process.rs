//! A shared network's sync process (`embedns-syncd`, next to the resolver's binary): ADD, CHECK
//! and GC start it when the network's config names an etcd cluster and it is not running.
//! The plugin itself never talks to etcd: ADD only writes its record, which the sync process
//! sees through inotify and publishes, so an unreachable etcd never fails an ADD.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use embedns_conf::commands::SyncCommand;
use embedns_conf::fsutil::{try_lock_file, write_atomic};
use embedns_conf::multihost::shared::EtcdConf;
use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::ready::Ready;

use crate::child::{self, ReadyPipe, Spawned};

/// How long the ADD that starts the sync process waits for its first listing of etcd (so the
/// first container on this host sees the other hosts' names at once). Past it, or when no
/// endpoint answers, ADD goes on: names on this host never depend on etcd.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The sync binary: `embedns-syncd` beside the resolver's.
pub fn binary(resolver: &Path) -> PathBuf {
    resolver.with_file_name("embedns-syncd")
}

/// CHECK and GC: a shared network with records on this host whose sync process is not
/// running (killed, or ended by a crash) gets one again.
pub fn keep_running(conf: &embedns_conf::netconf::NetConf) -> anyhow::Result<()> {
    let Some(etcd) = &conf.etcd else {
        return Ok(());
    };
    let paths = StatePaths::new(&conf.data_dir);
    if embedns_conf::store::NetworkStore::new(&paths, &conf.name).is_empty()? {
        return Ok(());
    }
    let resolver = crate::resolver::binary(conf.resolver_path.as_deref())?;
    if let Some(starting) = ensure(&paths, &conf.name, etcd, &binary(&resolver))? {
        tracing::warn!(network = %conf.name, "the network's sync process was not running; started it again");
        starting.wait();
    }
    Ok(())
}

/// A sync process just started: its ready pipe.
pub struct StartingSync {
    ready: ReadyPipe,
    pid: u32,
}

/// Writes the config the network's sync process runs with and starts the process if none
/// runs. Call with a record of this host on the network (the process ends when there is
/// none).
pub fn ensure(
    paths: &StatePaths,
    network: &str,
    etcd: &EtcdConf,
    binary: &Path,
) -> anyhow::Result<Option<StartingSync>> {
    let conf = paths.etcd_conf(network);
    let body = serde_json::to_vec_pretty(etcd).expect("an etcd config serializes");
    if std::fs::read(&conf).ok().as_deref() != Some(&body[..]) {
        // A running process sees the file change and starts over with the new config.
        write_atomic(&conf, &body)?;
    }
    let Some(free) = try_lock_file(&paths.sync_lock(network), true)? else {
        return Ok(None); // running
    };
    drop(free);
    let args = SyncCommand {
        data_dir: paths.root(),
        network,
    };
    let mut cmd = Command::new(binary);
    cmd.args(args.args())
        .current_dir("/")
        .env_remove("CNI_COMMAND");
    let Spawned { child, ready } = child::detached(&mut cmd, &[], &child::Placement::default())
        .with_context(|| format!("starting the sync process {}", binary.display()))?;
    Ok(Some(StartingSync {
        ready,
        pid: child.id(),
    }))
}

impl StartingSync {
    /// Waits (at most [`READY_TIMEOUT`]) for the process's first word: in step with etcd, or
    /// not reachable (logged; ADD goes on either way).
    pub fn wait(self) {
        match self.ready.read(Instant::now() + READY_TIMEOUT) {
            Ok(said @ (Ready::InStep | Ready::AlreadyRunning)) => {
                tracing::debug!(pid = self.pid, %said, "sync process")
            }
            Ok(said) => tracing::warn!(pid = self.pid, "the sync process: {said}"),
            Err(e) => tracing::warn!(
                pid = self.pid,
                "the sync process is not in step with etcd ({e:#}); going on"
            ),
        }
    }
}

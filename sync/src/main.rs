//! `embedns-syncd --data-dir DIR --network NAME [--ready-fd FD]`: started by the embedns plugin
//! (ADD, CHECK and GC start it when it is not running), never by hand. It takes the network's
//! sync lock (another running: exits at once), reads the etcd config ADD left in the network's
//! directory and runs until the network's last local container leaves. SIGTERM and SIGINT end
//! it without withdrawing anything: this host's records then expire with the lease unless a
//! new process takes over first.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use embedns_conf::fsutil::{create_private_dir, try_lock_file};
use embedns_conf::paths::StatePaths;
use embedns_conf::shared::EtcdConf;
use embedns_sync::local::LocalWatch;
use embedns_sync::run::Sync;
use tokio::signal::unix::{signal, SignalKind};

struct Args {
    data_dir: PathBuf,
    network: String,
    ready_fd: Option<i32>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut data_dir, mut network, mut ready_fd) = (None, None, None);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(value)),
            "--network" => network = Some(value),
            "--ready-fd" => ready_fd = Some(value.parse().context("--ready-fd")?),
            _ => anyhow::bail!(
                "unknown flag {flag} (this program is started by the embedns CNI plugin)"
            ),
        }
    }
    Ok(Args {
        data_dir: data_dir.context("--data-dir is required")?,
        network: network.context("--network is required")?,
        ready_fd,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("embedns-syncd: {e:#}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: the plugin passes the pipe's write end as this fd; nothing else owns it.
    let mut ready = args.ready_fd.map(|fd| unsafe { File::from_raw_fd(fd) });
    match run(&args, &mut ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            if let Some(mut pipe) = ready {
                let _ = writeln!(pipe, "ERROR {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Every capability dropped (bounding set first, while CAP_SETPCAP is still there) and
/// no_new_privs set, before any thread starts (threads inherit both). The process stays uid 0,
/// the owner of the store it writes, so it needs none: a process taken over through a value
/// from etcd cannot override file permissions, load modules, trace or signal others' processes
/// or change the network.
fn confine() -> anyhow::Result<()> {
    use caps::CapSet;
    for set in [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).with_context(|| format!("dropping the {set:?} capabilities"))?;
    }
    nix::sys::prctl::set_no_new_privs().context("PR_SET_NO_NEW_PRIVS")
}

fn run(args: &Args, ready: &mut Option<File>) -> anyhow::Result<()> {
    let paths = StatePaths::new(&args.data_dir);
    let log = paths.sync_log(&args.network);
    if let Some(dir) = log.parent() {
        create_private_dir(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EMBEDNS_SYNC_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Some(_held) = try_lock_file(&paths.sync_lock(&args.network), true)? else {
        if let Some(mut pipe) = ready.take() {
            let _ = writeln!(pipe, "RUNNING");
        }
        return Ok(());
    };
    confine()?;
    let conf_path = paths.etcd_conf(&args.network);
    let conf: EtcdConf = serde_json::from_slice(
        &std::fs::read(&conf_path).with_context(|| format!("reading {}", conf_path.display()))?,
    )
    .with_context(|| format!("parsing {}", conf_path.display()))?;
    let conf = conf.settle()?;
    tracing::info!(network = %args.network, host = conf.host(), endpoints = ?conf.endpoints, "started");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let local = LocalWatch::new(&paths.network(&args.network))?;
        let sync = Sync::new(&paths, &args.network, conf, ready.take());
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            end = sync.run(local) => tracing::info!("done: {end:?}"),
            _ = term.recv() => tracing::info!("SIGTERM: leaving this host's records to the lease"),
            _ = int.recv() => tracing::info!("SIGINT: leaving this host's records to the lease"),
        }
        Ok(())
    })
}

//! `embedns-syncd --data-dir DIR --network NAME [--ready-fd FD]`: started by the embedns plugin
//! (ADD, CHECK and GC start it when it is not running), never by hand. It takes the network's
//! sync lock (another running: exits at once), reads the etcd config ADD left in the network's
//! directory, forks the worker it supervises (restarted if it dies abnormally) and runs until
//! the network's last local container leaves. SIGTERM and SIGINT end
//! it without withdrawing anything: this host's records then expire with the lease unless a
//! new process takes over first.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use embedns_conf::fsutil::{create_private_dir, try_lock_file};
use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::confinement::{outcome, SyncConfinement};
use embedns_conf::protocol::ready::Ready;
use embedns_conf::store::NetworkStore;
use embedns_sync::local::LocalWatch;
use embedns_sync::run::Worker;
use tokio::signal::unix::{signal, SignalKind};

/// One shared network's sync process, started by the embedns CNI plugin (ADD, CHECK, GC).
#[derive(clap::Parser)]
#[command(name = "embedns-syncd", version)]
struct Args {
    /// The plugin's state directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The network it shares.
    #[arg(long)]
    network: String,
    /// Where it says how its start went (`embedns_conf::protocol::ready`).
    #[arg(long)]
    ready_fd: Option<i32>,
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--confinement-check") {
        return confinement_check();
    }
    // A bad command line: clap says why and exits 2.
    let args = <Args as clap::Parser>::parse();
    // SAFETY: the plugin passes the pipe's write end as this fd; nothing else owns it.
    let mut ready = args.ready_fd.map(|fd| unsafe { File::from_raw_fd(fd) });
    match run(&args, &mut ready) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            if let Some(mut pipe) = ready {
                let _ = Ready::Failed(format!("{e:#}")).write_to(&mut pipe);
            }
            ExitCode::FAILURE
        }
    }
}

/// Every capability dropped (bounding set first, while CAP_SETPCAP is still there) and
/// no_new_privs set, before any thread starts (threads inherit both). The process stays uid 0,
/// the owner of the store it writes, so it needs none: a process taken over through a value
/// from etcd cannot override file permissions, load modules, trace processes or change the
/// network. What uid 0 may still do without a capability (signal other uid-0 processes,
/// connect to root's UNIX sockets, exec) the worker's seccomp filter refuses (`doors`).
fn confine() -> anyhow::Result<()> {
    embedns_conf::capabilities::drop_bounding_and_ambient()?;
    Ok(embedns_conf::capabilities::drop_the_rest()?)
}

/// Landlock on the worker (file system writes since kernel 5.13, TCP since 6.7), which is
/// uid 0 and owner permissions would let write anywhere: it may write only beneath its
/// network's directory and the sync log directory (and remove the network's directory), and
/// connect TCP only to `ports`, its endpoints'; it binds no TCP port. Reads are not restricted
/// (its config, TLS files, machine id). Returns whether the kernel enforces it fully.
fn restrict(paths: &StatePaths, network: &str, ports: &[u16]) -> anyhow::Result<bool> {
    use landlock::{
        Access, AccessFs, AccessNet, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, ABI,
    };
    let abi = ABI::V5;
    let write = AccessFs::from_write(abi);
    let beneath = |dir: PathBuf, access| -> anyhow::Result<PathBeneath<PathFd>> {
        let fd = PathFd::new(&dir).with_context(|| format!("opening {}", dir.display()))?;
        Ok(PathBeneath::new(fd, access))
    };
    let mut ruleset = Ruleset::default()
        .handle_access(write)?
        .handle_access(AccessNet::from_all(abi))?
        .create()?
        .add_rule(beneath(paths.network(network), write)?)?
        .add_rule(beneath(
            paths
                .sync_log(network)
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
            write,
        )?)?
        .add_rule(beneath(paths.networks(), AccessFs::RemoveDir.into())?)?;
    for port in ports {
        ruleset = ruleset.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
    }
    let status = ruleset.restrict_self()?;
    Ok(status.ruleset == RulesetStatus::FullyEnforced)
}

/// `embedns-syncd --confinement-check DATA_DIR NETWORK PATH SOCKET PID`: confines and
/// restricts itself as a worker of NETWORK does (one endpoint, port 2379), then tries what a
/// worker taken over through a value from etcd would: append to PATH (a root file), create a
/// file in /tmp, connect to 127.0.0.1:2, connect to SOCKET (a root UNIX socket), signal PID
/// (another root process; signal 0, which only checks the permission), run a program; and
/// what it must still do: create a file in its network's directory, open a TCP socket.
/// Prints each outcome (`ok` or the error) as one JSON object.
fn confinement_check() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [data_dir, network, path, socket, pid] = &args[..] else {
        eprintln!("usage: embedns-syncd --confinement-check DATA_DIR NETWORK PATH SOCKET PID");
        return ExitCode::from(2);
    };
    let Ok(pid) = pid.parse::<i32>() else {
        eprintln!("embedns-syncd: PID {pid:?} is not a number");
        return ExitCode::from(2);
    };
    let paths = StatePaths::new(std::path::Path::new(data_dir));
    let restricted = confine()
        .and_then(|()| restrict(&paths, network, &[2379]))
        .and_then(|_| embedns_sync::doors::shut());
    if let Err(e) = restricted {
        eprintln!("embedns-syncd: {e:#}");
        return ExitCode::FAILURE;
    }
    let create = |p: PathBuf| outcome(std::fs::write(p, b"x"));
    let report = SyncConfinement {
        write: outcome(
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map(drop),
        ),
        create_tmp: create(
            std::env::temp_dir().join(format!("embedns-sync-check-{}", std::process::id())),
        ),
        create_own: create(
            paths
                .network(network)
                .join(format!(".check-{}", std::process::id())),
        ),
        connect_tcp: outcome(std::net::TcpStream::connect("127.0.0.1:2").map(drop)),
        tcp_socket: outcome(
            std::net::TcpListener::bind("127.0.0.1:0")
                .map(drop)
                .or_else(|e| {
                    // Landlock refuses the bind, not the socket: only EPERM is the filter's.
                    if e.raw_os_error() == Some(libc::EACCES) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }),
        ),
        connect_unix: outcome(std::os::unix::net::UnixStream::connect(socket).map(drop)),
        signal: outcome(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                .map_err(std::io::Error::from),
        ),
        exec: outcome(embedns_conf::capabilities::try_exec()),
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("a report serializes")
    );
    ExitCode::SUCCESS
}

/// Forks the worker and returns in it; the first process stays as its supervisor, which
/// starts another worker (after [`RESTART_PAUSE`]) when one dies of a signal or fails (the
/// OOM killer, a panic) while the network still has local records, and exits with the worker
/// that ends cleanly (the last local container left, SIGTERM). A worker gets SIGTERM when its
/// supervisor dies. Both share the sync lock (one open file, inherited), so no other sync
/// process starts meanwhile; both show as `embedns-syncd` with the same arguments.
fn supervise(store: &NetworkStore, ready: &mut Option<File>) -> anyhow::Result<()> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    loop {
        // SAFETY: no other thread exists yet (the runtime starts in the worker), so the
        // child may do anything after the fork.
        match unsafe { fork() }.context("forking the sync worker")? {
            ForkResult::Child => {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .context("PR_SET_PDEATHSIG")?;
                return Ok(());
            }
            ForkResult::Parent { child } => {
                // The worker answers the plugin's ready pipe; this copy is closed, so the
                // plugin sees the pipe end if the worker dies first.
                ready.take();
                let ended = loop {
                    match waitpid(child, None) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        other => break other,
                    }
                };
                if matches!(ended, Ok(WaitStatus::Exited(_, 0))) {
                    std::process::exit(0);
                }
                if store.is_empty().unwrap_or(true) {
                    tracing::info!("the worker ended ({ended:?}) and no local container is left");
                    std::process::exit(0);
                }
                tracing::warn!("the sync worker {child} ended ({ended:?}); starting another");
                std::thread::sleep(RESTART_PAUSE); // a pause between restarts, not a wait for anything
            }
        }
    }
}

/// The sync process's log is rotated past this: at most 2 × 1 MiB, as a resolver's.
const LOG_CAP: u64 = 1 << 20;

/// Between a worker's death and the next one's start.
const RESTART_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The sync process's work; its exit code ([`End::exit_code`](embedns_sync::run::End)).
fn run(args: &Args, ready: &mut Option<File>) -> anyhow::Result<u8> {
    let paths = StatePaths::new(&args.data_dir);
    let log = paths.sync_log(&args.network);
    if let Some(dir) = log.parent() {
        create_private_dir(dir)?;
    }
    // Rotated to `<network>.log.1` past LOG_CAP: a writer of garbage values in etcd (each
    // skipped with a line) cannot fill the state dir's file system.
    let file = embedns_conf::logfile::RotatingLog::open(log.clone(), LOG_CAP)
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
            let _ = Ready::AlreadyRunning.write_to(&mut pipe);
        }
        return Ok(0);
    };
    confine()?;
    supervise(&NetworkStore::new(&paths, &args.network), ready)?;
    // Read by each worker: one started after a change of config runs with the new one.
    let conf = embedns_sync::client::read_conf(&paths.etcd_conf(&args.network))?;
    let ports = conf.endpoint_ports();
    match restrict(&paths, &args.network, &ports) {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!("this kernel does not fully enforce Landlock (writes 5.13+, TCP 6.7+)")
        }
        Err(e) => tracing::warn!("restricting writes and TCP connects: {e:#}"),
    }
    embedns_sync::doors::shut()?;
    tracing::info!(network = %args.network, host = conf.host(), endpoints = ?conf.endpoints, "started");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let local = LocalWatch::new(&paths.network(&args.network))?;
        let worker = Worker::new(&paths, &args.network, conf, ready.take()).with_tcp_ports(ports);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let code = tokio::select! {
            end = worker.run(&embedns_sync::client::Grpc, local) => {
                tracing::info!("done: {end:?}");
                end.exit_code()
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: leaving this host's records to the lease");
                0
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: leaving this host's records to the lease");
                0
            }
        };
        Ok(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_the_plugin_builds_is_the_one_parsed_here() {
        let cmd = embedns_conf::commands::SyncCommand {
            data_dir: std::path::Path::new("/run/embedns"),
            network: "n",
        };
        let argv = std::iter::once("embedns-syncd".into()).chain(cmd.args());
        let args = <Args as clap::Parser>::try_parse_from(argv).unwrap();
        assert_eq!(args.data_dir, PathBuf::from("/run/embedns"));
        assert_eq!(args.network, "n");
        assert_eq!(args.ready_fd, Some(embedns_conf::commands::READY_FD));
    }
}

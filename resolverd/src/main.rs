//! `embedns-resolverd --data-dir DIR --container-id ID --ready-fd FD`: started by the embedns
//! plugin, never by hand, with `--udp-fd 4 --tcp-fd 5`: the sockets the plugin bound on
//! 127.0.0.11 (kernel-chosen ports) in the container's netns. It makes its host-netns socket
//! maker, enters the container's netns, maps the indexes of the container's networks, and
//! writes `READY <udp> <tcp>` (or `ERROR <why>`: `embedns_conf::protocol::ready`) on the ready FD.

use std::fs::{File, OpenOptions};
use std::os::fd::FromRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::confinement::{outcome, ResolverConfinement};
use embedns_conf::protocol::ready::Ready;
use embedns_conf::sandbox;
use embedns_conf::user::{ResolverUser, DEFAULT_RESOLVER_USER};
use embedns_resolverd::forward::Forwarder;
use embedns_resolverd::handler::Handler;
use embedns_resolverd::hostns::HostSockets;
use embedns_resolverd::liveness::{self, Served};
use embedns_resolverd::log::RotatingLog;
use embedns_resolverd::state::Resolver;
use embedns_resolverd::{confine, control, server, supervisor};
use tokio::signal::unix::{signal, SignalKind};

/// The log is rotated to `resolver.log.1` when it grows past this (so at most 2 × 1 MiB),
/// while the resolver runs.
const LOG_CAP: u64 = 1 << 20;

/// The resolver of one container, started (and stopped) by the embedns CNI plugin.
#[derive(clap::Parser)]
#[command(name = "embedns-resolverd", version)]
struct Args {
    /// The plugin's state directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The container whose sandbox it serves.
    #[arg(long)]
    container_id: String,
    /// Where it says `READY <udp> <tcp>` (or why not), once it serves.
    #[arg(long, default_value_t = -1)]
    ready_fd: i32,
    /// Its UDP and TCP sockets, bound on 127.0.0.11 in the container's netns.
    #[arg(long)]
    udp_fd: i32,
    #[arg(long)]
    tcp_fd: i32,
    /// Its UDP and TCP sockets on `[::1]`, for the IPv6 nameservers caught (R26), if any.
    #[arg(long)]
    udp6_fd: Option<i32>,
    #[arg(long)]
    tcp6_fd: Option<i32>,
    /// The user it runs as (`uid:gid`).
    #[arg(long, value_parser = ResolverUser::parse_from_plugin, default_value_t = DEFAULT_RESOLVER_USER)]
    user: ResolverUser,
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--confinement-check") {
        return confinement_check();
    }
    // A bad command line: clap says why and exits 2.
    let args = <Args as clap::Parser>::parse();
    // SAFETY: the plugin passes the write end of a pipe as this fd; we own it from here.
    let plugin_ready = (args.ready_fd >= 0).then(|| unsafe { File::from_raw_fd(args.ready_fd) });
    let setup = supervisor::Setup {
        paths: StatePaths::new(&args.data_dir),
        container_id: args.container_id.clone(),
        plugin_ready,
        udp_fd: args.udp_fd,
        tcp_fd: args.tcp_fd,
    };
    // This process supervises; each resolver is a child it forks (and forks again when one
    // dies), which runs `serve`.
    supervisor::run(setup, |ready, previous| serve(&args, ready, previous))
}

/// One resolver, in a child of the supervisor: logs, serves until stopped or its container is
/// gone, and says how its start went on `ready`.
fn serve(args: &Args, ready: File, previous: Option<supervisor::Previous>) -> ExitCode {
    let paths = StatePaths::new(&args.data_dir);
    init_logging(&paths, &args.container_id, args.user);
    if let Some(p) = &previous {
        tracing::warn!(
            restarts = p.restarts,
            "restarting: the resolver before this one {}",
            p.last_exit
        );
    }
    let mut ready = Some(ready);
    if previous.is_some() && embedns_conf::crash::armed("resolver:restart") {
        let _ = Ready::Failed("test crash point resolver:restart".into())
            .write_to(ready.as_mut().unwrap());
        return ExitCode::FAILURE;
    }
    match run(args, paths, &mut ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            if let Some(r) = ready.as_mut() {
                let _ = Ready::Failed(format!("{e:#}")).write_to(r);
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, paths: StatePaths, ready: &mut Option<File>) -> anyhow::Result<()> {
    let sb = sandbox::load(&paths, &args.container_id)?
        .with_context(|| format!("no sandbox for {}", args.container_id))?;
    let (needs_host, tcp_ports) = upstream_needs(args, &paths, &sb);
    // Host-netns sockets must be made by a thread that never leaves the host netns (R18).
    let host = if needs_host {
        HostSockets::start(args.user, tcp_ports.clone())
            .context("starting the host-netns thread")?
    } else {
        HostSockets::none()
    };
    confine::enter_netns(&sb.netns)?;
    let served = Served {
        netns_inode: Served::current_netns_inode().context("reading our netns")?,
        paths: paths.clone(),
        container_id: args.container_id.clone(),
        netns: sb.netns.clone(),
        supervisor: std::os::unix::process::parent_id(),
    };
    let sockets = Sockets::adopt(args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let st = Arc::new(Resolver::new(&args.container_id, paths));
        let _ = st.ports.set(sockets.ports);
        let _ = st.host_netns.set(host.present());
        let nets = st.reload()?;
        let control = confine_to_serve(args, &st, &tcp_ports)?;
        let fwd = Arc::new(Forwarder::new(st.clone(), host));
        let handler = Handler::new(st.clone(), fwd);
        let ports = sockets.ports;
        let mut tasks = sockets.serve(handler)?;
        let signals = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        let st_control = st.clone();
        tasks.spawn(async move { control::serve(control, st_control).await; "control" });
        tracing::info!(udp = ports.0, tcp = ports.1, networks = ?nets, netns = %sb.netns, "serving 127.0.0.11");
        if let Some(mut r) = ready.take() {
            Ready::Serving {
                udp: ports.0,
                tcp: ports.1,
            }
            .write_to(&mut r)
            .context("signalling readiness")?;
        }
        until_stopped(signals, served, tasks).await
    })
}

/// What the container's networks forward to: whether one takes the host's upstreams, and
/// the upstream ports, the only ones TCP may connect to.
fn upstream_needs(args: &Args, paths: &StatePaths, sb: &sandbox::Sandbox) -> (bool, Vec<u16>) {
    let own: Vec<embedns_conf::record::Record> = (sb.attachments.iter())
        .filter_map(|a| {
            let net = embedns_conf::store::NetworkStore::new(paths, &a.network);
            net.get(&args.container_id, &a.ifname).ok().flatten()
        })
        .collect();
    let needs_host = own
        .iter()
        .any(|r| r.resolver.upstreams.host_resolv_conf.is_some());
    let mut tcp_ports = vec![53];
    for addr in own.iter().flat_map(|r| &r.resolver.upstreams.explicit) {
        if !tcp_ports.contains(&addr.port()) {
            tcp_ports.push(addr.port());
        }
    }
    (needs_host, tcp_ports)
}

/// The listening sockets the plugin bound in the container's netns and passed as fds.
struct Sockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    /// On [::1], for the IPv6 nameservers caught (R26), when the plugin could bind them.
    v6: Option<(std::net::UdpSocket, std::net::TcpListener)>,
    /// The UDP and TCP ports on 127.0.0.11.
    ports: (u16, u16),
}

impl Sockets {
    /// Takes the fds of the command line, non-blocking.
    fn adopt(args: &Args) -> anyhow::Result<Sockets> {
        // SAFETY: the plugin passes sockets it bound on 127.0.0.11 in the container's netns
        // as these fds; we own them from here.
        let (udp, tcp) = unsafe {
            (
                std::net::UdpSocket::from_raw_fd(args.udp_fd),
                std::net::TcpListener::from_raw_fd(args.tcp_fd),
            )
        };
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let ports = (udp.local_addr()?.port(), tcp.local_addr()?.port());
        // SAFETY: as above, the sockets the plugin bound on [::1], when it could.
        let v6 = match (args.udp6_fd, args.tcp6_fd) {
            (Some(u), Some(t)) => unsafe {
                let (u, t) = (
                    std::net::UdpSocket::from_raw_fd(u),
                    std::net::TcpListener::from_raw_fd(t),
                );
                u.set_nonblocking(true)?;
                t.set_nonblocking(true)?;
                Some((u, t))
            },
            _ => None,
        };
        Ok(Sockets {
            udp,
            tcp,
            v6,
            ports,
        })
    }

    /// A task per socket, each serving for as long as the resolver runs: one that ends (a
    /// panic) ends the resolver, so CHECK and `embedns status` see it gone, never a
    /// half-serving one.
    fn serve(self, handler: Handler) -> anyhow::Result<tokio::task::JoinSet<&'static str>> {
        let mut tasks = tokio::task::JoinSet::new();
        let (udp, tcp) = (
            tokio::net::UdpSocket::from_std(self.udp)?,
            tokio::net::TcpListener::from_std(self.tcp)?,
        );
        let h = handler.clone();
        tasks.spawn(async move {
            server::serve_udp(udp, h).await;
            "udp"
        });
        let h = handler.clone();
        tasks.spawn(async move {
            server::serve_tcp(tcp, h).await;
            "tcp"
        });
        if let Some((udp6, tcp6)) = self.v6 {
            let (udp6, tcp6) = (
                tokio::net::UdpSocket::from_std(udp6)?,
                tokio::net::TcpListener::from_std(tcp6)?,
            );
            let h = handler.clone();
            tasks.spawn(async move {
                server::serve_udp(udp6, h).await;
                "udp6"
            });
            tasks.spawn(async move {
                server::serve_tcp(tcp6, handler).await;
                "tcp6"
            });
        }
        Ok(tasks)
    }
}

/// What a resolver does to itself before it serves: the open files it may need, its control
/// socket bound while it still can, then its privileges dropped, TCP connects restricted to
/// `tcp_ports` and the seccomp filter on. Returns the control socket.
fn confine_to_serve(
    args: &Args,
    st: &Arc<Resolver>,
    tcp_ports: &[u16],
) -> anyhow::Result<tokio::net::UnixListener> {
    let need = st.upstreams().max_inflight as u64 + 2 * server::MAX_TCP_CONNECTIONS as u64 + 64;
    match confine::raise_nofile(need) {
        Ok(limit) if limit < need => tracing::warn!(
            limit,
            need,
            "the open files' hard limit is below what maxInflight needs: past it, \
             forwarding fails and TCP clients wait"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("raising the open files' limit: {e:#}"),
    }
    let control = control::bind(st).context("binding the control socket")?;
    confine::drop_privileges(args.user).context("dropping privileges")?;
    match confine::restrict_tcp(tcp_ports) {
        Ok(true) => {}
        Ok(false) => tracing::info!("this kernel does not restrict TCP connects (Landlock ABI 4)"),
        Err(e) => tracing::warn!("restricting TCP connects: {e:#}"),
    }
    confine::confine().context("confining the resolver")?;
    Ok(control)
}

/// Serves until SIGTERM or SIGINT, the container going away, or a task ending (an error).
async fn until_stopped(
    (mut term, mut int): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
    served: Served,
    mut tasks: tokio::task::JoinSet<&'static str>,
) -> anyhow::Result<()> {
    tokio::select! {
        _ = term.recv() => tracing::info!("stopping"),
        _ = int.recv() => tracing::info!("stopping"),
        why = served.until_gone(liveness::period()) => {
            tracing::warn!("the container is gone ({why}): stopping");
        }
        Some(ended) = tasks.join_next() => {
            let why = match ended {
                Ok(task) => format!("the {task} task returned"),
                Err(e) => format!("a task failed: {e}"),
            };
            tracing::error!("{why}: stopping");
            anyhow::bail!("{why}");
        }
    }
    Ok(())
}

/// `embedns-resolverd --confinement-check USER PATH`: confines itself exactly as a serving
/// resolver does (`USER` is `UID:GID`), then tries what a resolver taken over by an attacker
/// would: to write `PATH` (a file of root's), to create a file in a world-writable directory,
/// to open a netlink socket, to run a program. Prints each outcome (`ok` or the error) as one
/// JSON object, for the tests to check that each is refused.
fn confinement_check() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let (Some(user), Some(path)) = (args.first(), args.get(1)) else {
        eprintln!("usage: embedns-resolverd --confinement-check UID:GID PATH");
        return ExitCode::from(2);
    };
    let write = || outcome(OpenOptions::new().append(true).open(path).map(drop));
    let dropped = ResolverUser::parse_from_plugin(user)
        .map_err(anyhow::Error::from)
        .and_then(confine::drop_privileges);
    if let Err(e) = dropped {
        eprintln!("embedns-resolverd: {e:#}");
        return ExitCode::FAILURE;
    }
    // The identity alone already refuses the write; the filter refuses it again.
    let write_as_user = write();
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    if let Err(e) = confine::restrict_tcp(&[53]).and_then(|_| confine::confine()) {
        eprintln!("embedns-resolverd: {e:#}");
        return ExitCode::FAILURE;
    }
    let scratch = std::env::temp_dir().join(format!("embedns-confinement-{}", std::process::id()));
    let report = ResolverConfinement {
        write_as_user,
        write: write(),
        create: outcome(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&scratch)
                .map(drop),
        ),
        netlink: outcome(
            nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Netlink,
                nix::sys::socket::SockType::Raw,
                nix::sys::socket::SockFlag::empty(),
                nix::sys::socket::SockProtocol::NetlinkRoute,
            )
            .map(drop)
            .map_err(std::io::Error::from),
        ),
        exec: outcome(embedns_conf::capabilities::try_exec()),
        // A rename that replaces a file (the log's own names: the one rename it may make is
        // their exchange), and asking for another process to be signalled.
        rename_over: outcome(
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                path.as_str(),
                nix::fcntl::AT_FDCWD,
                path.as_str(),
                nix::fcntl::RenameFlags::empty(),
            )
            .map_err(std::io::Error::from),
        ),
        // SAFETY: fcntl on fd 0 with an integer argument.
        setown: outcome(match unsafe { libc::fcntl(0, libc::F_SETOWN, 1) } {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        }),
        // A TCP connect to a port no upstream uses (etcd's client port on loopback).
        connect_tcp: outcome(std::net::TcpStream::connect("127.0.0.1:2379").map(drop)),
        denied: confine::denied(),
        uid,
        gid,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("a report serializes")
    );
    ExitCode::SUCCESS
}

/// Logs to `log/resolver.log` in the sandbox directory (EMBEDNS_RESOLVER_LOG sets the
/// level), rotated to `resolver.log.1` whenever it grows past [`LOG_CAP`], also while
/// running. The `log` directory is made here, while still root, and given to `user`: the one
/// place the resolver can write once it has dropped its privileges. Since that user (a
/// resolver taken over, or any process of its identity) controls the directory's entries,
/// root acts on them only through descriptors: [`open_log_file`].
fn init_logging(paths: &StatePaths, container_id: &str, user: ResolverUser) {
    let dir = paths.resolver_log_dir(container_id);
    let made = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        });
    let owner = (
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(nix::unistd::Gid::from_raw(user.gid)),
    );
    // The sandbox directory is root's, so `log` is the directory made there; opened without
    // following a link all the same.
    let Ok(dir_fd) = made.and_then(|()| embedns_conf::fsutil::open_nofollow(&dir, true)) else {
        return;
    };
    let path = paths.resolver_log(container_id);
    let old = RotatingLog::old_path(&path);
    let opened = [&path, &old].map(|p| {
        let name = p.file_name().expect("a log file name");
        open_log_file(&dir_fd, std::path::Path::new(name), user)
    });
    let [Ok(current), Ok(spare)] = opened else {
        return;
    };
    // Inside a user namespace where `user` is not mapped the resolver keeps its identity
    // (confine::drop_privileges), and so does the directory.
    let _ = nix::unistd::fchown(&dir_fd, owner.0, owner.1);
    let file = RotatingLog::from_files(path, current, spare, LOG_CAP);
    let level = std::env::var("EMBEDNS_RESOLVER_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_target(false)
        .with_writer(Mutex::new(file))
        .try_init();
}

/// Opens `name` in the log directory `dir` for appending, as root, and gives it to `user`.
/// Only a regular file with one link, of `user` or root, is kept: a symlink (refused by
/// `O_NOFOLLOW`), a hard link to another file, a FIFO (opened without blocking), a device or
/// a directory is unlinked (the link itself, never its target) and a fresh file made with
/// `O_EXCL`. A few rounds, since the directory's owner may plant again meanwhile.
fn open_log_file(
    dir: &std::fs::File,
    name: &std::path::Path,
    user: ResolverUser,
) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let base = OFlag::O_WRONLY
        | OFlag::O_APPEND
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    for _ in 0..4 {
        let opened = openat(dir, name, base, Mode::empty()).or_else(|e| match e {
            nix::errno::Errno::ENOENT => openat(
                dir,
                name,
                base | OFlag::O_CREAT | OFlag::O_EXCL,
                Mode::from_bits_truncate(0o600),
            ),
            e => Err(e),
        });
        if let Ok(fd) = opened {
            let file = std::fs::File::from(fd);
            let meta = file.metadata()?;
            let owned = meta.uid() == 0 || meta.uid() == user.uid;
            if meta.is_file() && meta.nlink() == 1 && owned {
                let _ = nix::unistd::fchown(
                    &file,
                    Some(nix::unistd::Uid::from_raw(user.uid)),
                    Some(nix::unistd::Gid::from_raw(user.gid)),
                );
                // Blocking writes again (a regular file never blocks anyway).
                let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND));
                return Ok(file);
            }
        }
        // Not a file of ours (or a FIFO without a reader: ENXIO, a symlink: ELOOP): the name
        // goes, whatever it named.
        let unlinked = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .or_else(|_| nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::RemoveDir));
        match unlinked {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other(format!(
        "{}: replaced again and again",
        name.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_the_plugin_builds_is_the_one_parsed_here() {
        let cmd = embedns_conf::commands::ResolverCommand {
            data_dir: std::path::Path::new("/run/embedns"),
            container_id: "c1",
            user: DEFAULT_RESOLVER_USER,
            v6: true,
        };
        let argv = std::iter::once("embedns-resolverd".into()).chain(cmd.args());
        let args = <Args as clap::Parser>::try_parse_from(argv).unwrap();
        assert_eq!(args.data_dir, PathBuf::from("/run/embedns"));
        assert_eq!(args.container_id, "c1");
        assert_eq!(args.user, DEFAULT_RESOLVER_USER);
        use embedns_conf::commands as c;
        assert_eq!(
            (args.ready_fd, args.udp_fd, args.tcp_fd),
            (c::READY_FD, c::UDP_FD, c::TCP_FD)
        );
        assert_eq!(
            (args.udp6_fd, args.tcp6_fd),
            (Some(c::UDP6_FD), Some(c::TCP6_FD))
        );
    }
}

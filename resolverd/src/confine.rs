//! What the resolver does to itself: entering the container's netns (its listening sockets
//! come from the plugin, already bound there), and confining itself once it serves, so that a
//! resolver taken over by a hostile query or upstream cannot hurt its host:
//!
//! - an unprivileged identity of its own (`resolverUser`, default 65530:65530; under rootless podman the
//!   user namespace's root, the unprivileged user): the store is readable to its group and
//!   writable by root only; the resolver writes nothing but its own log;
//! - no capability in any set (bounding and ambient included), and no_new_privs;
//! - a seccomp allow-list of the system calls serving needs (`docs/confinement.md` gives
//!   each entry and why): anything else (exec, fork, ptrace, mount, unlink, mkdir, a rename
//!   that replaces a file, `F_SETOWN`, kill of another process, sockets other than IP ones,
//!   an open for writing, ...) fails with EPERM, and is counted ([`denied`], shown by
//!   `embedns status`): a resolver that tries such a call is worth a look.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use embedns_conf::user::ResolverUser;
use nix::sched::{setns, CloneFlags};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
    SeccompFilter, SeccompRule,
};

/// Moves the calling thread (the main thread, before the runtime starts) into `path`.
pub fn enter_netns(path: &str) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("opening netns {path}"))?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {path}"))
}

/// Raises the soft limit on open files to `need` (never past the hard limit the runtime set,
/// which stays an administrator's cap): runtimes often leave 1024, less than `maxInflight`
/// forwarded queries (one socket each), the TCP clients and the resolver's own files need.
/// Returns the soft limit now in force.
pub fn raise_nofile(need: u64) -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    let want = need.min(hard);
    if soft >= want {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).context("setrlimit")?;
    Ok(want)
}

/// Landlock (kernel 6.7+, ABI 4): the calling thread, and threads it starts later, may connect
/// TCP only to `ports` (the upstreams') and bind no TCP port (its listener came bound from the
/// plugin). UDP is not covered by Landlock. Each thread calls it for itself, as the domain is
/// per thread. Returns whether the kernel enforces it fully (older kernels: not at all).
pub fn restrict_tcp(ports: &[u16]) -> anyhow::Result<bool> {
    use landlock::{
        Access, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
    };
    let mut ruleset = Ruleset::default()
        .handle_access(AccessNet::from_all(ABI::V4))
        .context("landlock")?
        .create()
        .context("landlock")?;
    for port in ports {
        ruleset = ruleset
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .context("landlock")?;
    }
    let status = ruleset.restrict_self().context("landlock")?;
    Ok(status.ruleset == RulesetStatus::FullyEnforced)
}

/// Least privilege for the calling thread: the bounding and ambient sets emptied, the
/// identity switched to `user` (groups dropped), every capability gone, no_new_privs set.
///
/// Credentials and capabilities are per thread in the kernel; glibc's `setresuid` makes every
/// thread switch, which fails in a thread that has already dropped CAP_SETUID. So each thread
/// calls this for itself, with the raw system calls for the switch (the capabilities go as
/// the sync process's do, `embedns_conf::capabilities`): the host-netns thread when it
/// starts, the main thread once its sockets and control socket exist.
///
/// Inside a user namespace (rootless podman) the process is unprivileged on the host already;
/// if `user` is not mapped there, the identity stays and the rest still applies.
pub fn drop_privileges(user: ResolverUser) -> anyhow::Result<()> {
    // The bounding set first: dropping it needs CAP_SETPCAP, gone after the uid switch. A
    // thread started without CAP_SETPCAP keeps it (no_new_privs and the seccomp filter still
    // stop any exec from gaining anything), as before.
    if let Err(e) = embedns_conf::capabilities::drop_bounding_and_ambient() {
        tracing::warn!("{e}");
    }
    // SAFETY: setgroups, setresgid and setresuid with valid arguments.
    if let Err(e) = unsafe { switch_identity(user) } {
        if in_initial_user_namespace() {
            return Err(e);
        }
        tracing::warn!("staying the user namespace's {}: {e:#}", current_uid());
    }
    Ok(embedns_conf::capabilities::drop_the_rest()?)
}

/// The calling thread's groups, gid and uid (real, effective, saved) become `user`'s.
unsafe fn switch_identity(user: ResolverUser) -> anyhow::Result<()> {
    let check = |r: libc::c_long, what: &str| -> anyhow::Result<()> {
        if r != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| what.to_string());
        }
        Ok(())
    };
    check(
        libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
        "setgroups",
    )?;
    check(
        libc::syscall(libc::SYS_setresgid, user.gid, user.gid, user.gid),
        &format!("setresgid {}", user.gid),
    )?;
    check(
        libc::syscall(libc::SYS_setresuid, user.uid, user.uid, user.uid),
        &format!("setresuid {}", user.uid),
    )
}

fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// Whether this process is in the host's user namespace (its uid map is the identity).
fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
        .unwrap_or(true)
}

/// The system calls a serving resolver makes with any arguments (x86_64 and aarch64 names
/// via libc; x86_64's `epoll_wait` is added in [`allowed`]).
const ANY_ARGUMENTS: &[i64] = &[
    // Sockets served and upstream exchanges.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_recvmmsg,
    libc::SYS_sendmmsg,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_accept4,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_close,
    // The runtime.
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_rseq,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Memory.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_brk,
    // Reading the store and the host's resolv.conf; rotating its own log (both files
    // already open: emptied, then their names swapped).
    libc::SYS_newfstatat,
    libc::SYS_ftruncate,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_getdents64,
];

/// The system calls a serving resolver makes: [`ANY_ARGUMENTS`], and a few more only with
/// the arguments it uses.
fn allowed() -> anyhow::Result<BTreeMap<i64, Vec<SeccompRule>>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ANY_ARGUMENTS.iter().map(|&nr| (nr, Vec::new())).collect();
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_epoll_wait, Vec::new());
    // Only IP sockets (upstreams), non-blocking or not: no raw, packet or netlink ones.
    let families = [libc::AF_INET, libc::AF_INET6].map(|af| af as u64);
    rules.insert(libc::SYS_socket, argument_is(0, families)?);
    // open only to read: nothing can be created, written or truncated by name.
    let writing = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u64;
    rules.insert(
        libc::SYS_openat,
        vec![SeccompRule::new(vec![Cond::new(
            2,
            Len::Dword,
            Op::MaskedEq(writing),
            0,
        )?])?],
    );
    // ioctl only to set or read a socket's non-blocking mode and pending bytes.
    let requests = [libc::FIONBIO, libc::FIONREAD, libc::FIOCLEX];
    rules.insert(libc::SYS_ioctl, argument_is(1, requests)?);
    // Rotating the log swaps the two files' names (RENAME_EXCHANGE): no rename that replaces
    // a file, nor one with other flags (RENAME_WHITEOUT needs privileges anyway).
    let exchange = [libc::RENAME_EXCHANGE as u64];
    rules.insert(libc::SYS_renameat2, argument_is(4, exchange)?);
    // fcntl for descriptor and status flags (non-blocking, close-on-exec) and duplicates; not
    // F_SETOWN/F_SETSIG (signals to another process of the same identity), locks or leases.
    let commands = [
        libc::F_GETFD,
        libc::F_SETFD,
        libc::F_GETFL,
        libc::F_SETFL,
        libc::F_DUPFD_CLOEXEC,
    ];
    rules.insert(libc::SYS_fcntl, argument_is(1, commands.map(|c| c as u64))?);
    // A signal only to this process's own threads (abort on a panic).
    let own = [std::process::id() as u64];
    rules.insert(libc::SYS_tgkill, argument_is(0, own)?);
    Ok(rules)
}

/// Rules that allow a call whose argument `index` (its low 32 bits) is one of `values`.
fn argument_is(
    index: u8,
    values: impl IntoIterator<Item = u64>,
) -> anyhow::Result<Vec<SeccompRule>> {
    values
        .into_iter()
        .map(|v| {
            Ok(SeccompRule::new(vec![Cond::new(
                index,
                Len::Dword,
                Op::Eq,
                v,
            )?])?)
        })
        .collect()
}

/// System calls the filter refused since the resolver started.
static DENIED: AtomicU64 = AtomicU64::new(0);

/// How many system calls the filter refused (for `embedns status`).
pub fn denied() -> u64 {
    DENIED.load(Ordering::Relaxed)
}

/// The SIGSYS handler of a refused call (`SECCOMP_RET_TRAP`): counts it, and makes the call
/// return -EPERM, as `SECCOMP_RET_ERRNO` would, so the code that made it goes on as before.
extern "C" fn refused(_: libc::c_int, _: *mut libc::siginfo_t, context: *mut libc::c_void) {
    DENIED.fetch_add(1, Ordering::Relaxed);
    let eperm = -(libc::EPERM as i64);
    // SAFETY: the kernel passes the interrupted thread's ucontext; the return register is
    // what the skipped system call returns once the handler returns.
    unsafe {
        let uc = context.cast::<libc::ucontext_t>();
        #[cfg(target_arch = "x86_64")]
        {
            (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = eperm;
        }
        #[cfg(target_arch = "aarch64")]
        {
            (*uc).uc_mcontext.regs[0] = eperm as u64;
        }
    }
}

/// Installs the allow-list on every thread of the process (no_new_privs must be set in each,
/// as [`drop_privileges`] does). A call outside it fails with EPERM and is counted.
pub fn confine() -> anyhow::Result<()> {
    // SAFETY: a handler that only touches an atomic and the ucontext it is given.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = refused as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error()).context("installing the SIGSYS handler");
        }
    }
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| anyhow::anyhow!("seccomp: {e:?}"))?;
    let filter = SeccompFilter::new(allowed()?, SeccompAction::Trap, SeccompAction::Allow, arch)
        .map_err(|e| anyhow::anyhow!("building the seccomp filter: {e}"))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e| anyhow::anyhow!("compiling the seccomp filter: {e:?}"))?;
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| anyhow::anyhow!("installing the seccomp filter: {e}"))
}

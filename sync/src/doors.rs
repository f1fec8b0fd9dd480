//! The doors a uid-0 process has without any capability, shut for the sync worker, which
//! parses what etcd holds (values any host with write access put there): a seccomp filter
//! (the `seccompiler` crate) that lets everything else through and refuses with EPERM
//! - every `execve`/`execveat`;
//! - a socket of any family but AF_INET and AF_INET6 (`socket`): no UNIX socket, so no
//!   connection to root's sockets (a container runtime's API is root itself), no netlink;
//!   `socketpair` stays (tokio's signal handling makes one);
//! - a signal to any process but its own (`kill`, `tgkill`, `rt_sigqueueinfo`,
//!   `rt_tgsigqueueinfo` to another pid; `tkill`, `pidfd_send_signal`, `ptrace`,
//!   `process_vm_writev` at all): a uid-0 process may otherwise signal every other one
//!   (containerd, kubelet, etcd) without CAP_KILL.
//!
//! Landlock covers none of these (its signal and abstract-socket scopes need 6.12, and it has
//! no rule for connecting to a named UNIX socket). A deny-list rather than the resolver's
//! allow-list: the worker runs tokio, tonic, rustls and the etcd client, whose system calls
//! vary with their versions; what it must never do is short.

use std::collections::BTreeMap;

use anyhow::Context;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
    SeccompFilter, SeccompRule,
};

/// Installs the filter on the calling thread and every thread it starts later (call it before
/// the runtime starts). Needs no_new_privs (set when the capabilities are dropped).
pub fn shut() -> anyhow::Result<()> {
    let me = std::process::id() as u64;
    let ne = |arg: u8, v: u64| Cond::new(arg, Len::Qword, Op::Ne, v);
    let not_me = |arg| -> anyhow::Result<Vec<SeccompRule>> {
        Ok(vec![SeccompRule::new(vec![ne(arg, me)?])?])
    };
    let always = Vec::new;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_execve, always());
    rules.insert(libc::SYS_execveat, always());
    rules.insert(
        libc::SYS_socket,
        vec![SeccompRule::new(vec![
            Cond::new(0, Len::Dword, Op::Ne, libc::AF_INET as u64)?,
            Cond::new(0, Len::Dword, Op::Ne, libc::AF_INET6 as u64)?,
        ])?],
    );
    rules.insert(libc::SYS_kill, not_me(0)?);
    rules.insert(libc::SYS_tgkill, not_me(0)?);
    rules.insert(libc::SYS_rt_sigqueueinfo, not_me(0)?);
    rules.insert(libc::SYS_rt_tgsigqueueinfo, not_me(0)?);
    rules.insert(libc::SYS_tkill, always());
    rules.insert(libc::SYS_pidfd_send_signal, always());
    rules.insert(libc::SYS_ptrace, always());
    rules.insert(libc::SYS_process_vm_writev, always());
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH
            .try_into()
            .context("this architecture")?,
    )?;
    let program: seccompiler::BpfProgram = filter.try_into()?;
    seccompiler::apply_filter(&program).context("installing the seccomp filter")?;
    Ok(())
}

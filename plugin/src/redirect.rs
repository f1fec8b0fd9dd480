//! The redirect of `127.0.0.11:53` (and of 127.0.0.12-15, which a container's further
//! networks name: `sandbox::NAMESERVERS`) to the resolver's real ports inside the container's netns
//! (R24), as Docker's `setup-resolver` does: DNAT in nat/OUTPUT, SNAT of the replies' source
//! port back to 53 in nat/POSTROUTING, in chains of our own whose jumps are inserted first
//! (as Docker inserts them), so a rule already in the container (a sidecar's DNS capture, an
//! ACCEPT) cannot take 127.0.0.11 away. One `iptables-restore --noflush` batch per change: one
//! exec instead of eight.
//!
//! R26 (ours): the nameservers the runtime may write itself (containerd 2.x, nerdctl, CRI-O,
//! `podman --dns`) are caught too, in a third chain, `EMBEDNS_CATCH`: DNAT of `<server>:53` to
//! the same ports, except for sockets of the resolvers' `UID:GID`, so the resolver's own
//! forwarded queries to those servers leave the netns (`-m owner`, as NodeLocal DNSCache's
//! NOTRACK rules exempt its own upstream address). Its jump comes second, after
//! 127.0.0.8/29's; [`set_catch`] rewrites the chain when the container's networks change.
//!
//! iptables runs in the netns of the thread that forks it: every function here enters the
//! container's netns (given by path) for exactly the execs it makes, fallback included.

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
pub use embedns_conf::catch::Catch;
use embedns_conf::catch::CATCH_CHAIN;
use embedns_conf::sandbox::EMBEDDED_RESOLVER as RESOLVER_IP;

use crate::error::{PluginError, REDIRECT_FAILED};
use crate::netns;

const OUTPUT_CHAIN: &str = "EMBEDNS_OUTPUT";
const POSTROUTING_CHAIN: &str = "EMBEDNS_POSTROUTING";
/// The nameserver addresses attachments name (127.0.0.11-15, `sandbox::NAMESERVERS`), all
/// redirected to the resolver.
const NAMESERVERS: &str = "127.0.0.8/29";

/// Where each chain of ours is entered from, as `(built-in chain, rule)`, in their order in
/// the table: the one text of our jumps, which install inserts and removal deletes.
fn jumps() -> [(&'static str, String); 3] {
    [
        ("OUTPUT", format!("-d {NAMESERVERS} -j {OUTPUT_CHAIN}")),
        ("OUTPUT", format!("-j {CATCH_CHAIN}")),
        (
            "POSTROUTING",
            format!("-d {RESOLVER_IP}/32 -j {POSTROUTING_CHAIN}"),
        ),
    ]
}

/// Our chains.
const CHAINS: [&str; 3] = [OUTPUT_CHAIN, CATCH_CHAIN, POSTROUTING_CHAIN];

/// Starts installing the rules for a resolver listening on `udp`/`tcp` and returns without
/// waiting (the caller overlaps it with the resolver's start and calls [`Pending::wait`]).
/// `replace` first removes the rules of an earlier resolver of this netns, whose jumps would
/// otherwise be duplicated; a fresh netns has none, and skipping that saves an exec.
pub fn install(
    netns_path: &str,
    udp: u16,
    tcp: u16,
    replace: bool,
    catch: &Catch,
) -> anyhow::Result<Pending> {
    if replace {
        let _ = remove_start(netns_path).and_then(Pending::wait);
    }
    let catch_rules = catch.rules(udp, tcp);
    let chains: String = CHAINS.iter().map(|c| format!(":{c} - [0:0]\n")).collect();
    // Each inserted first, the last one first: they end up in `jumps()`'s order.
    let jumps: String = (jumps().iter().rev())
        .map(|(chain, rule)| format!("-I {chain} 1 {rule}\n"))
        .collect();
    let batch = format!(
        "*nat\n\
         {chains}\
         {jumps}\
         -A {OUTPUT_CHAIN} -d {NAMESERVERS} -p udp -m udp --dport 53 -j DNAT --to-destination {RESOLVER_IP}:{udp}\n\
         -A {OUTPUT_CHAIN} -d {NAMESERVERS} -p tcp -m tcp --dport 53 -j DNAT --to-destination {RESOLVER_IP}:{tcp}\n\
         -A {POSTROUTING_CHAIN} -s {RESOLVER_IP}/32 -p udp -m udp --sport {udp} -j SNAT --to-source :53\n\
         -A {POSTROUTING_CHAIN} -s {RESOLVER_IP}/32 -p tcp -m tcp --sport {tcp} -j SNAT --to-source :53\n\
         {catch_rules}\
         COMMIT\n"
    );
    Ok(Pending {
        child: restore_start(netns_path, &batch)?,
        netns: netns_path.to_string(),
        what: "installing the 127.0.0.11 redirect",
        fallback: false,
    })
}

/// Rewrites the catch (R26) of a running resolver on `udp`/`tcp`, in one batch: when a
/// network joins or leaves a container, or for a resolver whose rules an earlier version
/// installed without [`CATCH_CHAIN`] (`jump`: add the chain's jump as well).
pub fn set_catch(
    netns_path: &str,
    udp: u16,
    tcp: u16,
    catch: &Catch,
    jump: bool,
) -> anyhow::Result<()> {
    let batch = catch.set_batch(udp, tcp, jump);
    Pending {
        child: restore_start(netns_path, &batch)?,
        netns: netns_path.to_string(),
        what: "updating the nameservers caught",
        fallback: false,
    }
    .wait()
}

/// An `iptables-restore` under way.
pub struct Pending {
    child: Child,
    netns: String,
    what: &'static str,
    /// On failure, remove piece by piece (a removal batch, where part may already be gone).
    fallback: bool,
}

impl Pending {
    /// Waits for iptables-restore to exit; its status decides (a removal falls back piece by piece).
    pub fn wait(self) -> anyhow::Result<()> {
        let out = self
            .child
            .wait_with_output()
            .context("waiting for iptables-restore")?;
        if out.status.success() {
            return Ok(());
        }
        if self.fallback {
            tracing::warn!(
                netns = %self.netns,
                "{}: iptables-restore failed ({}): {}; removing piece by piece",
                self.what,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return remove_now(&self.netns);
        }
        Err(PluginError::new(
            REDIRECT_FAILED,
            format!(
                "{}: iptables-restore failed ({}): {}",
                self.what,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )
        .into())
    }
}

impl Pending {
    /// For a removal: returns as soon as the redirect is observably gone, or when
    /// iptables-restore exits (its status then decides, as in [`Pending::wait`]).
    ///
    /// Why not always wait for the exit: after a commit that deleted anything, closing a
    /// netfilter netlink socket waits for the kernel's deferred destruction of what was
    /// deleted (an RCU grace period: iptables-restore spends 1.7 ms of CPU and 15-20 ms in
    /// that `close` here), while the rules are gone from the commit on. Gone means: a datagram
    /// to 127.0.0.11:53 from a fresh port of [`PROBE_SOURCE`](crate::probe::PROBE_SOURCE) (a new conntrack flow) reaches a
    /// socket bound there,
    /// so it is no longer DNATed. The batch is all or nothing, so that proves the rest gone
    /// too. The child then finishes on its own and is reaped by the runtime's subreaper or
    /// init once we exit.
    pub fn wait_gone(mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = {
            let _in = netns::enter(&self.netns)?;
            UdpSocket::bind((RESOLVER_IP, 53)).ok().map(|l| (_in, l))
        };
        let Some((_in, listener)) = probe else {
            return self.wait(); // something else holds 127.0.0.11:53: wait for the exit
        };
        listener.set_read_timeout(Some(Duration::from_millis(1)))?;
        let token = format!("embedns-probe-{}", std::process::id());
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                drop(_in);
                return self.wait();
            }
            let sender = UdpSocket::bind((crate::probe::PROBE_SOURCE, 0))?;
            let _ = sender.send_to(token.as_bytes(), (RESOLVER_IP, 53));
            let from = sender.local_addr()?;
            while let Ok((n, src)) = listener.recv_from(&mut buf) {
                if src == from && buf[..n] == *token.as_bytes() {
                    return Ok(());
                }
            }
        }
        drop(_in);
        self.wait()
    }
}

/// Starts removing our rules and chains from the netns at `netns_path`; once [`Pending::wait`]
/// returns they are gone, and what was already gone is not an error.
pub fn remove_start(netns_path: &str) -> anyhow::Result<Pending> {
    let mut batch = String::from("*nat\n");
    for (chain, rule) in jumps() {
        batch += &format!("-D {chain} {rule}\n");
    }
    for chain in CHAINS {
        batch += &format!("-F {chain}\n-X {chain}\n");
    }
    batch += "COMMIT\n";
    Ok(Pending {
        child: restore_start(netns_path, &batch)?,
        netns: netns_path.to_string(),
        what: "removing the 127.0.0.11 redirect",
        fallback: true,
    })
}

/// Removes our rules piece by piece (part may already be gone: a batch is all or nothing),
/// then checks that nothing of ours is left in the netns's nat table.
pub fn remove_now(netns_path: &str) -> anyhow::Result<()> {
    let _in = netns::enter(netns_path)?;
    // Each jump (versions before R26 have no catch chain's), the jump of versions that
    // redirected 127.0.0.11 alone, then each chain.
    let mut steps: Vec<String> = (jumps().into_iter())
        .map(|(chain, rule)| format!("-D {chain} {rule}"))
        .collect();
    steps.push(format!("-D OUTPUT -d {RESOLVER_IP}/32 -j {OUTPUT_CHAIN}"));
    for chain in CHAINS {
        steps.extend([format!("-F {chain}"), format!("-X {chain}")]);
    }
    for step in &steps {
        let _ = Command::new(tool("iptables"))
            .args(["-w", "-t", "nat"])
            .args(step.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let listed = Command::new(tool("iptables"))
        .args(["-w", "-t", "nat", "-S"])
        .stderr(Stdio::piped())
        .output()
        .context("running iptables to check the removal")?;
    if !listed.status.success() {
        anyhow::bail!(
            "iptables -t nat -S failed ({}): {}",
            listed.status,
            String::from_utf8_lossy(&listed.stderr).trim()
        );
    }
    let rules = String::from_utf8_lossy(&listed.stdout);
    let left: Vec<&str> = rules
        .lines()
        .filter(|l| CHAINS.iter().any(|c| l.contains(c)))
        .collect();
    if !left.is_empty() {
        anyhow::bail!("rules left in place: {}", left.join("; "));
    }
    Ok(())
}

/// Waits (at most 5 s) for every `iptables-restore` running in the netns to finish: one left
/// by an ADD killed while installing the redirect would put the rules back after a removal.
pub fn wait_installers(netns_path: &str) {
    use std::os::unix::fs::MetadataExt;
    let Some(target) = std::fs::metadata(netns_path).ok().map(|m| m.ino()) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    for (pid, args) in crate::processes::all() {
        // The program or, for a wrapper script, its first argument.
        let is_restore = args
            .iter()
            .take(2)
            .any(|a| a.ends_with(b"iptables-restore"));
        let in_netns = is_restore
            && std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == target);
        if in_netns {
            tracing::info!(pid, "waiting for an iptables-restore left in {netns_path}");
            crate::resolver::wait_pid(pid, deadline);
        }
    }
}

/// Whether our DNAT rules are present in the netns (CHECK).
pub fn present(netns_path: &str) -> bool {
    let Ok(_in) = netns::enter(netns_path) else {
        return false;
    };
    Command::new(tool("iptables"))
        .args(["-w", "-t", "nat", "-S", OUTPUT_CHAIN])
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("DNAT"))
        .unwrap_or(false)
}

fn restore_start(netns_path: &str, batch: &str) -> anyhow::Result<Child> {
    restore_start_with("iptables-restore", netns_path, batch)
}

/// `restore` (iptables-restore or ip6tables-restore) started in the netns with `batch`.
pub fn restore_start_with(restore: &str, netns_path: &str, batch: &str) -> anyhow::Result<Child> {
    let _in = netns::enter(netns_path)?;
    let mut child = Command::new(tool(restore))
        .args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {restore} (is the iptables package installed?)"))?;
    let written = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(batch.as_bytes());
    match written {
        // It exited before reading everything: its status and stderr say why (Pending::wait).
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow::Error::from(e).context("writing to iptables-restore"));
        }
        Ok(()) => {}
    }
    Ok(child)
}

/// iptables tools from PATH, falling back to /usr/sbin (runtimes may pass a short PATH).
pub fn tool(name: &str) -> String {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
        .unwrap_or(false);
    if on_path {
        name.to_string()
    } else {
        format!("/usr/sbin/{name}")
    }
}

//! R26's catch: the rules that send queries to the nameservers a runtime may write itself
//! (containerd 2.x, nerdctl, CRI-O, `podman --dns`) to the container's resolver, as
//! `iptables-restore --noflush` text (and `ip6tables-restore` text for IPv6 servers, sent to
//! the resolver's sockets on `[::1]`). Written once here for the two parties that change
//! them: the plugin (ADD, DEL: `plugin/src/redirect.rs`) and a resolver's supervisor, which
//! takes them away while no resolver can answer and puts them back once one does (R26 fails
//! open).

use std::fmt::Write;
use std::net::{IpAddr, Ipv6Addr};

/// The nat chain that holds the catch; its jump sits in nat/OUTPUT.
pub const CATCH_CHAIN: &str = "EMBEDNS_CATCH";

/// Where a resolver listens for the IPv6 nameservers caught: the container's own loopback.
pub const RESOLVER_V6: Ipv6Addr = Ipv6Addr::LOCALHOST;

/// The nameservers whose queries the resolver answers (R26), and who is exempt: the resolvers'
/// identity, whose queries to those servers are the forwarded ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catch {
    pub servers: Vec<IpAddr>,
    pub uid: u32,
    pub gid: u32,
}

impl Catch {
    /// The exempt `(uid, gid)`, as the sandbox records it.
    pub fn owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// The rules of [`CATCH_CHAIN`] for a resolver on `udp`/`tcp` of 127.0.0.11: its IPv4
    /// servers' (none without), as `-A` lines of an iptables batch.
    pub fn rules(&self, udp: u16, tcp: u16) -> String {
        let to = format!("{}", crate::sandbox::EMBEDDED_RESOLVER);
        self.rules_for(false, &to, udp, tcp)
    }

    /// The same for the IPv6 servers, to the resolver's `udp`/`tcp` on `[::1]`, as `-A` lines
    /// of an ip6tables batch.
    pub fn rules6(&self, udp: u16, tcp: u16) -> String {
        self.rules_for(true, &format!("[{RESOLVER_V6}]"), udp, tcp)
    }

    /// Whether any server caught is IPv6.
    pub fn has_v6(&self) -> bool {
        self.servers.iter().any(IpAddr::is_ipv6)
    }

    fn rules_for(&self, v6: bool, to: &str, udp: u16, tcp: u16) -> String {
        let servers: Vec<&IpAddr> = self.servers.iter().filter(|s| s.is_ipv6() == v6).collect();
        if servers.is_empty() {
            return String::new();
        }
        let (uid, gid) = (self.uid, self.gid);
        let mut rules =
            format!("-A {CATCH_CHAIN} -m owner --uid-owner {uid} --gid-owner {gid} -j RETURN\n");
        let host = if v6 { 128 } else { 32 };
        for s in servers {
            for (proto, port) in [("udp", udp), ("tcp", tcp)] {
                let _ = writeln!(
                    rules,
                    "-A {CATCH_CHAIN} -d {s}/{host} -p {proto} -m {proto} --dport 53 \
                     -j DNAT --to-destination {to}:{port}"
                );
            }
        }
        rules
    }

    /// A whole batch that sets the chain to these rules (declaring a chain that exists flushes
    /// it, with iptables-restore --noflush, legacy and nft alike); `jump` adds the chain's
    /// jump too (for rules an earlier version installed without the chain).
    pub fn set_batch(&self, udp: u16, tcp: u16, jump: bool) -> String {
        // The jump comes second, after 127.0.0.8/29's (`plugin/src/redirect.rs`).
        batch(&self.rules(udp, tcp), jump.then_some(2))
    }

    /// [`Catch::set_batch`] for ip6tables-restore, the resolver on `[::1]`:`udp`/`tcp`; the
    /// jump, alone in ip6tables' nat OUTPUT, comes first.
    pub fn set_batch6(&self, udp: u16, tcp: u16, jump: bool) -> String {
        batch(&self.rules6(udp, tcp), jump.then_some(1))
    }
}

/// The chain declared (so emptied) and `rules` in it, its jump inserted at `jump` if given.
fn batch(rules: &str, jump: Option<u8>) -> String {
    let jump = match jump {
        Some(at) => format!("-I OUTPUT {at} -j {CATCH_CHAIN}\n"),
        None => String::new(),
    };
    format!("*nat\n:{CATCH_CHAIN} - [0:0]\n{jump}{rules}COMMIT\n")
}

/// A batch that empties the chain and keeps its jump: the runtime's nameservers are asked
/// directly again, 127.0.0.11 still goes to the resolver's ports.
pub fn clear_batch() -> String {
    format!("*nat\n:{CATCH_CHAIN} - [0:0]\nCOMMIT\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_exempt_the_owner_first_then_catch_each_server_on_both_protocols() {
        let c = Catch {
            servers: vec!["10.0.0.2".parse().unwrap(), "fd00::a".parse().unwrap()],
            uid: 65534,
            gid: 65533,
        };
        let rules = c.rules(4000, 4001);
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("--uid-owner 65534 --gid-owner 65533 -j RETURN"));
        assert!(
            lines[1].contains("-d 10.0.0.2/32 -p udp") && lines[1].ends_with("127.0.0.11:4000")
        );
        assert!(
            lines[2].contains("-d 10.0.0.2/32 -p tcp") && lines[2].ends_with("127.0.0.11:4001")
        );
        assert!(c
            .set_batch(1, 2, true)
            .contains("-I OUTPUT 2 -j EMBEDNS_CATCH\n"));
        assert!(!c.set_batch(1, 2, false).contains("-I OUTPUT"));
        // The IPv6 server, to the resolver's sockets on [::1], in an ip6tables batch of its own.
        let six = c.rules6(5000, 5001);
        let lines: Vec<&str> = six.lines().collect();
        assert_eq!(lines.len(), 3, "{six}");
        assert!(lines[1].contains("-d fd00::a/128 -p udp") && lines[1].ends_with("[::1]:5000"));
        assert!(lines[2].contains("-p tcp") && lines[2].ends_with("[::1]:5001"));
        assert!(
            !rules.contains("fd00"),
            "IPv6 servers stay out of the IPv4 batch"
        );
        let none = Catch {
            servers: vec![],
            ..c
        };
        assert_eq!(none.set_batch(1, 2, false), clear_batch());
    }
}

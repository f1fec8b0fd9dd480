//! R26's catch: the rules that send queries to the nameservers a runtime may write itself
//! (containerd 2.x, nerdctl, CRI-O, `podman --dns`) to the container's resolver, as
//! `iptables-restore --noflush` text. Written once here for the two parties that change them:
//! the plugin (ADD, DEL: `plugin/src/redirect.rs`) and a resolver's supervisor, which takes
//! them away while no resolver can answer and puts them back once one does (R26 fails open).

use std::fmt::Write;
use std::net::Ipv4Addr;

/// The nat chain that holds the catch; its jump sits in nat/OUTPUT.
pub const CATCH_CHAIN: &str = "EMBEDNS_CATCH";

/// The nameservers whose queries the resolver answers (R26), and who is exempt: the resolvers'
/// identity, whose queries to those servers are the forwarded ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catch {
    pub servers: Vec<Ipv4Addr>,
    pub uid: u32,
    pub gid: u32,
}

impl Catch {
    /// The exempt `(uid, gid)`, as the sandbox records it.
    pub fn owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// The rules of [`CATCH_CHAIN`] for a resolver on `udp`/`tcp` (none without servers), as
    /// `-A` lines of a batch.
    pub fn rules(&self, udp: u16, tcp: u16) -> String {
        if self.servers.is_empty() {
            return String::new();
        }
        let (uid, gid) = (self.uid, self.gid);
        let mut rules =
            format!("-A {CATCH_CHAIN} -m owner --uid-owner {uid} --gid-owner {gid} -j RETURN\n");
        for s in &self.servers {
            for (proto, port) in [("udp", udp), ("tcp", tcp)] {
                let _ = writeln!(
                    rules,
                    "-A {CATCH_CHAIN} -d {s}/32 -p {proto} -m {proto} --dport 53 \
                     -j DNAT --to-destination {}:{port}",
                    crate::sandbox::EMBEDDED_RESOLVER
                );
            }
        }
        rules
    }

    /// A whole batch that sets the chain to these rules (declaring a chain that exists flushes
    /// it, with iptables-restore --noflush, legacy and nft alike); `jump` adds the chain's
    /// jump too (for rules an earlier version installed without the chain).
    pub fn set_batch(&self, udp: u16, tcp: u16, jump: bool) -> String {
        let jump = if jump {
            format!("-I OUTPUT 2 -j {CATCH_CHAIN}\n")
        } else {
            String::new()
        };
        format!(
            "*nat\n:{CATCH_CHAIN} - [0:0]\n{jump}{}COMMIT\n",
            self.rules(udp, tcp)
        )
    }
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
            servers: vec![Ipv4Addr::new(10, 0, 0, 2)],
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
        let none = Catch {
            servers: vec![],
            ..c
        };
        assert_eq!(none.set_batch(1, 2, false), clear_batch());
    }
}

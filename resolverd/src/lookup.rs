//! Docker's naming rules (docs/behaviour.md R1–R10, R16), as pure functions over the
//! networks the asking container is on. No I/O here beyond reading the networks' mapped
//! indexes: the server asks, this answers.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use rand::seq::SliceRandom;

use crate::index::{NetworkIndex, Unavailable};
use embedns_conf::defaults;

/// What the resolver does with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Addresses of the asked family, already shuffled (R5), with their TTL.
    Addresses(Vec<IpAddr>, u32),
    /// A known name without data of the asked type: NOERROR, no answers (R9, R16).
    NoData(u32),
    /// A reverse answer `<name>.<network>.` (R10).
    Pointer(String, u32),
    /// Not ours: forward it (R15).
    Forward,
    /// A network's index could not be read: SERVFAIL, so the client retries rather than
    /// caching a wrong negative answer.
    Unavailable,
    /// R16a: `<local name>.<search domain>`, which may be a real name too: forwarded first,
    /// and answered with this local outcome only if the upstream says NXDOMAIN or nothing
    /// is forwarded (no upstream, an internal network).
    ForwardFirst(Box<Outcome>),
}

/// The container's view: its networks in attach order (each knows the container's own
/// records on it).
pub struct View<'a> {
    pub networks: &'a [NetworkIndex],
}

type Found = Result<Option<(Vec<IpAddr>, u32)>, Unavailable>;

impl View<'_> {
    /// Answers a question for a normalized name (lower case, no trailing dot).
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Outcome {
        self.try_lookup(name, qtype).unwrap_or(Outcome::Unavailable)
    }

    fn try_lookup(&self, name: &str, qtype: RecordType) -> Result<Outcome, Unavailable> {
        if qtype == RecordType::PTR {
            if let Some(ip) = arpa_to_ip(name) {
                return self.reverse(&ip);
            }
        }
        let (found, qualified) = match self.resolve_exact(name)? {
            Some(hit) => (Some(hit), false),
            None => {
                let hit = self.resolve_search_qualified(name)?;
                let qualified = hit.is_some();
                (hit, qualified)
            }
        };
        let outcome = match found {
            Some((mut ips, ttl)) => {
                ips.retain(|ip| match qtype {
                    RecordType::A => ip.is_ipv4(),
                    RecordType::AAAA => ip.is_ipv6(),
                    _ => false,
                });
                if ips.is_empty() {
                    Outcome::NoData(ttl)
                } else {
                    if ips.len() > 1 {
                        ips.shuffle(&mut rand::rng());
                    }
                    Outcome::Addresses(ips, ttl)
                }
            }
            // R16: an unknown single-label A/AAAA never leaves the container.
            None if !name.contains('.') && matches!(qtype, RecordType::A | RecordType::AAAA) => {
                Outcome::NoData(self.ttl(None))
            }
            None => Outcome::Forward,
        };
        Ok(match outcome {
            Outcome::Forward => Outcome::Forward,
            local if qualified => Outcome::ForwardFirst(Box::new(local)),
            local => local,
        })
    }

    /// R16a ★: `web.<search domain>` of the asker's own resolv.conf as `web` (busybox's
    /// nslookup, among others, asks only the search-qualified names once a search list is
    /// set). The caller forwards it first: a real name of the domain is never hidden.
    fn resolve_search_qualified(&self, name: &str) -> Found {
        for net in self.networks {
            for own in net.own() {
                for domain in &own.search {
                    if let Some(prefix) = name
                        .strip_suffix(domain.as_str())
                        .and_then(|p| p.strip_suffix('.'))
                    {
                        if let Some(hit) = self.resolve_exact(prefix)? {
                            return Ok(Some(hit));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// R4, R1/R5, R7 for one name: first as a whole on every network, then (R7) `a.b.net`
    /// as `a.b` on network `net` when the asker is on `net`. Links apply to both forms.
    fn resolve_exact(&self, name: &str) -> Found {
        if let Some(hit) = self.resolve_on(name, None)? {
            return Ok(Some(hit));
        }
        for net in self.networks {
            let suffix = net.network.to_ascii_lowercase();
            if let Some(prefix) = name
                .strip_suffix(suffix.as_str())
                .and_then(|p| p.strip_suffix('.'))
            {
                if let Some(hit) = self.resolve_on(prefix, Some(net))? {
                    return Ok(Some(hit));
                }
            }
        }
        Ok(None)
    }

    /// One form of a name on the asker's networks (all of them, or `only`), as Docker's
    /// sandbox does it: R4 the asker's links on a network first (the target looked up on
    /// that network), then R1/R5 the name on each network (in attach order) where it is not
    /// one of the asker's link aliases, with every address that network has for it. So a
    /// link hides a same-named container from the linking container on that network, also
    /// while the link's target is gone.
    fn resolve_on(&self, name: &str, only: Option<&NetworkIndex>) -> Found {
        let nets = || {
            self.networks
                .iter()
                .filter(move |n| only.is_none_or(|o| std::ptr::eq(*n, o)))
        };
        let link_target = |net: &NetworkIndex| {
            net.own()
                .flat_map(|own| own.links.iter())
                .find(|l| l.alias == name)
                .map(|l| l.name.clone())
        };
        for net in nets() {
            if let Some(target) = link_target(net) {
                if let Some(ips) = net.addresses(&target)? {
                    return Ok(Some((ips, self.ttl(Some(net)))));
                }
            }
        }
        for net in nets() {
            if link_target(net).is_some() {
                continue;
            }
            if let Some(ips) = net.addresses(name)? {
                return Ok(Some((ips, self.ttl(Some(net)))));
            }
        }
        Ok(None)
    }

    /// R10: the container name on the network, for an address of a container.
    fn reverse(&self, ip: &IpAddr) -> Result<Outcome, Unavailable> {
        for net in self.networks {
            if let Some(name) = net.pointer(ip)? {
                return Ok(Outcome::Pointer(
                    format!("{name}.{}.", net.network),
                    self.ttl(Some(net)),
                ));
            }
        }
        Ok(Outcome::Forward)
    }

    /// R11: the TTL configured on the asker's own record of that network.
    fn ttl(&self, net: Option<&NetworkIndex>) -> u32 {
        let mut nets = net.into_iter().chain(self.networks.iter());
        nets.find_map(|n| n.own().next().map(|r| r.ttl))
            .unwrap_or(defaults::TTL)
    }
}

/// `4.3.2.1.in-addr.arpa` / nibble `ip6.arpa` names to addresses; `None` for partial names.
pub fn arpa_to_ip(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = v4
            .split('.')
            .map(|o| o.parse().ok())
            .collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::from([octets[0], octets[1], octets[2], octets[3]]));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = v6
        .split('.')
        .map(|n| {
            (n.len() == 1)
                .then(|| u8::from_str_radix(n, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    // The name lists nibbles least significant first.
    for k in 0..16 {
        bytes[15 - k] = (nibbles[2 * k + 1] << 4) | nibbles[2 * k];
    }
    Some(IpAddr::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedns_conf::paths::StatePaths;
    use embedns_conf::record::{Link, Record};
    use embedns_conf::store::NetworkStore;

    fn rec(net: &str, cid: &str, name: Option<&str>, aliases: &[&str], ips: &[&str]) -> Record {
        let ips = ips.iter().map(|s| s.parse().unwrap()).collect();
        Record::with_defaults(net, cid, name, aliases, ips)
    }

    /// A network written through the store (and so its shared index) in `dir`.
    fn net(dir: &tempfile::TempDir, name: &str, me: &str, recs: Vec<Record>) -> NetworkIndex {
        let paths = StatePaths::new(dir.path());
        let store = NetworkStore::new(&paths, name);
        let lock = store.lock().unwrap();
        let own = recs
            .iter()
            .filter(|r| r.container_id == me)
            .cloned()
            .collect();
        for r in recs {
            store.put(&lock, &r).unwrap();
        }
        NetworkIndex::new(&paths, name, own)
    }

    fn a(o: Outcome) -> Vec<String> {
        match o {
            Outcome::Addresses(ips, _) => {
                let mut v: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                v.sort();
                v
            }
            other => panic!("expected addresses, got {other:?}"),
        }
    }

    #[test]
    fn names_aliases_and_round_robin() {
        // R2, R3, R5
        let tmp = tempfile::tempdir().unwrap();
        let nets = [net(
            &tmp,
            "n1",
            "me",
            vec![
                rec("n1", "me", Some("cli"), &[], &["10.0.0.1"]),
                rec("n1", "c2", Some("web1"), &["www"], &["10.0.0.2"]),
                rec("n1", "c3", Some("web2"), &["www"], &["10.0.0.3", "fd00::3"]),
            ],
        )];
        let v = View { networks: &nets };
        assert_eq!(a(v.lookup("web1", RecordType::A)), vec!["10.0.0.2"]);
        assert_eq!(
            a(v.lookup("www", RecordType::A)),
            vec!["10.0.0.2", "10.0.0.3"]
        );
        assert_eq!(a(v.lookup("www", RecordType::AAAA)), vec!["fd00::3"]);
        // R9
        assert_eq!(v.lookup("web1", RecordType::AAAA), Outcome::NoData(600));
        assert_eq!(v.lookup("web1", RecordType::MX), Outcome::NoData(600));
        // R16 / R15
        assert_eq!(v.lookup("nothere", RecordType::A), Outcome::NoData(600));
        assert_eq!(v.lookup("nothere", RecordType::MX), Outcome::Forward);
        assert_eq!(v.lookup("example.com", RecordType::A), Outcome::Forward);
    }

    #[test]
    fn links_only_for_their_owner_and_before_names() {
        // R4
        let mut me = rec("n1", "me", Some("cli"), &[], &["10.0.0.1"]);
        me.links = vec![
            Link {
                name: "web".into(),
                alias: "db".into(),
            },
            Link {
                name: "absent".into(),
                alias: "ghost".into(),
            },
        ];
        let recs = vec![
            me,
            rec("n1", "c2", Some("web"), &[], &["10.0.0.2"]),
            rec("n1", "c3", Some("db"), &[], &["10.0.0.3"]),
        ];
        let tmp = tempfile::tempdir().unwrap();
        let nets = [net(&tmp, "n1", "me", recs.clone())];
        let mine = View { networks: &nets };
        assert_eq!(a(mine.lookup("db", RecordType::A)), vec!["10.0.0.2"]);
        // The same network seen by c2, which declared no link.
        let tmp2 = tempfile::tempdir().unwrap();
        let theirs = [net(&tmp2, "n1", "c2", recs)];
        let other = View { networks: &theirs };
        assert_eq!(a(other.lookup("db", RecordType::A)), vec!["10.0.0.3"]);
        // a link to a missing target is as if the alias did not exist
        assert_eq!(mine.lookup("ghost", RecordType::A), Outcome::NoData(600));
    }

    #[test]
    fn r4_r7_a_link_applies_to_the_name_network_form() {
        let mut me = rec("n1", "me", Some("cli"), &[], &["10.0.0.1"]);
        me.links = vec![Link {
            name: "db".into(),
            alias: "database".into(),
        }];
        let recs = vec![
            me,
            rec("n1", "c2", Some("db"), &[], &["10.0.0.2"]),
            rec("n1", "c3", Some("database"), &[], &["10.0.0.3"]),
        ];
        let tmp = tempfile::tempdir().unwrap();
        let nets = [net(&tmp, "n1", "me", recs)];
        let mine = View { networks: &nets };
        assert_eq!(a(mine.lookup("database", RecordType::A)), vec!["10.0.0.2"]);
        assert_eq!(
            a(mine.lookup("database.n1", RecordType::A)),
            vec!["10.0.0.2"]
        );
    }

    #[test]
    fn r4_a_link_whose_target_is_gone_still_hides_a_same_named_container() {
        let mut me = rec("n1", "me", Some("cli"), &[], &["10.0.0.1"]);
        me.links = vec![Link {
            name: "db".into(),
            alias: "database".into(),
        }];
        // The target `db` is not on the network; a container named `database` is.
        let recs = vec![me, rec("n1", "c3", Some("database"), &[], &["10.0.0.3"])];
        let tmp = tempfile::tempdir().unwrap();
        let nets = [net(&tmp, "n1", "me", recs)];
        let mine = View { networks: &nets };
        assert_eq!(mine.lookup("database", RecordType::A), Outcome::NoData(600));
        assert_eq!(mine.lookup("database.n1", RecordType::A), Outcome::Forward);
    }

    #[test]
    fn scope_dotted_names_and_ptr() {
        // R1, R7, R10
        let tmp = tempfile::tempdir().unwrap();
        let n1 = net(
            &tmp,
            "n1",
            "me",
            vec![
                rec("n1", "me", Some("cli"), &[], &["10.0.0.1"]),
                rec("n1", "c2", Some("web"), &["alias"], &["10.0.0.2"]),
            ],
        );
        let n2 = net(
            &tmp,
            "n2",
            "me",
            vec![rec("n2", "c9", Some("hidden"), &[], &["10.9.0.9"])],
        );
        let only_n1 = [n1];
        let v = View { networks: &only_n1 };
        assert_eq!(v.lookup("hidden", RecordType::A), Outcome::NoData(600));
        assert_eq!(a(v.lookup("web.n1", RecordType::A)), vec!["10.0.0.2"]);
        assert_eq!(v.lookup("web.n2", RecordType::A), Outcome::Forward);
        assert_eq!(
            v.lookup("2.0.0.10.in-addr.arpa", RecordType::PTR),
            Outcome::Pointer("web.n1.".into(), 600)
        );
        assert_eq!(
            v.lookup("9.9.9.10.in-addr.arpa", RecordType::PTR),
            Outcome::Forward
        );
        drop(n2);
    }

    #[test]
    fn search_domains_of_the_asker_are_stripped() {
        let mut me = rec("n1", "me", Some("cli"), &[], &["10.0.0.1"]);
        me.search = vec!["corp.example".into()];
        let tmp = tempfile::tempdir().unwrap();
        let nets = [net(
            &tmp,
            "n1",
            "me",
            vec![me, rec("n1", "c2", Some("web"), &[], &["10.0.0.2"])],
        )];
        let v = View { networks: &nets };
        let Outcome::ForwardFirst(local) = v.lookup("web.corp.example", RecordType::A) else {
            panic!("R16a: a search-qualified name is forwarded first");
        };
        assert_eq!(a(*local), vec!["10.0.0.2"]);
        assert_eq!(
            v.lookup("nothere.corp.example", RecordType::A),
            Outcome::Forward
        );
        assert_eq!(
            v.lookup("web.other.example", RecordType::A),
            Outcome::Forward
        );
    }

    #[test]
    fn arpa_parsing() {
        assert_eq!(
            arpa_to_ip("4.3.2.1.in-addr.arpa"),
            Some("1.2.3.4".parse().unwrap())
        );
        let six = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(arpa_to_ip(six), Some("fd00::3".parse().unwrap()));
        assert_eq!(arpa_to_ip("3.2.1.in-addr.arpa"), None);
    }
}

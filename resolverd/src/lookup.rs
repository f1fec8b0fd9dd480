//! Docker's naming rules (docs/behaviour.md R1–R11, R16, R16a), as pure functions over the
//! networks the asking container is on, each seen through [`Peers`] (the mapped index in
//! production, [`MemoryNetwork`](crate::peers::MemoryNetwork) in the unit tests below, one
//! or more per rule). No I/O here: the server asks, this answers. (Over 500 lines because
//! the rules' unit tests, one or more per rule, are half of the file.)

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use rand::seq::SliceRandom;

use crate::peers::{Peers, Unavailable};
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
pub struct View<'a, P: Peers> {
    pub networks: &'a [P],
}

type Found = Result<Option<(Vec<IpAddr>, u32)>, Unavailable>;

impl<P: Peers> View<'_, P> {
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
            let suffix = net.network().to_ascii_lowercase();
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
    fn resolve_on(&self, name: &str, only: Option<&P>) -> Found {
        let nets = || {
            self.networks
                .iter()
                .filter(move |n| only.is_none_or(|o| std::ptr::eq(*n, o)))
        };
        let link_target = |net: &P| {
            net.own()
                .iter()
                .flat_map(|own| own.links.iter())
                .find(|l| l.alias == name)
                .map(|l| l.name.clone())
        };
        for net in nets() {
            if let Some(target) = link_target(net) {
                if let Some(ips) = net.visible_addresses(&target)? {
                    return Ok(Some((ips, self.ttl(Some(net)))));
                }
            }
        }
        for net in nets() {
            if link_target(net).is_some() {
                continue;
            }
            if let Some(ips) = net.visible_addresses(name)? {
                return Ok(Some((ips, self.ttl(Some(net)))));
            }
        }
        Ok(None)
    }

    /// R10: the container name on the network, for an address of a container.
    /// R10 across the asker's networks in attach order, but a container of this host holding
    /// the address on any of them wins over another host's record holding it too (R31).
    fn reverse(&self, ip: &IpAddr) -> Result<Outcome, Unavailable> {
        let mut remote = None;
        for net in self.networks {
            match net.visible_pointer(ip)? {
                Some(p) if p.local => return Ok(self.pointer(net, &p.name)),
                Some(p) => {
                    remote.get_or_insert_with(|| self.pointer(net, &p.name));
                }
                None => {}
            }
        }
        Ok(remote.unwrap_or(Outcome::Forward))
    }

    fn pointer(&self, net: &P, name: &str) -> Outcome {
        Outcome::Pointer(format!("{name}.{}.", net.network()), self.ttl(Some(net)))
    }

    /// R11: the TTL configured on the asker's own record of that network.
    fn ttl(&self, net: Option<&P>) -> u32 {
        let mut nets = net.into_iter().chain(self.networks.iter());
        nets.find_map(|n| n.own().first().map(|r| r.ttl))
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
    //! One test (or more) per rule, against networks held in memory (`MemoryNetwork`); the
    //! last checks that the mapped index, the production source, gives the same outcomes.
    use super::*;
    use crate::network_index::NetworkIndex;
    use crate::peers::MemoryNetwork;
    use embedns_conf::index::Entry;
    use embedns_conf::record::{Link, Record};

    fn rec(net: &str, cid: &str, name: Option<&str>, aliases: &[&str], ips: &[&str]) -> Record {
        let ips = ips.iter().map(|s| s.parse().unwrap()).collect();
        Record::with_defaults(net, cid, name, aliases, ips)
    }

    /// Network `name` holding `recs`, as container `me` sees it.
    fn net(name: &str, me: &str, recs: &[Record]) -> MemoryNetwork {
        MemoryNetwork::new(name, me, recs)
    }

    fn link(name: &str, alias: &str) -> Link {
        Link {
            name: name.into(),
            alias: alias.into(),
        }
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

    fn me() -> Record {
        rec("n1", "me", Some("cli"), &[], &["10.0.0.1"])
    }

    #[test]
    fn r1_only_the_networks_the_asker_is_on() {
        let recs = [me(), rec("n2", "c9", Some("hidden"), &[], &["10.9.0.9"])];
        let nets = [net("n1", "me", &recs)];
        let v = View { networks: &nets };
        assert_eq!(v.lookup("hidden", RecordType::A), Outcome::NoData(600));
        let both = [net("n1", "me", &recs), net("n2", "me", &recs)];
        let v = View { networks: &both };
        assert_eq!(a(v.lookup("hidden", RecordType::A)), vec!["10.9.0.9"]);
    }

    #[test]
    fn r2_a_container_answers_to_its_name() {
        let recs = [me(), rec("n1", "c2", Some("web"), &[], &["10.0.0.2"])];
        let nets = [net("n1", "me", &recs)];
        let v = View { networks: &nets };
        assert_eq!(a(v.lookup("web", RecordType::A)), vec!["10.0.0.2"]);
        assert_eq!(a(v.lookup("cli", RecordType::A)), vec!["10.0.0.1"]);
    }

    #[test]
    fn r3_aliases_answer_like_names() {
        let recs = [
            me(),
            rec("n1", "c2", Some("web"), &["www", "front"], &["10.0.0.2"]),
        ];
        let nets = [net("n1", "me", &recs)];
        let v = View { networks: &nets };
        assert_eq!(a(v.lookup("www", RecordType::A)), vec!["10.0.0.2"]);
        assert_eq!(a(v.lookup("front", RecordType::A)), vec!["10.0.0.2"]);
    }

    #[test]
    fn r4_links_only_for_their_owner_and_before_names() {
        let mut cli = me();
        cli.links = vec![link("web", "db"), link("absent", "ghost")];
        let recs = [
            cli,
            rec("n1", "c2", Some("web"), &[], &["10.0.0.2"]),
            rec("n1", "c3", Some("db"), &[], &["10.0.0.3"]),
        ];
        let mine = [net("n1", "me", &recs)];
        let mine = View { networks: &mine };
        assert_eq!(a(mine.lookup("db", RecordType::A)), vec!["10.0.0.2"]);
        // The same network seen by c2, which declared no link.
        let theirs = [net("n1", "c2", &recs)];
        let theirs = View { networks: &theirs };
        assert_eq!(a(theirs.lookup("db", RecordType::A)), vec!["10.0.0.3"]);
        // A link to a missing target is as if the alias did not exist.
        assert_eq!(mine.lookup("ghost", RecordType::A), Outcome::NoData(600));
    }

    #[test]
    fn r4_r7_a_link_applies_to_the_name_network_form() {
        let mut cli = me();
        cli.links = vec![link("db", "database")];
        let recs = [
            cli,
            rec("n1", "c2", Some("db"), &[], &["10.0.0.2"]),
            rec("n1", "c3", Some("database"), &[], &["10.0.0.3"]),
        ];
        let nets = [net("n1", "me", &recs)];
        let mine = View { networks: &nets };
        assert_eq!(a(mine.lookup("database", RecordType::A)), vec!["10.0.0.2"]);
        assert_eq!(
            a(mine.lookup("database.n1", RecordType::A)),
            vec!["10.0.0.2"]
        );
    }

    #[test]
    fn r4_a_link_whose_target_is_gone_still_hides_a_same_named_container() {
        let mut cli = me();
        cli.links = vec![link("db", "database")];
        // The target `db` is not on the network; a container named `database` is.
        let recs = [cli, rec("n1", "c3", Some("database"), &[], &["10.0.0.3"])];
        let nets = [net("n1", "me", &recs)];
        let mine = View { networks: &nets };
        assert_eq!(mine.lookup("database", RecordType::A), Outcome::NoData(600));
        assert_eq!(mine.lookup("database.n1", RecordType::A), Outcome::Forward);
    }

    #[test]
    fn r5_a_shared_alias_answers_every_address_shuffled() {
        let recs = [
            me(),
            rec("n1", "c2", Some("web1"), &["www"], &["10.0.0.2"]),
            rec("n1", "c3", Some("web2"), &["www"], &["10.0.0.3", "fd00::3"]),
        ];
        let nets = [net("n1", "me", &recs)];
        let v = View { networks: &nets };
        assert_eq!(
            a(v.lookup("www", RecordType::A)),
            vec!["10.0.0.2", "10.0.0.3"]
        );
        assert_eq!(a(v.lookup("www", RecordType::AAAA)), vec!["fd00::3"]);
        let orders: std::collections::HashSet<Vec<IpAddr>> = (0..64)
            .filter_map(|_| match v.lookup("www", RecordType::A) {
                Outcome::Addresses(ips, _) => Some(ips),
                _ => None,
            })
            .collect();
        assert_eq!(orders.len(), 2, "both orders come up (round robin)");
    }

    #[test]
    fn r7_name_dot_network_on_the_askers_networks() {
        let recs = [
            me(),
            rec("n1", "c2", Some("web"), &["alias"], &["10.0.0.2"]),
            rec("n2", "c9", Some("web"), &[], &["10.9.0.9"]),
        ];
        let nets = [net("n1", "me", &recs)];
        let v = View { networks: &nets };
        assert_eq!(a(v.lookup("web.n1", RecordType::A)), vec!["10.0.0.2"]);
        assert_eq!(a(v.lookup("alias.n1", RecordType::A)), vec!["10.0.0.2"]);
        assert_eq!(v.lookup("web.n2", RecordType::A), Outcome::Forward);
    }

    #[test]
    fn r9_a_known_name_without_that_type_has_no_data() {
        let recs = [me(), rec("n1", "c2", Some("web"), &[], &["10.0.0.2"])];
        let nets = [net("n1", "me", &recs)];
        let v = View { networks: &nets };
        assert_eq!(v.lookup("web", RecordType::AAAA), Outcome::NoData(600));
        assert_eq!(v.lookup("web", RecordType::MX), Outcome::NoData(600));
        assert_eq!(v.lookup("web", RecordType::TXT), Outcome::NoData(600));
    }

    #[test]
    fn r31_a_local_container_keeps_its_ptr_on_every_network_of_the_asker() {
        // n1, attached first, holds another host's record claiming the address; n2 holds
        // the local container that has it.
        let mut n1 = net("n1", "me", &[me()]);
        let mut forged = Entry::of(&rec("n1", "x1", Some("forged"), &[], &["10.0.0.7"]));
        forged.key = format!("host9/{}", forged.key);
        n1.entries.push(forged);
        let n2 = net(
            "n2",
            "me",
            &[
                rec("n2", "me", Some("cli"), &[], &["10.2.0.1"]),
                rec("n2", "c7", Some("db"), &[], &["10.0.0.7"]),
            ],
        );
        let nets = [n1, n2];
        let v = View { networks: &nets };
        assert_eq!(
            v.lookup("7.0.0.10.in-addr.arpa", RecordType::PTR),
            Outcome::Pointer("db.n2.".into(), 600)
        );
        // Without the local one, the other host's record answers.
        let v = View {
            networks: &nets[..1],
        };
        assert_eq!(
            v.lookup("7.0.0.10.in-addr.arpa", RecordType::PTR),
            Outcome::Pointer("forged.n1.".into(), 600)
        );
    }

    #[test]
    fn r10_ptr_of_a_peer_is_name_dot_network() {
        let recs = [
            me(),
            rec(
                "n1",
                "c2",
                Some("web"),
                &["alias"],
                &["10.0.0.2", "fd00::2"],
            ),
        ];
        let nets = [net("n1", "me", &recs)];
        let v = View { networks: &nets };
        assert_eq!(
            v.lookup("2.0.0.10.in-addr.arpa", RecordType::PTR),
            Outcome::Pointer("web.n1.".into(), 600)
        );
        let six = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(
            v.lookup(six, RecordType::PTR),
            Outcome::Pointer("web.n1.".into(), 600)
        );
        assert_eq!(
            v.lookup("9.9.9.10.in-addr.arpa", RecordType::PTR),
            Outcome::Forward
        );
    }

    #[test]
    fn r11_the_ttl_is_the_askers_network_setting() {
        let mut cli = me();
        cli.ttl = 30;
        let recs = [cli, rec("n1", "c2", Some("web"), &[], &["10.0.0.2"])];
        let nets = [net("n1", "me", &recs)];
        let v = View { networks: &nets };
        assert_eq!(
            v.lookup("web", RecordType::A),
            Outcome::Addresses(vec!["10.0.0.2".parse().unwrap()], 30)
        );
        assert_eq!(v.lookup("web", RecordType::MX), Outcome::NoData(30));
    }

    #[test]
    fn r15_r16_unknown_single_labels_stay_and_the_rest_leaves() {
        let recs = [me()];
        let nets = [net("n1", "me", &recs)];
        let v = View { networks: &nets };
        assert_eq!(v.lookup("nothere", RecordType::A), Outcome::NoData(600));
        assert_eq!(v.lookup("nothere", RecordType::AAAA), Outcome::NoData(600));
        assert_eq!(v.lookup("nothere", RecordType::MX), Outcome::Forward);
        assert_eq!(v.lookup("example.com", RecordType::A), Outcome::Forward);
    }

    #[test]
    fn r16a_search_qualified_names_are_forwarded_first() {
        let mut cli = me();
        cli.search = vec!["corp.example".into()];
        let recs = [cli, rec("n1", "c2", Some("web"), &[], &["10.0.0.2"])];
        let nets = [net("n1", "me", &recs)];
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

    /// `recs` in the store (network `n1`) of a fresh state dir, kept while the guard lives.
    fn stored(recs: &[Record]) -> (tempfile::TempDir, embedns_conf::paths::StatePaths) {
        let tmp = tempfile::tempdir().unwrap();
        let paths = embedns_conf::paths::StatePaths::new(tmp.path());
        let store = embedns_conf::store::NetworkStore::new(&paths, "n1");
        let lock = store.lock().unwrap();
        for r in recs {
            store.put(&lock, r).unwrap();
        }
        (tmp, paths)
    }

    #[test]
    fn the_mapped_index_gives_the_outcomes_the_rules_give_in_memory() {
        let mut cli = me();
        cli.links = vec![link("web", "db")];
        cli.search = vec!["corp.example".into()];
        let recs = [
            cli.clone(),
            rec("n1", "c2", Some("web"), &["www"], &["10.0.0.2"]),
            rec("n1", "c3", Some("db"), &["www"], &["10.0.0.3", "fd00::3"]),
        ];
        let (_tmp, paths) = stored(&recs);
        let mapped = [NetworkIndex::new(&paths, "n1", vec![cli])];
        let memory = [net("n1", "me", &recs)];
        let (mapped, memory) = (View { networks: &mapped }, View { networks: &memory });
        let sorted = |o: Outcome| match o {
            Outcome::Addresses(mut ips, ttl) => {
                ips.sort();
                Outcome::Addresses(ips, ttl)
            }
            other => other,
        };
        for (name, t) in [
            ("web", RecordType::A),
            ("www", RecordType::A),
            ("www", RecordType::AAAA),
            ("db", RecordType::A),
            ("db.n1", RecordType::A),
            ("web.corp.example", RecordType::A),
            ("nothere", RecordType::A),
            ("example.com", RecordType::A),
            ("3.0.0.10.in-addr.arpa", RecordType::PTR),
        ] {
            assert_eq!(
                sorted(mapped.lookup(name, t)),
                sorted(memory.lookup(name, t)),
                "{name} {t}"
            );
        }
    }

    /// R35: two pods named `web` in namespaces `a` and `b`, a client in `a`; and an
    /// unscoped attachment (cnitool, podman), `plain`, on the same network.
    fn namespaced() -> Vec<Record> {
        let scoped = |cid: &str, name: &str, ns: &str, ip: &str| {
            let mut r = rec("n1", cid, Some(name), &[], &[ip]);
            r.namespace = Some(ns.into());
            r.search = vec![
                format!("{ns}.svc.cluster.local"),
                "svc.cluster.local".into(),
            ];
            r
        };
        vec![
            scoped("me", "client", "a", "10.0.0.1"),
            scoped("wa", "web", "a", "10.0.0.2"),
            scoped("wb", "web", "b", "10.0.0.3"),
            scoped("ob", "only-b", "b", "10.0.0.4"),
            rec("n1", "plain", Some("plain"), &[], &["10.0.0.5"]),
        ]
    }

    fn r35_outcomes<P: Peers>(client: &[P], plain: &[P]) {
        let v = View { networks: client };
        assert_eq!(a(v.lookup("web", RecordType::A)), vec!["10.0.0.2"]);
        assert_eq!(v.lookup("only-b", RecordType::A), Outcome::NoData(600));
        // An attachment without a namespace (a cnitool or podman container) is everyone's.
        assert_eq!(a(v.lookup("plain", RecordType::A)), vec!["10.0.0.5"]);
        assert_eq!(
            v.lookup("5.0.0.10.in-addr.arpa", RecordType::PTR),
            Outcome::Pointer("plain.n1.".into(), 600)
        );
        // R16a: b's `web` through b's search domain is never a's pod, nor b's.
        assert_eq!(
            v.lookup("web.b.svc.cluster.local", RecordType::A),
            Outcome::Forward
        );
        assert!(matches!(
            v.lookup("web.a.svc.cluster.local", RecordType::A),
            Outcome::ForwardFirst(_)
        ));
        // PTR follows the scope: b's pod's address has no name here.
        assert_eq!(
            v.lookup("3.0.0.10.in-addr.arpa", RecordType::PTR),
            Outcome::Forward
        );
        assert_eq!(
            v.lookup("2.0.0.10.in-addr.arpa", RecordType::PTR),
            Outcome::Pointer("web.n1.".into(), 600)
        );
        // An asker without a namespace sees the whole network, as R1 says.
        let v = View { networks: plain };
        assert_eq!(
            a(v.lookup("web", RecordType::A)),
            vec!["10.0.0.2", "10.0.0.3"]
        );
        assert_eq!(a(v.lookup("only-b", RecordType::A)), vec!["10.0.0.4"]);
    }

    #[test]
    fn r35_a_pod_sees_the_pods_of_its_namespace_only() {
        let recs = namespaced();
        r35_outcomes(&[net("n1", "me", &recs)], &[net("n1", "plain", &recs)]);
    }

    #[test]
    fn r35_holds_on_the_mapped_index_too() {
        let recs = namespaced();
        let (_tmp, paths) = stored(&recs);
        let own = |cid: &str| {
            recs.iter()
                .filter(|r| r.container_id == cid)
                .cloned()
                .collect()
        };
        r35_outcomes(
            &[NetworkIndex::new(&paths, "n1", own("me"))],
            &[NetworkIndex::new(&paths, "n1", own("plain"))],
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

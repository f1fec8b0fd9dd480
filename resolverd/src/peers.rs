//! What Docker's naming rules (`lookup`) need of one network the asking container is on: the
//! addresses of a name, the name of an address, and the asker's own records there (its links,
//! TTL, search list). The shared, memory-mapped index is the production source
//! (`network_index::NetworkIndex`); [`MemoryNetwork`] holds a network in memory, for the rules' unit
//! tests. Other hosts' containers (a network shared through etcd) need no source of their
//! own: the sync process writes them into the same index.

use embedns_conf::attachment::StoreKey;
use std::net::IpAddr;

use embedns_conf::index::Entry;
pub use embedns_conf::index::Pointer;
use embedns_conf::record::{scoped_name, Record};

/// Neither the network's index nor its records could be read: the query gets SERVFAIL,
/// never a wrong answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// One network as the asking container sees it.
pub trait Peers {
    /// The network's name (R7's `name.network`, R10's `name.network.`).
    fn network(&self) -> &str;
    /// Every address of the attachments answering to a normalized name (container name,
    /// alias, `name.<domain>`), sorted; `None` when none does.
    fn addresses(&self, name: &str) -> Result<Option<Vec<IpAddr>>, Unavailable>;
    /// The container name of an attachment holding `ip`, this host's first.
    fn pointer(&self, ip: &IpAddr) -> Result<Option<Pointer>, Unavailable>;
    /// The asking container's own records on the network (one per interface).
    fn own(&self) -> &[Record];

    /// R35: the pod namespace the asker's names are scoped to on this network, if any.
    fn scope(&self) -> Option<&str> {
        self.own().first().and_then(|r| r.namespace.as_deref())
    }

    /// [`Peers::addresses`] as the asker may see them (R35): with a pod namespace, its own
    /// namespace's attachments and those without one; else the whole network.
    fn visible_addresses(&self, name: &str) -> Result<Option<Vec<IpAddr>>, Unavailable> {
        let Some(ns) = self.scope() else {
            return self.addresses(name);
        };
        let own = self.addresses(&scoped_name(ns, name))?;
        let unscoped = self.addresses(&scoped_name("", name))?;
        Ok(match (own, unscoped) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                a.sort();
                a.dedup();
                Some(a)
            }
            (a, b) => a.or(b),
        })
    }

    /// [`Peers::pointer`] as the asker may see it (R35): an address of another namespace's
    /// pod has no name for a scoped asker (an unscoped attachment's has).
    fn visible_pointer(&self, ip: &IpAddr) -> Result<Option<Pointer>, Unavailable> {
        let Some(p) = self.pointer(ip)? else {
            return Ok(None);
        };
        match self.scope() {
            Some(_) => {
                let held = self.visible_addresses(&p.name)?;
                Ok(held.is_some_and(|ips| ips.contains(ip)).then_some(p))
            }
            None => Ok(Some(p)),
        }
    }
}

/// A network held in memory: its attachments' entries and the asker's own records.
#[derive(Debug, Clone)]
pub struct MemoryNetwork {
    pub network: String,
    pub entries: Vec<Entry>,
    pub own: Vec<Record>,
}

impl MemoryNetwork {
    /// Network `network` holding `records` (those of other networks left out), as the
    /// container `me` sees it.
    pub fn new(network: &str, me: &str, records: &[Record]) -> MemoryNetwork {
        let on = || records.iter().filter(|r| r.network == network);
        MemoryNetwork {
            network: network.to_string(),
            entries: on().map(Entry::of).collect(),
            own: on().filter(|r| r.container_id == me).cloned().collect(),
        }
    }
}

impl Peers for MemoryNetwork {
    fn network(&self) -> &str {
        &self.network
    }

    fn addresses(&self, name: &str) -> Result<Option<Vec<IpAddr>>, Unavailable> {
        Ok(addresses_in(&self.entries, name))
    }

    fn pointer(&self, ip: &IpAddr) -> Result<Option<Pointer>, Unavailable> {
        Ok(pointer_in(&self.entries, ip))
    }

    fn own(&self) -> &[Record] {
        &self.own
    }
}

/// [`Peers::addresses`] over a list of entries.
pub fn addresses_in(entries: &[Entry], name: &str) -> Option<Vec<IpAddr>> {
    let mut ips: Vec<IpAddr> = entries
        .iter()
        .filter(|e| e.names.iter().any(|n| n == name))
        .flat_map(|e| e.ips.iter().copied())
        .collect();
    ips.sort();
    ips.dedup();
    (!ips.is_empty()).then_some(ips)
}

/// [`Peers::pointer`] over a list of entries: this host's attachment first, as the index
/// answers (another host's keys have a `/`).
pub fn pointer_in(entries: &[Entry], ip: &IpAddr) -> Option<Pointer> {
    let holding = || {
        entries
            .iter()
            .filter(|e| e.ips.contains(ip) && e.name.is_some())
    };
    holding()
        .find(|e| !StoreKey::is_remote(&e.key))
        .or_else(|| holding().next())
        .and_then(|e| {
            Some(Pointer {
                name: e.name.clone()?,
                local: !StoreKey::is_remote(&e.key),
            })
        })
}

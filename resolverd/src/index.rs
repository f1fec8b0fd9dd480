//! The records of one network, indexed by name and by address.
//!
//! Memory: a resolver holds every peer of its networks, so a peer is kept as only what a
//! lookup needs (its name, the names it answers to, its addresses) in a slab addressed by small
//! integers; the container's own records, which carry its links, TTL, search list and
//! upstreams, are kept whole. Changes cost O(names of the changed record): the watcher
//! applies one file at a time.

use std::collections::HashMap;
use std::net::IpAddr;

use embedns_conf::record::Record;

/// What a lookup needs of one attachment.
#[derive(Debug)]
pub struct Peer {
    /// The container name (R2), answered by PTR (R10).
    pub name: Option<Box<str>>,
    /// Every name it answers to: name, aliases, `<name>.<domainName>`.
    names: Box<[Box<str>]>,
    pub ips: Box<[IpAddr]>,
}

/// One network's records.
#[derive(Debug, Default)]
pub struct NetworkIndex {
    pub network: String,
    /// The asking container's own records on this network, whole.
    own: Vec<(Box<str>, Record)>,
    own_id: Box<str>,
    slots: Vec<Option<Peer>>,
    free: Vec<u32>,
    by_key: HashMap<Box<str>, u32>,
    by_name: HashMap<Box<str>, Vec<u32>>,
    by_ip: HashMap<IpAddr, Vec<u32>>,
}

impl NetworkIndex {
    /// An index of `network` as seen by container `own_id`.
    pub fn new(network: &str, own_id: &str) -> Self {
        NetworkIndex {
            network: network.to_string(),
            own_id: own_id.into(),
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Inserts or replaces the record stored under `key`.
    pub fn upsert(&mut self, key: &str, record: Record) {
        self.remove(key);
        let peer = Peer {
            name: record.name.as_deref().map(Into::into),
            names: served_names(&record).into_iter().map(Into::into).collect(),
            ips: record.ips.clone().into_boxed_slice(),
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        for name in peer.names.iter() {
            self.by_name.entry(name.clone()).or_default().push(slot);
        }
        for ip in peer.ips.iter() {
            self.by_ip.entry(*ip).or_default().push(slot);
        }
        self.slots[slot as usize] = Some(peer);
        self.by_key.insert(key.into(), slot);
        if *record.container_id == *self.own_id {
            self.own.push((key.into(), record));
        }
    }

    /// Removes the record stored under `key`, if any.
    pub fn remove(&mut self, key: &str) {
        self.own.retain(|(k, _)| &**k != key);
        let Some(slot) = self.by_key.remove(key) else {
            return;
        };
        let Some(old) = self.slots[slot as usize].take() else {
            return;
        };
        for name in old.names.iter() {
            drop_slot(&mut self.by_name, name, slot);
        }
        for ip in old.ips.iter() {
            drop_slot(&mut self.by_ip, ip, slot);
        }
        self.free.push(slot);
    }

    /// Attachments answering to a normalized name (container name, alias, `name.<domain>`).
    pub fn by_name<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Peer> + 'a {
        self.lookup(self.by_name.get(name))
    }

    /// Attachments that hold an address.
    pub fn by_ip(&self, ip: &IpAddr) -> impl Iterator<Item = &Peer> {
        self.lookup(self.by_ip.get(ip))
    }

    /// The asking container's own records on the network (one per interface).
    pub fn own(&self) -> impl Iterator<Item = &Record> {
        self.own.iter().map(|(_, r)| r)
    }

    fn lookup<'a>(&'a self, slots: Option<&'a Vec<u32>>) -> impl Iterator<Item = &'a Peer> + 'a {
        slots
            .into_iter()
            .flatten()
            .filter_map(|s| self.slots[*s as usize].as_ref())
    }
}

/// Every name a record answers to: its name and aliases, and with the network's `domainName`
/// also `<name>.<domain>`.
fn served_names(r: &Record) -> Vec<String> {
    let mut out: Vec<String> = r.names().map(str::to_string).collect();
    if let Some(domain) = &r.domain_name {
        let qualified: Vec<String> = out.iter().map(|n| format!("{n}.{domain}")).collect();
        out.extend(qualified);
    }
    out.sort();
    out.dedup();
    out
}

fn drop_slot<K, Q>(map: &mut HashMap<K, Vec<u32>>, k: &Q, slot: u32)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(slots) = map.get_mut(k) {
        slots.retain(|s| *s != slot);
        if slots.is_empty() {
            map.remove(k);
        }
    }
}

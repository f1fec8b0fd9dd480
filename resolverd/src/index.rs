//! The records of one network, indexed by name and by address.
//!
//! Changes cost O(names of the changed record): the watcher applies one file at a time.

use std::collections::HashMap;
use std::net::IpAddr;

use embedns_conf::record::Record;

/// One network's records.
#[derive(Debug, Default)]
pub struct NetworkIndex {
    pub network: String,
    records: HashMap<String, Record>,
    by_name: HashMap<String, Vec<String>>,
    by_ip: HashMap<IpAddr, Vec<String>>,
}

impl NetworkIndex {
    pub fn new(network: &str) -> Self {
        NetworkIndex {
            network: network.to_string(),
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// Inserts or replaces the record stored under `key`.
    pub fn upsert(&mut self, key: &str, record: Record) {
        self.remove(key);
        for name in served_names(&record) {
            self.by_name.entry(name).or_default().push(key.to_string());
        }
        for ip in &record.ips {
            self.by_ip.entry(*ip).or_default().push(key.to_string());
        }
        self.records.insert(key.to_string(), record);
    }

    /// Removes the record stored under `key`, if any.
    pub fn remove(&mut self, key: &str) -> Option<Record> {
        let old = self.records.remove(key)?;
        for name in served_names(&old) {
            drop_key(&mut self.by_name, &name, key);
        }
        for ip in &old.ips {
            drop_key(&mut self.by_ip, ip, key);
        }
        Some(old)
    }

    /// Records answering to a normalized name (container name, alias, `name.<domain>`).
    pub fn by_name<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Record> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|k| self.records.get(k))
    }

    /// Records that hold an address.
    pub fn by_ip(&self, ip: &IpAddr) -> impl Iterator<Item = &Record> {
        self.by_ip
            .get(ip)
            .into_iter()
            .flatten()
            .filter_map(|k| self.records.get(k))
    }

    /// This container's own records on the network (one per interface).
    pub fn owned_by<'a>(&'a self, container_id: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        self.records
            .values()
            .filter(move |r| r.container_id == container_id)
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

fn drop_key<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, Vec<String>>, k: &K, key: &str) {
    if let Some(keys) = map.get_mut(k) {
        keys.retain(|x| x != key);
        if keys.is_empty() {
            map.remove(k);
        }
    }
}

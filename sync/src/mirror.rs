//! The two halves of a network's state the sync process keeps in step with etcd, as pure
//! logic: which of this host's records to put or delete ([`Published`]), and which changes to
//! the other hosts' records a listing or a watch event means ([`Remote`]).

use embedns_conf::multihost::shared::NetworkBounds;
use std::collections::{BTreeMap, BTreeSet};

use crate::etcd::Kv;
use embedns_conf::attachment::{AttachmentId, RemoteKey};
use embedns_conf::multihost::keys::NetworkKey;
use embedns_conf::multihost::peer::PeerRecord;
use embedns_conf::multihost::shared::RemoteHost;
use embedns_conf::record::Record;
use embedns_conf::store::RemoteChange;

/// The most bytes one value from another host may have (R31): a record is a few hundred.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// The most names (name and aliases) one record from another host may have.
pub const MAX_NAMES: usize = 64;
/// The most records one other host may have held here.
pub const MAX_RECORDS_PER_HOST: usize = 8192;

/// A key of the network's prefix (R30), read once by the one grammar
/// (`embedns_conf::multihost::keys::parse`): a host's record or claim; `None` for a key that
/// is no key of ours, which is logged once and skipped.
pub fn read_key<'k>(network_prefix: &str, key: &'k str) -> Option<NetworkKey<'k>> {
    match embedns_conf::multihost::keys::parse(network_prefix, key) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!("skipped a key no host of embedns writes: {e}");
            None
        }
    }
}

/// One of this host's records as etcd has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub body: Vec<u8>,
    /// The revision of our put: a delete is made only if the key still has it.
    pub mod_revision: i64,
    pub lease: i64,
}

/// This host's records in etcd, against the ones on disk.
#[derive(Debug, Default)]
pub struct Published {
    pub keys: BTreeMap<String, Put>,
}

/// A listing of the network's prefix, sorted: this host's keys as published, the other hosts
/// holding their name's claim, and the other hosts' records.
pub struct Listing {
    pub published: BTreeMap<String, Put>,
    pub claims: BTreeSet<String>,
    pub others: Vec<(RemoteKey, Vec<u8>)>,
}

impl Listing {
    /// Sorts the key-values listed under `prefix` as host `me` sees them; keys of no known
    /// shape are left out (R30).
    pub fn sort(prefix: &str, me: &str, listed: &[Kv]) -> Listing {
        let mut out = Listing {
            published: BTreeMap::new(),
            claims: BTreeSet::new(),
            others: Vec::new(),
        };
        for kv in listed {
            let (host, key) = match read_key(prefix, &kv.key) {
                Some(NetworkKey::Claim { host }) => {
                    if host != me {
                        out.claims.insert(host.to_string());
                    }
                    continue;
                }
                Some(NetworkKey::Record { host, attachment }) => (host, attachment),
                None => continue,
            };
            if host == me {
                let put = Put {
                    body: kv.value.clone(),
                    mod_revision: kv.mod_revision,
                    lease: kv.lease,
                };
                out.published.insert(key.to_string(), put);
            } else {
                out.others
                    .push((RemoteKey::new(host, key), kv.value.clone()));
            }
        }
        out
    }
}

/// What to send to etcd to make this host's keys match the local records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Attachment keys and bodies to put with the current lease.
    pub put: Vec<(String, Vec<u8>)>,
    /// Attachment keys to delete, with the revision they must still have.
    pub delete: Vec<(String, i64)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.delete.is_empty()
    }
}

impl Published {
    /// The plan for `keys` (the changed ones, or every local and published one): `local`
    /// says what each is on disk now (`None`: no record).
    pub fn plan<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a String>,
        local: impl Fn(&str) -> Option<Vec<u8>>,
        lease: i64,
    ) -> Plan {
        let mut plan = Plan::default();
        for key in keys {
            match (local(key), self.keys.get(key)) {
                (Some(body), Some(p)) if p.body == body && p.lease == lease => {}
                (Some(body), _) => plan.put.push((key.clone(), body)),
                (None, Some(p)) => plan.delete.push((key.clone(), p.mod_revision)),
                (None, None) => {}
            }
        }
        plan
    }
}

/// The other hosts' records, as the local store holds them.
#[derive(Debug, Default)]
pub struct Remote {
    /// Another host's attachment → the value's bytes.
    pub held: BTreeMap<RemoteKey, Vec<u8>>,
    /// Values skipped since the process started (not a record of this network under its key,
    /// names or addresses this host would not serve, past a cap), for `embedns status`.
    pub skipped: u64,
    /// When a change of each host's records was last seen (ms since the epoch).
    pub changed_at: BTreeMap<String, u64>,
    /// R30's bounds on all of the above together ([`Remote::with_bounds`]; unset: none).
    pub bounds: Option<NetworkBounds>,
    /// Bytes of the values held.
    pub bytes: usize,
    /// The last bound that made a value be skipped, for `embedns status`.
    pub bound_reached: Option<String>,
}

impl Remote {
    /// What the store already holds of the other hosts (`NetworkStore::list_remote`: keys
    /// `<host>/<key>`), written by an earlier sync process: the first listing then removes
    /// what left etcd while none ran. An unreadable file is held with no value, so the
    /// listing rewrites or removes it.
    pub fn held_in_store(listed: Vec<embedns_conf::record::Listed>) -> Remote {
        let mut held = BTreeMap::new();
        for (key, record) in listed {
            let Ok(key) = key.parse::<RemoteKey>() else {
                continue;
            };
            let body = record
                .ok()
                .map(|r| serde_json::to_vec(&r).expect("a record always serializes"))
                .unwrap_or_default();
            held.insert(key, body);
        }
        Remote {
            bytes: held.values().map(Vec::len).sum(),
            held,
            ..Remote::default()
        }
    }

    /// These records, held within `bounds` from now on.
    pub fn with_bounds(mut self, bounds: NetworkBounds) -> Remote {
        self.bounds = Some(bounds);
        self
    }

    /// Which bound taking `len` bytes into `slot` would pass, if any: the host's
    /// [`MAX_RECORDS_PER_HOST`], then the network's (R30).
    fn over_bounds(&self, slot: &RemoteKey, len: usize) -> Option<String> {
        let old = self.held.get(slot).map(Vec::len);
        let first_of_host = RemoteKey::new(&slot.host, AttachmentId::new("", ""));
        let of_host = (self.held.range(first_of_host..))
            .take_while(|(k, _)| k.host == slot.host)
            .take(MAX_RECORDS_PER_HOST)
            .count();
        if old.is_none() && of_host >= MAX_RECORDS_PER_HOST {
            return Some(format!(
                "{MAX_RECORDS_PER_HOST} records of host {}",
                slot.host
            ));
        }
        let b = self.bounds?;
        if old.is_none() && self.held.len() >= b.records {
            return Some(format!("{} records", b.records));
        }
        if self.bytes - old.unwrap_or(0) + len > b.bytes {
            return Some(format!("{} bytes", b.bytes));
        }
        if old.is_none() && of_host == 0 && self.hosts() >= b.hosts {
            return Some(format!("{} hosts", b.hosts));
        }
        None
    }

    /// A listing of the whole network prefix (at a (re)connection): the changes that make the
    /// local copy equal to it, this host's keys (`me`) left out.
    pub fn relist(
        &mut self,
        network: &str,
        me: &str,
        listed: impl IntoIterator<Item = (RemoteKey, Vec<u8>)>,
    ) -> Vec<RemoteChange> {
        let listed: BTreeMap<_, _> = listed.into_iter().filter(|(k, _)| k.host != me).collect();
        let mut changes = Vec::new();
        for key in self.held.keys() {
            if !listed.contains_key(key) {
                changes.push(RemoteChange::Remove(key.clone()));
            }
        }
        let gone: Vec<_> = self
            .held
            .keys()
            .filter(|k| !listed.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            self.held.remove(&k);
        }
        for (key, body) in listed {
            changes.extend(self.put(network, key, body));
        }
        changes
    }

    /// A put of another host's key: the change, unless the value is the one held or is not a
    /// record of this network under its key (logged and skipped: a bad value written by hand
    /// must not take the sync down).
    pub fn put(&mut self, network: &str, slot: RemoteKey, body: Vec<u8>) -> Option<RemoteChange> {
        if self.held.get(&slot) == Some(&body) {
            return None;
        }
        let (host, key) = (slot.host.as_str(), slot.attachment.to_string());
        let key = key.as_str();
        if body.len() > MAX_VALUE_BYTES {
            tracing::warn!(
                host,
                key,
                bytes = body.len(),
                "skipped: over {MAX_VALUE_BYTES} bytes"
            );
            self.skipped += 1;
            return self.remove(&slot);
        }
        if let Some(bound) = self.over_bounds(&slot, body.len()) {
            tracing::warn!(host, key, "skipped: the bound of {bound} is reached");
            self.skipped += 1;
            self.bound_reached = Some(bound);
            return None;
        }
        let record = match PeerRecord::decode(&body) {
            Ok(p) if p.network == network && p.attachment() == slot.attachment => {
                match answerable(&p.clone().into_record()) {
                    Ok(()) => p.into_record(),
                    Err(e) => {
                        tracing::warn!(host, key, "skipped: {e}");
                        self.skipped += 1;
                        return self.remove(&slot);
                    }
                }
            }
            Ok(r) => {
                tracing::warn!(
                    host,
                    key,
                    "skipped: a record of {}/{} under this key",
                    r.network,
                    r.key()
                );
                self.skipped += 1;
                return self.remove(&slot);
            }
            Err(e) => {
                tracing::warn!(host, key, "skipped: not a record: {e}");
                self.skipped += 1;
                return self.remove(&slot);
            }
        };
        self.bytes += body.len();
        self.changed_at
            .insert(slot.host.clone(), embedns_conf::multihost::shared::now_ms());
        let host = slot.host.clone();
        if let Some(old) = self.held.insert(slot, body) {
            self.bytes -= old.len();
        }
        Some(RemoteChange::Put {
            host,
            record: Box::new(record),
        })
    }

    /// A delete of another host's key: the change, if it was held.
    pub fn remove(&mut self, key: &RemoteKey) -> Option<RemoteChange> {
        let old = self.held.remove(key)?;
        self.bytes -= old.len();
        // Only for a host held here: deletes of hosts never held grow nothing (R30).
        self.changed_at
            .insert(key.host.clone(), embedns_conf::multihost::shared::now_ms());
        Some(RemoteChange::Remove(key.clone()))
    }

    /// Every other host seen: those with records held here and those holding their claim
    /// (`claims`), with their record count and last change seen, for `embedns status`.
    pub fn hosts_seen(&self, claims: &std::collections::BTreeSet<String>) -> Vec<RemoteHost> {
        let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
        for k in self.held.keys() {
            *per_host.entry(k.host.as_str()).or_insert(0) += 1;
        }
        let mut names: std::collections::BTreeSet<&str> = per_host.keys().copied().collect();
        names.extend(claims.iter().map(String::as_str));
        (names.into_iter())
            .map(|name| RemoteHost {
                name: name.to_string(),
                records: per_host.get(name).copied().unwrap_or(0),
                claimed: claims.contains(name),
                changed_at_ms: self.changed_at.get(name).copied().unwrap_or(0),
            })
            .collect()
    }

    /// How many hosts the held records come from.
    pub fn hosts(&self) -> usize {
        let mut hosts: Vec<&String> = self.held.keys().map(|k| &k.host).collect();
        hosts.dedup();
        hosts.len()
    }
}

/// Whether another host's record can be answered as this host's are: names and aliases
/// valid DNS names (normalized), as the plugin makes them. An older or hand-written value
/// could hold anything.
/// Whether `ip` is an address a container on a network could have: not loopback,
/// unspecified, multicast, link-local (169.254.0.0/16, where clouds serve their metadata;
/// fe80::/10), nor an IPv4 address written as IPv6 (`::ffff:127.0.0.1` is loopback to a
/// client that takes it).
fn a_containers(ip: &std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let special = ip.is_loopback() || ip.is_unspecified() || ip.is_multicast();
    let other = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6.to_ipv4_mapped().is_some(),
    };
    !special && !other
}

fn answerable(r: &Record) -> Result<(), embedns_conf::ConfError> {
    use embedns_conf::names::{normalize, served_name};
    let bad = |m: String| Err(embedns_conf::ConfError::InvalidConfig(m));
    if r.names().count() > MAX_NAMES {
        return bad(format!("over {MAX_NAMES} names"));
    }
    for ip in &r.ips {
        if !a_containers(ip) {
            return bad(format!("address {ip} is no container's"));
        }
    }
    for n in r.names().chain(r.domain_name.as_deref()) {
        if !served_name("name", n)? {
            return Err(embedns_conf::ConfError::InvalidConfig(format!(
                "name {n:?} is not a DNS name"
            )));
        }
        if normalize(n) != n {
            return Err(embedns_conf::ConfError::InvalidConfig(format!(
                "name {n:?} is not normalized"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rk(host: &str, attachment: &str) -> RemoteKey {
        RemoteKey::new(host, attachment.parse().unwrap())
    }

    fn body(network: &str, cid: &str, name: &str) -> Vec<u8> {
        let r = Record::with_defaults(
            network,
            cid,
            Some(name),
            &[],
            vec!["10.1.0.2".parse().unwrap()],
        );
        serde_json::to_vec(&r).unwrap()
    }

    #[test]
    fn r31_addresses_no_container_has_are_refused() {
        for bad in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "224.0.0.1",
            "169.254.169.254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.0.2",
        ] {
            assert!(!a_containers(&bad.parse().unwrap()), "{bad}");
        }
        for good in ["10.1.0.2", "192.0.2.7", "fd00::2", "2001:db8::5"] {
            assert!(a_containers(&good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn r30_past_a_network_bound_values_are_skipped_counted_and_named() {
        let bounds = NetworkBounds {
            records: 3,
            bytes: 1 << 20,
            hosts: 2,
        };
        let mut remote = Remote::default().with_bounds(bounds);
        let put = |r: &mut Remote, host: &str, cid: &str| {
            r.put("n", rk(host, &format!("{cid}@eth0")), body("n", cid, cid))
        };
        assert!(put(&mut remote, "a", "c1").is_some());
        assert!(put(&mut remote, "a", "c2").is_some());
        assert!(put(&mut remote, "b", "c3").is_some());
        // A fourth record, and a third host: skipped, counted, named.
        assert!(put(&mut remote, "a", "c4").is_none());
        assert_eq!(remote.bound_reached.as_deref(), Some("3 records"));
        assert!(remote.remove(&rk("a", "c2@eth0")).is_some());
        assert!(put(&mut remote, "c", "c5").is_none());
        assert_eq!(remote.bound_reached.as_deref(), Some("2 hosts"));
        assert_eq!(remote.skipped, 2);
        // Bytes: a value that would take the total past the bound.
        let mut small = Remote::default().with_bounds(NetworkBounds {
            bytes: body("n", "c1", "c1").len() + 10,
            ..bounds
        });
        assert!(put(&mut small, "a", "c1").is_some());
        assert!(put(&mut small, "a", "c2").is_none());
        assert!(small.bound_reached.as_deref().unwrap().ends_with("bytes"));
        // Replacing a held value counts its old bytes out.
        assert_eq!(
            small.bytes,
            small.held.values().map(Vec::len).sum::<usize>()
        );
        // A delete of a host never held grows nothing.
        assert!(small.remove(&rk("z", "c9@eth0")).is_none());
        assert!(!small.changed_at.contains_key("z"));
    }

    #[test]
    fn keys_split_into_host_and_attachment() {
        let p = "/embedns/n/";
        assert_eq!(
            read_key(p, "/embedns/n/a/c1@eth0"),
            Some(NetworkKey::Record {
                host: "a",
                attachment: AttachmentId::new("c1", "eth0")
            })
        );
        assert_eq!(
            read_key(p, "/embedns/n/a"),
            Some(NetworkKey::Claim { host: "a" })
        );
        assert_eq!(read_key(p, "/embedns/n/a/"), None);
        assert_eq!(read_key(p, "/embedns/n/a/b/c"), None);
        assert_eq!(read_key(p, "/embedns/m/a/c1@eth0"), None);
        assert_eq!(read_key(p, "/embedns/n/../c1@eth0"), None);
        assert_eq!(read_key(p, "/embedns/n/./c1@eth0"), None);
    }

    #[test]
    fn a_plan_puts_what_changed_and_deletes_what_left() {
        let mut published = Published::default();
        published.keys.insert(
            "c1@eth0".into(),
            Put {
                body: b"one".to_vec(),
                mod_revision: 5,
                lease: 7,
            },
        );
        published.keys.insert(
            "c2@eth0".into(),
            Put {
                body: b"two".to_vec(),
                mod_revision: 6,
                lease: 7,
            },
        );
        let keys = ["c1@eth0".to_string(), "c2@eth0".into(), "c3@eth0".into()];
        let local = |k: &str| match k {
            "c1@eth0" => Some(b"one".to_vec()),
            "c3@eth0" => Some(b"three".to_vec()),
            _ => None,
        };
        let plan = published.plan(&keys, local, 7);
        assert_eq!(plan.put, vec![("c3@eth0".to_string(), b"three".to_vec())]);
        assert_eq!(plan.delete, vec![("c2@eth0".to_string(), 6)]);
        // A new lease (a reconnection) puts everything again.
        assert_eq!(published.plan(&keys, local, 8).put.len(), 2);
    }

    #[test]
    fn a_relist_replaces_what_is_held_and_leaves_our_own_keys_out() {
        let mut remote = Remote::default();
        let a1 = body("n", "c1", "web");
        assert!(remote.put("n", rk("a", "c1@eth0"), a1.clone()).is_some());
        assert!(
            remote.put("n", rk("a", "c1@eth0"), a1.clone()).is_none(),
            "same value"
        );
        assert!(remote
            .put("n", rk("a", "c9@eth0"), body("n", "c9", "old"))
            .is_some());
        let changes = remote.relist(
            "n",
            "me",
            [
                (rk("a", "c1@eth0"), a1),
                (rk("b", "c2@eth0"), body("n", "c2", "db")),
                (rk("me", "c3@eth0"), body("n", "c3", "mine")),
            ],
        );
        let kinds: Vec<String> = changes
            .iter()
            .map(|c| match c {
                RemoteChange::Put { host, record } => format!("put {host}/{}", record.key()),
                RemoteChange::Remove(key) => format!("remove {key}"),
            })
            .collect();
        assert_eq!(kinds, ["remove a/c9@eth0", "put b/c2@eth0"]);
        assert_eq!((remote.held.len(), remote.hosts()), (2, 2));
    }

    #[test]
    fn what_an_earlier_process_left_is_removed_unless_listed() {
        let r = |cid: &str, name: &str| {
            Record::with_defaults("n", cid, Some(name), &[], vec!["10.1.0.2".parse().unwrap()])
        };
        let mut remote = Remote::held_in_store(vec![
            ("a/c1@eth0".into(), Ok(r("c1", "web"))),
            ("a/c2@eth0".into(), Ok(r("c2", "gone"))),
            (
                "b/c3@eth0".into(),
                Err(embedns_conf::ConfError::InvalidConfig("unreadable".into())),
            ),
        ]);
        let listed = [
            (rk("a", "c1@eth0"), body("n", "c1", "web")),
            (rk("b", "c3@eth0"), body("n", "c3", "db")),
        ];
        let changes: Vec<String> = remote
            .relist("n", "me", listed)
            .iter()
            .map(|c| match c {
                RemoteChange::Put { host, record } => format!("put {host}/{}", record.key()),
                RemoteChange::Remove(key) => format!("remove {key}"),
            })
            .collect();
        assert_eq!(changes, ["remove a/c2@eth0", "put b/c3@eth0"]);
    }

    #[test]
    fn values_that_are_not_records_of_the_key_are_skipped() {
        let mut remote = Remote::default();
        assert!(remote
            .put("n", rk("a", "c1@eth0"), b"{garbage".to_vec())
            .is_none());
        assert!(remote
            .put("n", rk("a", "c1@eth0"), body("other", "c1", "x"))
            .is_none());
        assert!(remote
            .put("n", rk("a", "c2@eth0"), body("n", "c1", "x"))
            .is_none());
        for bad in ["bad name\n", "Upper", ""] {
            assert!(remote
                .put("n", rk("a", "c1@eth0"), body("n", "c1", bad))
                .is_none());
        }
        assert!(remote.held.is_empty());
    }
}

//! What a host publishes in etcd for the other hosts of a shared network: a typed, versioned
//! peer record holding only what they answer from (R27 in `docs/behaviour.md`): the network,
//! the attachment's container ID and ifname, its name, aliases and addresses, and the
//! network's `domainName`. Not the netns path, the host's resolv.conf path, the container's
//! upstreams, search list and timeouts (its own resolver's settings), nor its links (private
//! to the linking container, which is local).
//!
//! On the wire, `"v": 1` and those fields, plus three fields hosts of versions before 1 need
//! to take the value at all (they read it as their whole record): `"netns": ""`,
//! `"ttl"` (the network's, as before) and `"upstreams": {}`. A reader takes a value without
//! `v` (an earlier version's whole record) or with any `v` for the fields it knows, ignoring
//! others: a newer version adds fields, it never changes what these mean; a value lacking one
//! of them is skipped. Mixed versions happen during every rolling upgrade.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::attachment::AttachmentId;
use crate::record::{Record, Upstreams};

/// The version this build writes.
pub const VERSION: u32 = 1;

/// One attachment of another host, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The format's version; 0 for an earlier version's whole record.
    #[serde(default)]
    pub v: u32,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub domain_name: Option<String>,
    /// Its pod namespace (R35); absent from values of releases before it, and when unscoped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl PeerRecord {
    /// What this host publishes of its record `r`.
    pub fn of(r: &Record) -> PeerRecord {
        PeerRecord {
            v: VERSION,
            network: r.network.clone(),
            container_id: r.container_id.clone(),
            ifname: r.ifname.clone(),
            name: r.name.clone(),
            aliases: r.aliases.clone(),
            ips: r.ips.clone(),
            domain_name: r.domain_name.clone(),
            namespace: r.namespace.clone(),
        }
    }

    /// The value put in etcd for `r` (with the fields earlier versions need: module docs).
    pub fn encode(r: &Record) -> Vec<u8> {
        let mut v = serde_json::to_value(PeerRecord::of(r)).expect("a peer record serializes");
        v["netns"] = serde_json::json!("");
        v["ttl"] = serde_json::json!(r.ttl);
        v["upstreams"] = serde_json::to_value(Upstreams::default()).expect("serializes");
        serde_json::to_vec(&v).expect("a peer record serializes")
    }

    /// Reads a value another host published, of any version (module docs).
    pub fn decode(body: &[u8]) -> Result<PeerRecord, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The store's key of the attachment: `CID@IFNAME`.
    pub fn key(&self) -> String {
        self.attachment().to_string()
    }

    /// The attachment this record is of.
    pub fn attachment(&self) -> AttachmentId {
        AttachmentId::new(&self.container_id, &self.ifname)
    }

    /// The record the store keeps of it: what peers answer from, and nothing of the
    /// container's own resolver (no links, upstreams, search list or netns).
    pub fn into_record(self) -> Record {
        let mut r = Record::with_defaults(
            &self.network,
            &self.container_id,
            self.name.as_deref(),
            &[],
            self.ips,
        );
        r.ifname = self.ifname;
        r.aliases = self.aliases;
        r.domain_name = self.domain_name;
        r.namespace = self.namespace;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut r = Record::with_defaults(
            "net",
            "c1",
            Some("web"),
            &["www"],
            vec!["10.0.0.2".parse().unwrap()],
        );
        r.netns = "/run/netns/secret-path".into();
        r.search = vec!["corp.example".into()];
        r.links = vec![crate::record::Link::parse("db:database").unwrap()];
        r.resolver.upstreams.explicit = vec!["10.9.9.9:53".parse().unwrap()];
        r.domain_name = Some("dns.podman".into());
        r
    }

    #[test]
    fn a_host_publishes_only_what_peers_answer_from() {
        let body = PeerRecord::encode(&record());
        let text = String::from_utf8(body.clone()).unwrap();
        for private in ["secret-path", "corp.example", "database", "10.9.9.9"] {
            assert!(!text.contains(private), "{private} published: {text}");
        }
        let peer = PeerRecord::decode(&body).unwrap();
        assert_eq!(peer, PeerRecord::of(&record()));
        assert_eq!(peer.v, VERSION);
        let r = peer.into_record();
        assert_eq!(
            (r.name.as_deref(), r.aliases.clone()),
            (Some("web"), vec!["www".to_string()])
        );
        assert_eq!(r.domain_name.as_deref(), Some("dns.podman"));
        assert!(r.links.is_empty() && r.search.is_empty() && r.netns.is_empty());
    }

    #[test]
    fn earlier_and_later_versions_are_read_for_what_this_one_knows() {
        // An earlier version's value: its whole record. Read by this one.
        let old = serde_json::to_vec(&record()).unwrap();
        let peer = PeerRecord::decode(&old).unwrap();
        assert_eq!((peer.v, peer.name.as_deref()), (0, Some("web")));
        // This version's value, read by an earlier one as its whole record.
        let taken: Record = serde_json::from_slice(&PeerRecord::encode(&record())).unwrap();
        assert_eq!((taken.name.as_deref(), taken.ips.len()), (Some("web"), 1));
        // A later version with fields this one does not know.
        let later = br#"{"v":2,"network":"net","container_id":"c1","ifname":"eth0","name":"web","ips":["10.0.0.2"],"weight":3}"#;
        assert_eq!(
            PeerRecord::decode(later).unwrap().name.as_deref(),
            Some("web")
        );
        // One lacking a field this version needs is not taken.
        assert!(PeerRecord::decode(br#"{"v":2,"network":"net","container_id":"c1"}"#).is_err());
    }
}

//! One attachment of a container to a network, as the plugin stores it and resolvers read it.

use crate::attachment::AttachmentId;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{defaults, names, ConfError};

/// A record file's key and what reading it gave (a corrupt file is reported, not fatal).
pub type Listed = (String, Result<Record, crate::ConfError>);

/// A link `alias -> target` (Docker `--link target:alias`), visible to its owner only (R4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The target container's name, normalized.
    pub name: String,
    /// The name the owner uses for it, normalized.
    pub alias: String,
}

impl Link {
    /// Parses Docker's `target:alias` form (`target` alone links under its own name).
    pub fn parse(s: &str) -> Result<Link, ConfError> {
        let (name, alias) = s.split_once(':').unwrap_or((s, s));
        Link::new(name, alias)
    }

    /// `runtimeConfig.links` entries: `"target:alias"` or `{"name": .., "alias": ..}`.
    pub fn from_json(v: &Value) -> Result<Link, ConfError> {
        match v {
            Value::String(s) => Link::parse(s),
            Value::Object(m) => match (m.get("name"), m.get("alias")) {
                (Some(Value::String(n)), Some(Value::String(a))) => Link::new(n, a),
                (Some(Value::String(n)), None) => Link::new(n, n),
                _ => Err(ConfError::InvalidConfig(format!(
                    "runtimeConfig.links: {v} needs string fields \"name\" and \"alias\""
                ))),
            },
            _ => Err(ConfError::InvalidConfig(format!(
                "runtimeConfig.links: {v} is neither \"target:alias\" nor an object"
            ))),
        }
    }

    fn new(name: &str, alias: &str) -> Result<Link, ConfError> {
        for (what, n) in [("link target", name), ("link alias", alias)] {
            if !names::served_name(what, n)? {
                return Err(ConfError::InvalidConfig(format!(
                    "{what} {n:?}: DNS cannot carry it (labels of 1 to 63 characters, 253 in all)"
                )));
            }
        }
        Ok(Link {
            name: names::normalize(name),
            alias: names::normalize(alias),
        })
    }
}

/// Where a resolver sends what it does not answer itself (R17, R18, R21).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstreams {
    /// Explicit upstreams (conf or capability), queried from the container's netns.
    #[serde(default)]
    pub explicit: Vec<SocketAddr>,
    /// The host resolv.conf to read upstreams from (and watch, R22), queried from the host
    /// netns. `None` when explicit upstreams exist or the network is internal.
    #[serde(default)]
    pub host_resolv_conf: Option<PathBuf>,
}

/// The resolver's cache of forwarded answers (R34): its bound and its TTL caps. A record
/// written without it (by an older plugin) has the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSettings {
    /// Bytes of answers held at most; 0 turns the cache off.
    pub size: usize,
    /// The longest a positive answer is served from the cache, in seconds.
    pub max_ttl: u32,
    /// The longest an NXDOMAIN or NODATA answer is, in seconds (0: never cached).
    pub max_negative_ttl: u32,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            size: defaults::CACHE_SIZE,
            max_ttl: defaults::CACHE_MAX_TTL,
            max_negative_ttl: defaults::CACHE_MAX_NEGATIVE_TTL,
        }
    }
}

/// How a container's own resolver forwards what it does not answer (R15-R22, R34): settings
/// no other container and no other host reads (`peer.rs` publishes none of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolverSettings {
    pub upstreams: Upstreams,
    #[serde(default = "defaults::upstream_timeout_ms")]
    pub upstream_timeout_ms: u64,
    #[serde(default = "defaults::max_inflight")]
    pub max_inflight: usize,
    #[serde(default)]
    pub cache: CacheSettings,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            upstreams: Upstreams::default(),
            upstream_timeout_ms: defaults::UPSTREAM_TIMEOUT_MS,
            max_inflight: defaults::MAX_INFLIGHT,
            cache: CacheSettings::default(),
        }
    }
}

/// A container's attachment to one network, as its record file in the store holds it: what
/// the network's index is built from (its names, addresses, links) and its own resolver's
/// settings. The file is read by resolvers of other releases (an upgrade in place leaves the
/// old ones running): its field names and shapes are a format (`a_record_file_keeps_its_format`
/// pins them), and what another host reads is `peer::PeerRecord`, never this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// The container name (R2), normalized; `None` for an unnamed container.
    #[serde(default)]
    pub name: Option<String>,
    /// Network aliases (R3), normalized.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// This container's links (R4).
    #[serde(default)]
    pub links: Vec<Link>,
    pub ips: Vec<IpAddr>,
    pub netns: String,
    /// `domainName` of the network: `name.<domain>` resolves too.
    #[serde(default)]
    pub domain_name: Option<String>,
    /// The search list of the container's resolv.conf, normalized: `name.<search domain>`
    /// of a local name is answered locally (clients such as busybox nslookup ask only those).
    #[serde(default)]
    pub search: Vec<String>,
    pub ttl: u32,
    #[serde(default)]
    pub internal: bool,
    /// The pod namespace its names are scoped to (R35): CNI_ARGS `K8S_POD_NAMESPACE`,
    /// normalized, unless the conf's `scopeByNamespace` is false. `None`: the network's whole
    /// set of names (R1), as every attachment of a release before R35.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its own resolver's forwarding, kept in the same file under the same names.
    #[serde(flatten)]
    pub resolver: ResolverSettings,
}

impl Record {
    /// Every name this record answers to on its network (container name first).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.name
            .iter()
            .chain(self.aliases.iter())
            .map(String::as_str)
    }

    /// An attachment on `eth0` with the plugin's defaults (TTL, upstream timeout, in-flight
    /// cap, no upstreams) around the given identity: for tests, fuzzing and tools.
    pub fn with_defaults(
        network: &str,
        container_id: &str,
        name: Option<&str>,
        aliases: &[&str],
        ips: Vec<IpAddr>,
    ) -> Record {
        Record {
            network: network.into(),
            container_id: container_id.into(),
            ifname: "eth0".into(),
            name: name.map(str::to_string),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            links: vec![],
            ips,
            netns: String::new(),
            domain_name: None,
            search: vec![],
            ttl: defaults::TTL,
            internal: false,
            namespace: None,
            resolver: ResolverSettings::default(),
        }
    }

    /// The store's key of an attachment: unique per (container, interface) on a network.
    pub fn key(&self) -> String {
        self.attachment().to_string()
    }

    /// The attachment this record is of.
    pub fn attachment(&self) -> AttachmentId {
        AttachmentId::new(&self.container_id, &self.ifname)
    }
}

/// The index's name for `name` within pod namespace `namespace` (R35): a `/` no DNS name
/// the index holds can contain, so a scoped name never meets a plain one.
pub fn scoped_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record file as this and earlier releases write it: every field under its name.
    const FILE: &str = r#"{
      "network": "n1", "container_id": "c1", "ifname": "eth0", "name": "web",
      "aliases": ["www"], "links": [{"name": "db", "alias": "database"}],
      "ips": ["10.0.0.2"], "netns": "/run/netns/c1", "domain_name": "dns.podman",
      "search": ["corp.example"], "ttl": 600, "internal": false,
      "upstreams": {"explicit": ["10.9.9.9:53"], "host_resolv_conf": null},
      "upstream_timeout_ms": 2000, "max_inflight": 1024,
      "cache": {"size": 262144, "max_ttl": 30, "max_negative_ttl": 5}
    }"#;

    #[test]
    fn a_record_file_keeps_its_format() {
        let r: Record = serde_json::from_str(FILE).unwrap();
        assert_eq!(
            r.resolver.upstreams.explicit,
            ["10.9.9.9:53".parse().unwrap()]
        );
        assert_eq!(r.resolver.cache.max_ttl, 30);
        let written = serde_json::to_value(&r).unwrap();
        let file: Value = serde_json::from_str(FILE).unwrap();
        assert_eq!(written, file, "the same fields, names and shapes");
        // A file of a release before the cache and the timeouts: their defaults.
        let mut old = file.as_object().unwrap().clone();
        for later in ["cache", "upstream_timeout_ms", "max_inflight"] {
            old.remove(later);
        }
        let r: Record = serde_json::from_value(Value::Object(old)).unwrap();
        assert_eq!(
            r.resolver,
            ResolverSettings {
                upstreams: r.resolver.upstreams.clone(),
                ..ResolverSettings::default()
            }
        );
    }

    #[test]
    fn links_in_all_forms() {
        // R4: "target:alias", {"name","alias"}, and a bare target.
        assert_eq!(
            Link::parse("Web:w").unwrap(),
            Link {
                name: "web".into(),
                alias: "w".into()
            }
        );
        let j: Value = serde_json::json!({"name": "db", "alias": "database"});
        assert_eq!(Link::from_json(&j).unwrap().alias, "database");
        assert_eq!(Link::parse("db").unwrap().alias, "db");
        assert!(Link::parse("a/b:c").is_err());
        assert!(Link::from_json(&serde_json::json!(3)).is_err());
    }
}

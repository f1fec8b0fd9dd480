//! The etcd key layout of a shared network, in one place: the keys each host writes, the one
//! grammar that reads any key back (R30), and the key another host's attachment has in the
//! store.
//!
//! ```text
//! <prefix>/<network>/                          the network: every host's keys (listed, watched)
//! <prefix>/<network>/<host>                    the host's claim of its name (R32), one exact key
//! <prefix>/<network>/<host>/<cid>@<ifname>     one attachment's peer record (R27, `peer.rs`)
//! ```
//!
//! A host's records share the prefix `<prefix>/<network>/<host>/`, which is no prefix of
//! another host's (`<host>x/`), and its claim is a key of its own, not a prefix: etcd's
//! prefix-based RBAC can grant each host exactly its keys (docs/multihost.md's recipe).
//!
//! The keys themselves are typed: an [`AttachmentId`] (`<cid>@<ifname>`, a record's key in
//! the store and in etcd) and a [`StoreKey`] (this host's attachment, or `<host>/<cid>@<ifname>`
//! for another host's), each with its one text form (`Display`) and its one reading
//! (`FromStr`).

use std::fmt;
use std::str::FromStr;

/// A key that is no key of its kind, and why (the message names the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// One attachment of a container: `<cid>@<ifname>` (the container ID may hold an `@`, the
/// interface name may not). Unique per network; a record's key in the store and the last
/// segment of its key in etcd.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttachmentId {
    pub container_id: String,
    pub ifname: String,
}

impl AttachmentId {
    pub fn new(container_id: &str, ifname: &str) -> AttachmentId {
        AttachmentId {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        }
    }

    /// Reads `text` as strictly as the plugin checks CNI_CONTAINERID and CNI_IFNAME, and
    /// within a record file's name (255 bytes): for keys from etcd, which anyone able to write
    /// the prefix could make.
    pub fn checked(text: &str) -> Result<AttachmentId, KeyError> {
        let id: AttachmentId = text.parse()?;
        let why = |e: crate::ConfError| KeyError(format!("{text:?}: {e}"));
        crate::names::container_id(&id.container_id).map_err(why)?;
        crate::names::ifname(&id.ifname).map_err(why)?;
        if text.len() + crate::paths::RECORD_SUFFIX.len() > 255 {
            return Err(KeyError(format!(
                "{text:?}: too long for a record's file name"
            )));
        }
        Ok(id)
    }
}

impl fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.container_id, self.ifname)
    }
}

impl FromStr for AttachmentId {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<AttachmentId, KeyError> {
        match text.rsplit_once('@') {
            Some((cid, ifname)) if !cid.is_empty() && !ifname.is_empty() => {
                Ok(AttachmentId::new(cid, ifname))
            }
            _ => Err(KeyError(format!("{text:?}: not <containerID>@<ifname>"))),
        }
    }
}

/// Another host's attachment: `<host>/<cid>@<ifname>` in the store and the index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteKey {
    pub host: String,
    pub attachment: AttachmentId,
}

impl RemoteKey {
    pub fn new(host: &str, attachment: AttachmentId) -> RemoteKey {
        RemoteKey {
            host: host.to_string(),
            attachment,
        }
    }
}

impl fmt::Display for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.attachment)
    }
}

impl FromStr for RemoteKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<RemoteKey, KeyError> {
        match text.split_once('/') {
            Some((host, attachment)) if !host.is_empty() => {
                Ok(RemoteKey::new(host, attachment.parse()?))
            }
            _ => Err(KeyError(format!(
                "{text:?}: not <host>/<containerID>@<ifname>"
            ))),
        }
    }
}

/// A record's key in the store and the index: this host's attachment (`<cid>@<ifname>`), or
/// another host's ([`RemoteKey`], written by the sync process). A local key has no `/`, so
/// the two never collide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreKey {
    Local(AttachmentId),
    Remote(RemoteKey),
}

impl StoreKey {
    /// Whether the key `text` (as the store and the index spell it) is another host's: the
    /// test without reading the key whole, for the query path.
    pub fn is_remote(text: &str) -> bool {
        text.contains('/')
    }

    pub fn attachment(&self) -> &AttachmentId {
        match self {
            StoreKey::Local(a) => a,
            StoreKey::Remote(r) => &r.attachment,
        }
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreKey::Local(a) => a.fmt(f),
            StoreKey::Remote(r) => r.fmt(f),
        }
    }
}

impl FromStr for StoreKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<StoreKey, KeyError> {
        if StoreKey::is_remote(text) {
            Ok(StoreKey::Remote(text.parse()?))
        } else {
            Ok(StoreKey::Local(text.parse()?))
        }
    }
}

/// The keys of one network under one prefix.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    prefix: &'a str,
    network: &'a str,
}

impl<'a> Layout<'a> {
    /// The layout of `network` under `prefix` (`etcd.prefix`, without a trailing `/`).
    pub fn new(prefix: &'a str, network: &'a str) -> Layout<'a> {
        Layout { prefix, network }
    }

    /// `<prefix>/<network>/`: every host's keys of the network.
    pub fn network(&self) -> String {
        format!("{}/{}/", self.prefix, self.network)
    }

    /// `<prefix>/<network>/<host>`: `host`'s claim of its name on the network.
    pub fn claim(&self, host: &str) -> String {
        format!("{}{host}", self.network())
    }

    /// `<prefix>/<network>/<host>/`: every record of `host`.
    pub fn host_records(&self, host: &str) -> String {
        format!("{}{host}/", self.network())
    }

    /// `<prefix>/<network>/<host>/<attachment>`: the record of `host`'s attachment
    /// (`<cid>@<ifname>`, the record's key in the store).
    pub fn record(&self, host: &str, attachment: &str) -> String {
        format!("{}{attachment}", self.host_records(host))
    }

    /// Reads `key` with the one grammar (see [`parse`]).
    pub fn parse<'k>(&self, key: &'k str) -> Result<NetworkKey<'k>, KeyError> {
        parse(&self.network(), key)
    }
}

/// A key under a network's prefix in etcd, as the one grammar reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkKey<'k> {
    /// `<host>/<cid>@<ifname>`: an attachment of `host`.
    Record {
        host: &'k str,
        attachment: AttachmentId,
    },
    /// `<host>`: the host's claim of its name.
    Claim { host: &'k str },
}

/// Reads `key`, which lies under `network_prefix` ([`Layout::network`]): a record's key or a
/// host's claim, each part checked as strictly as the plugin checks its own (the host as
/// `etcd.host`, the attachment by [`AttachmentId::checked`]). `Err` says why another key,
/// which anyone able to write the prefix could make (`../<cid>@eth0`, `./x`, `a/b/c`), is no
/// key of ours: the caller skips it with one log line. What a host segment names becomes a
/// directory of the store, so this is the only way from etcd into a path.
pub fn parse<'k>(network_prefix: &str, key: &'k str) -> Result<NetworkKey<'k>, KeyError> {
    let rest = key
        .strip_prefix(network_prefix)
        .ok_or_else(|| KeyError(format!("{key:?} is not under {network_prefix:?}")))?;
    let (host, attachment) = match rest.split_once('/') {
        None => (rest, None),
        Some((h, a)) => (h, Some(a)),
    };
    crate::names::host(host).map_err(|e| KeyError(format!("{key:?}: {e}")))?;
    let Some(attachment) = attachment else {
        return Ok(NetworkKey::Claim { host });
    };
    if !attachment.contains('@') {
        return Err(KeyError(format!(
            "{key:?}: not <host>/<containerID>@<ifname>"
        )));
    }
    let attachment =
        AttachmentId::checked(attachment).map_err(|e| KeyError(format!("{key:?}: {e}")))?;
    Ok(NetworkKey::Record { host, attachment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_written_reads_back_as_what_it_is() {
        let l = Layout::new("/embedns", "n");
        assert_eq!(l.parse(&l.claim("a")), Ok(NetworkKey::Claim { host: "a" }));
        assert_eq!(
            l.parse(&l.record("a", "c1@eth0")),
            Ok(NetworkKey::Record {
                host: "a",
                attachment: AttachmentId::new("c1", "eth0")
            })
        );
        // RBAC by prefix: no host's records prefix is a prefix of another host's keys.
        assert!(!l.claim("ab").starts_with(&l.host_records("a")));
        assert!(!l.record("ab", "c1@eth0").starts_with(&l.host_records("a")));
    }

    #[test]
    fn network_keys_are_read_strictly() {
        let p = "/embedns/n/";
        let rec = |host, attachment: &str| {
            Ok(NetworkKey::Record {
                host,
                attachment: attachment.parse().unwrap(),
            })
        };
        assert_eq!(parse(p, "/embedns/n/a/c1@eth0"), rec("a", "c1@eth0"));
        assert_eq!(
            parse(p, "/embedns/n/host-1.b/c1@eth0"),
            rec("host-1.b", "c1@eth0")
        );
        assert_eq!(
            parse(p, "/embedns/n/a"),
            Ok(NetworkKey::Claim { host: "a" })
        );
        for bad in [
            "/embedns/n/../c1@eth0",
            "/embedns/n/./c1@eth0",
            "/embedns/n/a/",
            "/embedns/n/a/b/c1@eth0",
            "/embedns/n/a/c1",
            "/embedns/n/a/../x@eth0",
            "/embedns/n/a/c1@eth0/x",
            "/embedns/n/a/c1@waytoolonginterface",
            "/embedns/n/",
            "/embedns/m/a/c1@eth0",
        ] {
            assert!(parse(p, bad).is_err(), "{bad}");
        }
        let long = format!("/embedns/n/a/{}@eth0", "c".repeat(250));
        assert!(parse(p, &long).is_err());
    }

    #[test]
    fn an_attachment_reads_back_as_it_is_written_and_only_its_last_at_sign_splits() {
        let a = AttachmentId::new("c@1", "eth0");
        assert_eq!(a.to_string(), "c@1@eth0");
        assert_eq!("c@1@eth0".parse(), Ok(a));
        for bad in ["c1", "@eth0", "c1@", ""] {
            assert!(bad.parse::<AttachmentId>().is_err(), "{bad}");
        }
        assert!(AttachmentId::checked("c1@waytoolonginterface").is_err());
        assert!(AttachmentId::checked("../x@eth0").is_err());
        assert_eq!(
            AttachmentId::checked("c1@eth0"),
            Ok(AttachmentId::new("c1", "eth0"))
        );
    }

    #[test]
    fn a_store_key_is_local_without_a_slash_and_another_hosts_with_one() {
        let local = StoreKey::Local(AttachmentId::new("c1", "eth0"));
        let remote = StoreKey::Remote(RemoteKey::new("node2", AttachmentId::new("c1", "eth0")));
        assert_eq!(local.to_string(), "c1@eth0");
        assert_eq!(remote.to_string(), "node2/c1@eth0");
        for k in [&local, &remote] {
            assert_eq!(k.to_string().parse::<StoreKey>().as_ref(), Ok(k));
            assert_eq!(StoreKey::is_remote(&k.to_string()), k == &remote);
            assert_eq!(k.attachment(), &AttachmentId::new("c1", "eth0"));
        }
        assert!("/c1@eth0".parse::<StoreKey>().is_err());
        assert!("node2/c1".parse::<StoreKey>().is_err());
    }
}

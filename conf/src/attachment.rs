//! An attachment's identity and the store's keys, typed: an [`AttachmentId`]
//! (`<cid>@<ifname>`, a record's key in the store and the last segment of its key in etcd),
//! a [`RemoteKey`] (`<host>/<cid>@<ifname>`, another host's in the store) and a [`StoreKey`]
//! (either), each with its one text form (`Display`) and its one reading (`FromStr`).

use std::fmt;
use std::str::FromStr;

/// A key that is no key of its kind, and why (the message names the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub(crate) String);

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

#[cfg(test)]
mod tests {
    use super::*;

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

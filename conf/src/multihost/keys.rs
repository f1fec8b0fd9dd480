//! The etcd key layout of a shared network, in one place: the keys each host writes, and the
//! one grammar that reads any key back (R30).
//!
//! ```text
//! <prefix>/<network>/                          the network: every host's keys (listed, watched)
//! <prefix>/<network>/<host>                    the host's claim of its name (R32), one exact key
//! <prefix>/<network>/<host>/<cid>@<ifname>     one attachment's peer record (R27, `peer.rs`)
//! ```
//!
//! A host's records share the prefix `<prefix>/<network>/<host>/`, which is no prefix of
//! another host's (`<host>x/`), and its claim is a key of its own, not a prefix: etcd's
//! prefix-based RBAC can grant each host exactly its keys (docs/multihost.md's recipe). The
//! attachment a record's key names is an [`AttachmentId`]; another host's in the store, a
//! `RemoteKey` (`attachment.rs`).

use crate::attachment::{AttachmentId, KeyError};

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
}

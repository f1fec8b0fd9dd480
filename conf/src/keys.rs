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
    pub fn parse<'k>(&self, key: &'k str) -> Result<NetworkKey<'k>, String> {
        parse(&self.network(), key)
    }
}

/// A key under a network's prefix in etcd, as the one grammar reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkKey<'k> {
    /// `<host>/<cid>@<ifname>`: an attachment of `host`, key `attachment` (`<cid>@<ifname>`).
    Record { host: &'k str, attachment: &'k str },
    /// `<host>`: the host's claim of its name.
    Claim { host: &'k str },
}

/// Reads `key`, which lies under `network_prefix` ([`Layout::network`]): a record's key or a
/// host's claim, each part checked as strictly as the plugin checks its own (the host as
/// `etcd.host`, the container ID and ifname as CNI_CONTAINERID and CNI_IFNAME, the record's
/// file name within 255 bytes). `Err` says why another key, which anyone able to write the
/// prefix could make (`../<cid>@eth0`, `./x`, `a/b/c`), is no key of ours: the caller skips
/// it with one log line. What a host segment names becomes a directory of the store, so this
/// is the only way from etcd into a path.
pub fn parse<'k>(network_prefix: &str, key: &'k str) -> Result<NetworkKey<'k>, String> {
    let rest = key
        .strip_prefix(network_prefix)
        .ok_or_else(|| format!("{key:?} is not under {network_prefix:?}"))?;
    let (host, attachment) = match rest.split_once('/') {
        None => (rest, None),
        Some((h, a)) => (h, Some(a)),
    };
    crate::names::host(host).map_err(|e| format!("{key:?}: {e}"))?;
    let Some(attachment) = attachment else {
        return Ok(NetworkKey::Claim { host });
    };
    let (cid, ifname) = attachment
        .rsplit_once('@')
        .ok_or_else(|| format!("{key:?}: not <host>/<containerID>@<ifname>"))?;
    crate::names::container_id(cid).map_err(|e| format!("{key:?}: {e}"))?;
    crate::names::ifname(ifname).map_err(|e| format!("{key:?}: {e}"))?;
    if attachment.len() + crate::paths::RECORD_SUFFIX.len() > 255 {
        return Err(format!("{key:?}: too long for a record's file name"));
    }
    Ok(NetworkKey::Record { host, attachment })
}

/// The key of another host's attachment in the store and the index: `<host>/<cid>@<ifname>`
/// (a local key has no `/`, so the two never collide).
pub fn store_key(host: &str, attachment: &str) -> String {
    format!("{host}/{attachment}")
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
                attachment: "c1@eth0"
            })
        );
        // RBAC by prefix: no host's records prefix is a prefix of another host's keys.
        assert!(!l.claim("ab").starts_with(&l.host_records("a")));
        assert!(!l.record("ab", "c1@eth0").starts_with(&l.host_records("a")));
    }

    #[test]
    fn network_keys_are_read_strictly() {
        let p = "/embedns/n/";
        let rec = |host, attachment| Ok(NetworkKey::Record { host, attachment });
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

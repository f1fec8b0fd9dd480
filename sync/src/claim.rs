//! Who a host is on a shared network (R32): the random id its name's claim carries, and which
//! keys are hosts' claims.

use std::io::Write;

use crate::etcd::{Created, Etcd};
use anyhow::bail;
use embedns_conf::multihost::shared::SyncStatus;
use embedns_conf::paths::StatePaths;

/// What this host's claim of its name says (R32), who claims: `<host id> <state directory>`
/// (one machine may run several embedns with state directories of their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimant(String);

impl Claimant {
    /// This machine's ([`host_id`]) with the state directory of `paths`.
    pub(crate) fn of(paths: &StatePaths) -> Claimant {
        Claimant(format!("{} {}", host_id(paths), paths.root().display()))
    }

    /// The claim's value in etcd.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// This host's claim of its name on a network (R32).
pub(crate) struct Claim<'a> {
    /// `<prefix>/<network>/<host>`.
    pub key: String,
    /// What the claim says, who claims: `<host id> <state directory>`.
    pub claimant: &'a str,
    pub host: &'a str,
    pub network: &'a str,
}

impl Claim<'_> {
    /// Claims this host's name on the network with the lease (R32): made if absent, taken over if
    /// an earlier process of this machine and state directory holds it (its lease not yet
    /// expired), refused if another holds it: that host publishes under the name, and two
    /// publishers would delete each other's records. The session then fails, is retried with
    /// the backoff, and the status says why, until the other's claim goes.
    pub(crate) async fn take(
        &self,
        etcd: &mut impl Etcd,
        lease: i64,
        status: &mut SyncStatus,
    ) -> anyhow::Result<()> {
        let created = etcd.create(&self.key, self.claimant, lease).await?;
        status.writes += 1;
        let mine = self.claimant.as_bytes();
        match created {
            Created::Created => Ok(()),
            // Still ours under this lease (a resumed session): nothing to write.
            Created::Held { value, lease: held } if value == mine && held == lease => Ok(()),
            Created::Held { value, .. } if value != mine => {
                let holder = String::from_utf8_lossy(&value).into_owned();
                status.claim_refused = Some(holder.clone());
                bail!(
                    "host name {:?} is in use on network {} by {holder} (set a unique etcd.host on each host)",
                    self.host,
                    self.network,
                )
            }
            // Ours from an earlier process: taken over with this lease, if it still is.
            Created::Held { .. } => {
                status.writes += 1;
                if !etcd.renew_claim(&self.key, self.claimant, lease).await? {
                    bail!("the claim of host name {:?} changed meanwhile", self.host);
                }
                Ok(())
            }
            Created::Gone => bail!("the claim of host name {:?} went meanwhile", self.host),
        }
    }
}

/// This host's id in its name's claim (R32): random, made once per state directory
/// (`<dataDir>/sync/host-id`, which lives in /run: once per boot) and kept there, so that
/// cloned machines, which share /etc/machine-id, a hostname and the default dataDir path, do
/// not share it, while a restarted sync process of this host finds its own claim. Falls back
/// to `/etc/machine-id` if the file cannot be made.
pub(crate) fn host_id(paths: &StatePaths) -> String {
    let path = paths.host_id();
    let made = format!("{:032x}", rand::random::<u128>());
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| f.write_all(made.as_bytes()));
    if created.is_ok() {
        return made;
    }
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .or_else(|| {
            std::fs::read_to_string("/etc/machine-id")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default()
}

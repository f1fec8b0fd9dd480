//! Who a host is on a shared network (R32): the random id its name's claim carries, and which
//! keys are hosts' claims.

use std::io::Write;

use anyhow::bail;
use embedns_conf::paths::StatePaths;
use embedns_conf::shared::SyncStatus;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use crate::client::Leader;

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
        client: &mut Client,
        leader: &Leader,
        lease: i64,
        status: &mut SyncStatus,
    ) -> anyhow::Result<()> {
        let claim = &self.key;
        let put = || {
            TxnOp::put(
                claim.as_str(),
                self.claimant,
                Some(PutOptions::new().with_lease(lease)),
            )
        };
        let txn = Txn::new()
            .when([Compare::create_revision(
                claim.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([put()])
            .or_else([TxnOp::get(claim.as_str(), None)]);
        let resp = leader.quick(client.txn(txn)).await?;
        status.writes += 1;
        if resp.succeeded() {
            return Ok(());
        }
        let holder = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| (kv.value().to_vec(), kv.lease())),
            _ => None,
        });
        match holder {
            // Still ours under this lease (a resumed session): nothing to write.
            Some((h, held)) if h == self.claimant.as_bytes() && held == lease => Ok(()),
            Some((h, _)) if h != self.claimant.as_bytes() => {
                let holder = String::from_utf8_lossy(&h).into_owned();
                status.claim_refused = Some(holder.clone());
                bail!(
                    "host name {:?} is in use on network {} by {holder} (set a unique etcd.host on each host)",
                    self.host,
                    self.network,
                )
            }
            // Ours from an earlier process: taken over with this lease, if it still is.
            Some(_) => {
                let take = Txn::new()
                    .when([Compare::value(
                        claim.as_str(),
                        CompareOp::Equal,
                        self.claimant,
                    )])
                    .and_then([put()]);
                status.writes += 1;
                if !leader.quick(client.txn(take)).await?.succeeded() {
                    bail!("the claim of host name {:?} changed meanwhile", self.host);
                }
                Ok(())
            }
            None => bail!("the claim of host name {:?} went meanwhile", self.host),
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

/// The host whose claim `key` is, if it is one (`keys::parse`).
pub(crate) fn claim_of<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    match embedns_conf::keys::parse(prefix, key) {
        Ok(embedns_conf::keys::NetworkKey::Claim { host }) => Some(host),
        _ => None,
    }
}

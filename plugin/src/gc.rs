//! GC and STATUS (CNI 1.1): drop what the runtime no longer knows; say whether we can work.

use std::collections::BTreeSet;

use embedns_conf::netconf::NetConf;
use embedns_conf::paths::StatePaths;
use embedns_conf::store::{create_private_dir, remove_if_exists, write_atomic, NetworkStore};
use embedns_conf::ConfError;

use crate::del;
use crate::error::{PluginError, NOT_AVAILABLE};

/// Removes every attachment of this network that is not in `cni.dev/valid-attachments`.
pub fn gc(conf: &NetConf) -> anyhow::Result<()> {
    let valid: BTreeSet<(String, String)> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| ConfError::InvalidConfig("GC needs \"cni.dev/valid-attachments\"".into()))?
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let paths = StatePaths::new(&conf.data_dir);
    let net = NetworkStore::new(&paths, &conf.name);
    for (key, _) in net.list()? {
        let Some((cid, ifname)) = key.rsplit_once('@') else {
            continue;
        };
        if !valid.contains(&(cid.to_string(), ifname.to_string())) {
            tracing::info!(container = cid, ifname, "GC: removing a stale attachment");
            del::detach(&paths, cid, &conf.name, ifname)?;
        }
    }
    Ok(())
}

/// Ready when the state directory can be written.
pub fn status(conf: &NetConf) -> anyhow::Result<()> {
    let paths = StatePaths::new(&conf.data_dir);
    let probe = paths.root().join(".status-probe");
    create_private_dir(paths.root())
        .and_then(|_| write_atomic(&probe, b"ok"))
        .and_then(|_| remove_if_exists(&probe))
        .map_err(|e| {
            PluginError::new(NOT_AVAILABLE, format!("state directory not writable: {e}"))
        })?;
    Ok(())
}

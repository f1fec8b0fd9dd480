//! Who a host is on a shared network (R32): the random id its name's claim carries, and which
//! keys are hosts' claims.

use std::io::Write;

use embedns_conf::paths::StatePaths;

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

/// The host whose claim `key` is, if it is one (`shared::network_key`).
pub(crate) fn claim_of<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    match embedns_conf::shared::network_key(prefix, key) {
        Ok(embedns_conf::shared::NetworkKey::Claim { host }) => Some(host),
        _ => None,
    }
}

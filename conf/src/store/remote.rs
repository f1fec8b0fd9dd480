//! Other hosts' records of a shared network, as its sync process writes them: one directory
//! per host under `.remote/`, each record in the network's index under a [`RemoteKey`].

use std::fs;

use super::{list_dir, Listed, NetworkLock, NetworkStore};
use crate::attachment::RemoteKey;
use crate::fsutil::{create_private_dir, remove_if_exists, subdirectory_names, write_atomic};
use crate::index::IndexWriter;
use crate::paths::RECORD_SUFFIX;
use crate::record::Record;
use crate::ConfError;

/// Other hosts' records of a shared network, one directory per host (`shared.rs`).
pub(super) const REMOTE_DIR: &str = ".remote";

/// A change to the other hosts' records a network holds, as its sync process applies it.
#[derive(Debug, Clone)]
pub enum RemoteChange {
    /// Host `host` has (or now has) the attachment `record`.
    Put { host: String, record: Box<Record> },
    /// The host no longer has the attachment.
    Remove(RemoteKey),
}

impl RemoteChange {
    /// The other host's attachment the change is of.
    pub fn key(&self) -> RemoteKey {
        match self {
            RemoteChange::Put { host, record } => RemoteKey::new(host, record.attachment()),
            RemoteChange::Remove(key) => key.clone(),
        }
    }
}

impl NetworkStore {
    /// The other hosts' records (keys `<host>/<key>`).
    pub fn list_remote(&self) -> Result<Vec<Listed>, ConfError> {
        let mut out = Vec::new();
        let remote = self.dir.join(REMOTE_DIR);
        for host in subdirectory_names(&remote)? {
            let key_of = |key: &str| Some(RemoteKey::new(&host, key.parse().ok()?).to_string());
            out.extend(list_dir(&remote.join(&host), key_of)?);
        }
        Ok(out)
    }

    /// Applies the sync process's changes to the other hosts' records: each file, then its
    /// index entry (a removal the other way round, as for this host's records), the index
    /// opened once for the whole batch. One change that fails (an I/O error, a record the
    /// index refuses: too large for an entry) is logged and left out, file and all, and the
    /// others are applied all the same: one bad value cannot stop the rest. Returns the
    /// changes that failed for a reason other than their value (`(host, key)`), which the
    /// caller must not count as applied. A host that is no host name (`names::host`) never
    /// reaches a path.
    pub fn apply_remote(
        &self,
        lock: &NetworkLock,
        changes: &[RemoteChange],
    ) -> Result<Vec<RemoteKey>, ConfError> {
        let mut failed = Vec::new();
        if changes.is_empty() {
            return Ok(failed);
        }
        let remote = self.dir.join(REMOTE_DIR);
        let source = self.locked(lock);
        let mut index = Some(IndexWriter::open(&source)?);
        for change in changes {
            let remote_key = change.key();
            let (host, key) = (&remote_key.host, remote_key.attachment.to_string());
            if let Err(e) = crate::names::host(host) {
                tracing::warn!(key, "another host's change skipped: {e}");
                continue;
            }
            let writer = match index.take() {
                Some(w) => w,
                None => IndexWriter::open(&source)?,
            };
            let dir = remote.join(host);
            let file = dir.join(format!("{key}{RECORD_SUFFIX}"));
            let applied = match change {
                RemoteChange::Put { record, .. } => {
                    let body = serde_json::to_vec(record).expect("a record always serializes");
                    let written =
                        create_private_dir(&dir).and_then(|()| write_atomic(&file, &body));
                    match written {
                        Err(e) => Err((e, Some(writer))),
                        Ok(()) => match writer.insert_keyed(remote_key.to_string(), record) {
                            Ok(w) => Ok(w),
                            Err(e @ ConfError::InvalidConfig(_)) => {
                                tracing::warn!(host, key, "another host's record left out: {e}");
                                remove_if_exists(&file)?;
                                Ok(IndexWriter::open(&source)?)
                            }
                            Err(e) => Err((e, None)),
                        },
                    }
                }
                RemoteChange::Remove(_) => match writer.remove(&remote_key.to_string()) {
                    Ok(w) => {
                        let removed = remove_if_exists(&file);
                        let _ = fs::remove_dir(&dir); // only once the host has no record left
                        removed.map(|()| w).map_err(|e| (e, None))
                    }
                    Err(e) => Err((e, None)),
                },
            };
            index = match applied {
                Ok(w) => Some(w),
                Err((e, writer)) => {
                    tracing::warn!(host, key, "another host's change not applied: {e}");
                    failed.push(remote_key.clone());
                    writer
                }
            };
        }
        Ok(failed)
    }
}

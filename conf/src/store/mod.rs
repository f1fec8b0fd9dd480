//! The record store: a directory per network, one JSON file per attachment (here), who holds
//! which name (`holders.rs`), other hosts' records (`remote.rs`) and the state directory's
//! own identity and permissions (`root.rs`).
//!
//! Locking story: every writer of a network holds an exclusive `flock` on the network's
//! `.lock` while it changes files there; readers (resolvers, `embedns status`) take no lock,
//! because every file is written to a temporary name and renamed into place, so a reader sees
//! the old record or the new one, never half of one. Resolvers read a network's peers from
//! its shared index (`index/`), changed under the same lock, and their own records (and,
//! while an index is damaged, every record) from these files.

mod holders;
mod remote;
mod root;

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use crate::attachment::AttachmentId;
use crate::fsutil::{
    lock_dir, remove_if_exists, remove_locked_dir, subdirectory_names, write_atomic,
};
use crate::index::{self, IndexWriter};
use crate::paths::{StatePaths, RECORD_SUFFIX};
use crate::record::Record;
use crate::ConfError;

pub use remote::RemoteChange;
pub use root::{prepare_root, resolver_user_for};

/// The note of a network conf's unknown keys, beside its records (not one: a dot file).
const UNKNOWN_KEYS_FILE: &str = ".unknown-keys.json";

/// The records of one network.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
}

pub use crate::record::Listed;

/// Proof that the caller holds the network's lock; dropped, it releases it.
pub struct NetworkLock(Flock<File>);

/// A network whose lock is held: what the index's writer is given ([`index::Source`]).
pub struct Locked<'a> {
    store: &'a NetworkStore,
    _lock: &'a NetworkLock,
}

impl index::Source for Locked<'_> {
    fn dir(&self) -> &Path {
        &self.store.dir
    }

    fn records(&self) -> Result<Vec<Listed>, ConfError> {
        self.store.list_all()
    }
}

impl NetworkStore {
    /// The records of `network` under the state directory `paths`.
    pub fn new(paths: &StatePaths, network: &str) -> Self {
        NetworkStore {
            dir: paths.network(network),
        }
    }

    /// The network's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The network as its index's writer sees it, while `lock` is held.
    pub fn locked<'a>(&'a self, lock: &'a NetworkLock) -> Locked<'a> {
        Locked {
            store: self,
            _lock: lock,
        }
    }

    /// Creates the network's directory if needed and takes its lock (blocking).
    pub fn lock(&self) -> Result<NetworkLock, ConfError> {
        lock_dir(&self.dir).map(NetworkLock)
    }

    /// Whether the network has no record left (stops at the first one found).
    pub fn is_empty(&self) -> Result<bool, ConfError> {
        match fs::read_dir(&self.dir) {
            Ok(entries) => Ok(!entries
                .filter_map(Result::ok)
                .any(|e| record_key(&e.file_name().to_string_lossy()).is_some())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            Err(e) => Err(ConfError::io(&self.dir, e)),
        }
    }

    /// Removes the directory of a network that has no record left: its index, names' holders
    /// and lock. Writers waiting on the lock notice (see [`lock_dir`]) and start over.
    /// Notes the keys of the network's conf embedns does not know (none: the note goes), for
    /// `embedns status`.
    pub fn note_unknown_keys(&self, _lock: &NetworkLock, keys: &[String]) -> Result<(), ConfError> {
        let path = self.dir.join(UNKNOWN_KEYS_FILE);
        if keys.is_empty() {
            return remove_if_exists(&path);
        }
        write_atomic(&path, &serde_json::to_vec(keys).expect("strings serialize"))
    }

    /// The keys [`NetworkStore::note_unknown_keys`] noted.
    pub fn unknown_keys(&self) -> Vec<String> {
        let text = std::fs::read(self.dir.join(UNKNOWN_KEYS_FILE)).unwrap_or_default();
        serde_json::from_slice(&text).unwrap_or_default()
    }

    pub fn remove_if_empty(&self, lock: NetworkLock) -> Result<bool, ConfError> {
        if !self.is_empty()? {
            return Ok(false);
        }
        remove_locked_dir(&self.dir, lock.0)?;
        Ok(true)
    }

    /// The record file of an attachment key.
    pub fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}{RECORD_SUFFIX}"))
    }

    /// Writes (or replaces) a record atomically.
    pub fn put(&self, lock: &NetworkLock, record: &Record) -> Result<(), ConfError> {
        let body = serde_json::to_vec_pretty(record).expect("a record always serializes");
        write_atomic(&self.record_path(&record.key()), &body)?;
        if let Some(name) = &record.name {
            self.add_holder(name, &record.key())?;
        }
        IndexWriter::open(&self.locked(lock))?.insert(record)?;
        Ok(())
    }

    /// Reads one record; `Ok(None)` when there is none.
    pub fn get(&self, container_id: &str, ifname: &str) -> Result<Option<Record>, ConfError> {
        read_record(&self.record_path(&AttachmentId::new(container_id, ifname).to_string()))
    }

    /// Removes a record and its hold of its name; returns what was there.
    pub fn remove(
        &self,
        lock: &NetworkLock,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Record>, ConfError> {
        let key = AttachmentId::new(container_id, ifname).to_string();
        let path = self.record_path(&key);
        // A corrupt record is still removed: DEL must leave nothing behind.
        let old = read_record(&path).unwrap_or(None);
        // The index entry first, then the JSON: a crash between the two leaves a record that
        // answers nothing (the next DEL or GC removes it), never an index entry that answers
        // for a container without a record, which no one could find to remove.
        crate::crash::point("remove:before-index");
        IndexWriter::open(&self.locked(lock))?.remove(&key)?;
        crate::crash::point("remove:between-index-and-record");
        remove_if_exists(&path)?;
        if let Some(name) = old.as_ref().and_then(|r| r.name.as_ref()) {
            // Its directory goes only once no one holds the name.
            self.drop_holder(lock, name, &key)?;
        }
        Ok(old)
    }

    /// Every record file of this host's attachments: its key and what parsing it gave.
    pub fn list(&self) -> Result<Vec<Listed>, ConfError> {
        list_dir(&self.dir, |key| Some(key.to_string()))
    }

    /// This host's records and the other hosts' (keys `<host>/<key>`): what the index holds.
    pub fn list_all(&self) -> Result<Vec<Listed>, ConfError> {
        let mut out = self.list()?;
        out.extend(self.list_remote()?);
        Ok(out)
    }
}

/// The record files of `dir`, keyed by `key_of(<file name without .json>)`.
/// (`None`: a file of no record's name, left out).
fn list_dir(dir: &Path, key_of: impl Fn(&str) -> Option<String>) -> Result<Vec<Listed>, ConfError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ConfError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some(key) = record_key(&file_name.to_string_lossy()).and_then(&key_of) else {
            continue;
        };
        match read_record(&entry.path()) {
            Ok(Some(r)) => out.push((key, Ok(r))),
            Ok(None) => {} // removed since read_dir
            Err(e) => out.push((key, Err(e))),
        }
    }
    Ok(out)
}

/// The attachment key of a record file name, `None` for temporary and other files.
pub fn record_key(file_name: &str) -> Option<&str> {
    if file_name.starts_with('.') {
        return None;
    }
    file_name.strip_suffix(RECORD_SUFFIX)
}

/// Reads a record file; `Ok(None)` if it does not exist.
pub fn read_record(path: &Path) -> Result<Option<Record>, ConfError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ConfError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfError::io(path, e)),
    }
}

/// Names of the networks that have a directory in the store.
pub fn networks(paths: &StatePaths) -> Result<Vec<String>, ConfError> {
    subdirectory_names(&paths.networks())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn record(cid: &str, name: &str) -> Record {
        Record::with_defaults("n", cid, Some(name), &[], vec!["10.0.0.2".parse().unwrap()])
    }

    #[test]
    fn put_get_remove_with_holders() {
        let tmp = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(&StatePaths::new(tmp.path()), "n");
        let lock = store.lock().unwrap();
        store.put(&lock, &record("c1", "web")).unwrap();
        assert_eq!(
            store.get("c1", "eth0").unwrap().unwrap().name.as_deref(),
            Some("web")
        );
        assert_eq!(store.holders("web").unwrap(), vec!["c1@eth0"]);
        assert_eq!(store.list().unwrap().len(), 1);
        let mode = fs::metadata(store.record_path("c1@eth0"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(store.remove(&lock, "c1", "eth0").unwrap().is_some());
        assert!(store.remove(&lock, "c1", "eth0").unwrap().is_none());
        assert!(store.holders("web").unwrap().is_empty());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn corrupt_records_are_reported_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(&StatePaths::new(tmp.path()), "n");
        let lock = store.lock().unwrap();
        store.put(&lock, &record("c1", "web")).unwrap();
        fs::write(store.record_path("c2@eth0"), b"{garbage").unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list.iter().filter(|(_, r)| r.is_err()).count(), 1);
    }

    #[test]
    fn other_hosts_records_are_listed_indexed_and_removed() {
        use crate::index::IndexReader;
        let tmp = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(&StatePaths::new(tmp.path()), "n");
        let lock = store.lock().unwrap();
        store.put(&lock, &record("c1", "web")).unwrap();
        let mut theirs = record("c1", "db"); // the same container ID on another host
        theirs.ips = vec!["10.0.1.2".parse().unwrap()];
        let put = RemoteChange::Put {
            host: "b".into(),
            record: Box::new(theirs),
        };
        store.apply_remote(&lock, &[put]).unwrap();
        assert_eq!(store.list().unwrap().len(), 1, "list() is this host's");
        let keys: Vec<String> = store
            .list_all()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["c1@eth0", "b/c1@eth0"]);
        let mut index = IndexReader::new(store.dir());
        assert_eq!(index.addresses("db").unwrap().unwrap().len(), 1);
        let remove = RemoteChange::Remove("b/c1@eth0".parse().unwrap());
        store.apply_remote(&lock, &[remove]).unwrap();
        assert_eq!(store.list_all().unwrap().len(), 1);
        let mut index = IndexReader::new(store.dir());
        assert!(index.addresses("db").unwrap().is_none());
        assert!(!store.dir().join(remote::REMOTE_DIR).join("b").exists());
    }

    #[test]
    fn another_hosts_record_too_large_for_the_index_is_left_out_not_fatal() {
        use crate::index::IndexReader;
        let tmp = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(&StatePaths::new(tmp.path()), "n");
        let lock = store.lock().unwrap();
        store.put(&lock, &record("c1", "web")).unwrap();
        let mut huge = record("c2", "huge");
        huge.aliases = vec!["a".repeat(70_000)];
        let changes = [
            RemoteChange::Put {
                host: "b".into(),
                record: Box::new(huge),
            },
            RemoteChange::Put {
                host: "b".into(),
                record: Box::new(record("c3", "db")),
            },
        ];
        store.apply_remote(&lock, &changes).unwrap();
        let keys: Vec<String> = store
            .list_remote()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["b/c3@eth0"]);
        let mut index = IndexReader::new(store.dir());
        assert!(index.addresses("db").unwrap().is_some());
        assert!(index.addresses("huge").unwrap().is_none());
    }

    #[test]
    fn ignores_temporary_files() {
        assert_eq!(record_key(".tmp-abc"), None);
        assert_eq!(record_key("c1@eth0.json"), Some("c1@eth0"));
    }
}

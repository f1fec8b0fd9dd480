//! The record store: a directory per network, one JSON file per attachment.
//!
//! Locking story: every writer of a network holds an exclusive `flock` on the network's
//! `.lock` while it changes files there; readers (resolvers, `embedns status`) take no lock,
//! because every file is written to a temporary name and renamed into place, so a reader sees
//! the old record or the new one, never half of one. Resolvers read a network's peers from
//! its shared index (`index/`), changed under the same lock, and their own records (and,
//! while an index is damaged, every record) from these files.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use crate::fsutil::{
    create_private_dir, lock_dir, remove_if_exists, remove_locked_dir, subdirectory_names,
    write_atomic,
};
use crate::index::{self, IndexWriter};
use crate::keys::{AttachmentId, RemoteKey};
use crate::paths::{StatePaths, RECORD_SUFFIX};
use crate::record::Record;
use crate::user::ResolverUser;
use crate::ConfError;

const NAMES_DIR: &str = ".names";
/// Other hosts' records of a shared network, one directory per host (`shared.rs`).
const REMOTE_DIR: &str = ".remote";

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

    /// Removes the directory of a network that has no record left: its index, name claims
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
            let claim = self.dir.join(NAMES_DIR).join(name);
            create_private_dir(&claim)?;
            write_atomic(&claim.join(record.key()), b"")?;
        }
        IndexWriter::open(&self.locked(lock))?.insert(record)?;
        Ok(())
    }

    /// Reads one record; `Ok(None)` when there is none.
    pub fn get(&self, container_id: &str, ifname: &str) -> Result<Option<Record>, ConfError> {
        read_record(&self.record_path(&AttachmentId::new(container_id, ifname).to_string()))
    }

    /// Removes a record and its name claim; returns what was there.
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
            let claim = self.dir.join(NAMES_DIR).join(name);
            remove_if_exists(&claim.join(&key))?;
            let _ = fs::remove_dir(&claim); // only succeeds once no one claims the name
        }
        Ok(old)
    }

    /// The other attachments that claim `name` on this network (a cost of O(claimants), not
    /// O(network)).
    pub fn claimants(&self, name: &str) -> Result<Vec<String>, ConfError> {
        subdirectory_names(&self.dir.join(NAMES_DIR).join(name))
    }

    /// Removes a name claim whose record is gone (left by a crash between two writes).
    pub fn drop_claim(&self, _lock: &NetworkLock, name: &str, key: &str) -> Result<(), ConfError> {
        let claim = self.dir.join(NAMES_DIR).join(name);
        remove_if_exists(&claim.join(key))?;
        let _ = fs::remove_dir(&claim);
        Ok(())
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

/// The identity resolvers of the state directory `root` run as when `resolverUser` is not set
/// (`set` false) and `user` is the default: a directory an earlier version made for
/// nobody/nogroup keeps that group, so the resolvers it runs keep reading the store through
/// an upgrade in place, while new resolvers take the default uid (nobody can no longer
/// signal them or write to their logs). The store lives in /run: made anew at the next boot,
/// it gets the default group.
pub fn resolver_user_for(root: &Path, user: ResolverUser, set: bool) -> ResolverUser {
    use crate::user::{DEFAULT_RESOLVER_USER, EARLIER_RESOLVER_USER};
    use std::os::unix::fs::MetadataExt;
    if set || user != DEFAULT_RESOLVER_USER {
        return user;
    }
    match fs::metadata(root) {
        Ok(m) if m.gid() == EARLIER_RESOLVER_USER.gid && m.mode() & 0o7777 == 0o2750 => {
            ResolverUser {
                uid: user.uid,
                gid: EARLIER_RESOLVER_USER.gid,
            }
        }
        _ => user,
    }
}

/// Makes the state directory `root` readable by the resolvers' group `gid` and by no one
/// else: owned by root, group `gid`, mode 2750, so every directory and file made below it
/// inherits the group (directories 2750, files 0640; nothing is group-writable). A directory
/// made by an earlier version (root:root 0700) is converted once, whole. A stat when done.
pub fn prepare_root(root: &Path, uid: u32, gid: u32) -> Result<(), ConfError> {
    use std::os::unix::fs::MetadataExt;
    create_private_dir(root)?;
    if !id_mapped(uid, "/proc/self/uid_map") || !id_mapped(gid, "/proc/self/gid_map") {
        // A user namespace (rootless podman) without that identity: the resolvers keep the
        // plugin's own, which owns the store; nothing to share with a group.
        return Ok(());
    }
    reachable_by(root, uid, gid)?;
    let meta = fs::metadata(root).map_err(|e| ConfError::io(root, e))?;
    if meta.gid() == gid && meta.mode() & 0o7777 == 0o2750 {
        return Ok(());
    }
    // Only root's own entries are converted, each through a descriptor opened without
    // following links: a resolver's log directory (its user's) is not entered, and nothing a
    // less-privileged user planted (a link, a hard link to a root file, a FIFO) is changed.
    let fix = |path: &Path, dir: bool| -> Result<bool, ConfError> {
        let io = |e: std::io::Error| ConfError::io(path, e);
        let file = match crate::fsutil::open_nofollow(path, dir) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        let ours = meta.uid() == 0 && (dir || (meta.is_file() && meta.nlink() == 1));
        if !ours || meta.is_dir() != dir {
            return Ok(false);
        }
        nix::unistd::fchown(&file, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| io(std::io::Error::from(e)))?;
        let mode = meta.mode();
        let new = if dir {
            (mode & 0o700) | 0o2050
        } else {
            (mode & 0o700) | 0o040
        };
        file.set_permissions(fs::Permissions::from_mode(new))
            .map_err(io)?;
        Ok(true)
    };
    fn walk(
        dir: &Path,
        fix: &dyn Fn(&Path, bool) -> Result<bool, ConfError>,
    ) -> Result<(), ConfError> {
        for entry in fs::read_dir(dir)
            .map_err(|e| ConfError::io(dir, e))?
            .filter_map(Result::ok)
        {
            let Ok(t) = entry.file_type() else { continue };
            if t.is_symlink() || t.is_socket() {
                continue;
            }
            // A directory is entered only if it is root's (and was converted).
            if fix(&entry.path(), t.is_dir())? && t.is_dir() {
                walk(&entry.path(), fix)?;
            }
        }
        Ok(())
    }
    walk(root, &fix)?;
    fix(root, true)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o2750))
        .map_err(|e| ConfError::io(root, e))
}

/// Whether `id` exists in this process's user namespace (its `uid_map` or `gid_map` says so).
fn id_mapped(id: u32, map: &str) -> bool {
    let Ok(text) = fs::read_to_string(map) else {
        return true; // no /proc: assume the host's namespace
    };
    text.lines().any(|l| {
        let v: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        matches!(v[..], [inside, _, len] if (inside..inside + len).contains(&u64::from(id)))
    })
}

/// Fails, naming the directory, when one above `root` cannot be searched by `uid`/`gid` (a
/// resolver running as them could then read nothing of the store).
fn reachable_by(root: &Path, uid: u32, gid: u32) -> Result<(), ConfError> {
    use std::os::unix::fs::MetadataExt;
    let root = fs::canonicalize(root).map_err(|e| ConfError::io(root, e))?;
    for dir in root.ancestors().skip(1) {
        let m = fs::metadata(dir).map_err(|e| ConfError::io(dir, e))?;
        let bit = if m.uid() == uid {
            0o100
        } else if m.gid() == gid {
            0o010
        } else {
            0o001
        };
        if m.mode() & bit == 0 {
            return Err(ConfError::InvalidConfig(format!(
                "the resolvers run as {uid}:{gid} (resolverUser) and cannot reach dataDir {}: {} \
                 is mode {:o}; make it searchable (chmod o+x) or choose another dataDir",
                root.display(),
                dir.display(),
                m.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cid: &str, name: &str) -> Record {
        Record::with_defaults("n", cid, Some(name), &[], vec!["10.0.0.2".parse().unwrap()])
    }

    #[test]
    fn put_get_remove_with_claims() {
        let tmp = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(&StatePaths::new(tmp.path()), "n");
        let lock = store.lock().unwrap();
        store.put(&lock, &record("c1", "web")).unwrap();
        assert_eq!(
            store.get("c1", "eth0").unwrap().unwrap().name.as_deref(),
            Some("web")
        );
        assert_eq!(store.claimants("web").unwrap(), vec!["c1@eth0"]);
        assert_eq!(store.list().unwrap().len(), 1);
        let mode = fs::metadata(store.record_path("c1@eth0"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(store.remove(&lock, "c1", "eth0").unwrap().is_some());
        assert!(store.remove(&lock, "c1", "eth0").unwrap().is_none());
        assert!(store.claimants("web").unwrap().is_empty());
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
    fn ids_of_this_user_namespace() {
        let tmp = tempfile::tempdir().unwrap();
        let map = tmp.path().join("uid_map");
        // Rootless podman's namespace: root is the user, 1..65536 its subordinate ids.
        fs::write(
            &map,
            "         0       1000          1\n         1     100000      65536\n",
        )
        .unwrap();
        let map = map.to_str().unwrap();
        assert!(id_mapped(0, map) && id_mapped(65534, map) && id_mapped(65536, map));
        assert!(!id_mapped(65537, map));
        fs::write(
            tmp.path().join("uid_map"),
            "         0       1000          1\n",
        )
        .unwrap();
        assert!(!id_mapped(65534, map));
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
        assert!(!store.dir().join(REMOTE_DIR).join("b").exists());
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

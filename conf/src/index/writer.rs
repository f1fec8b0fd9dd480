//! The plugin's side: changes in place under the network's lock (the [`Source`] it is given
//! proves it), a rebuild from the records when the file is missing, damaged or out of room.

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{fence, Ordering};

use memmap2::MmapMut;

use super::entry::*;
use super::layout::*;
use crate::record::{Listed, Record};
use crate::ConfError;

/// What a writer needs of a network: its directory and, for a rebuild, every record file's
/// key and what reading it gave. The record store implements it for a network whose lock
/// is held, so holding one proves the writer may change the file.
pub trait Source {
    /// The network's directory; the index is `<dir>/.index`.
    fn dir(&self) -> &Path;
    /// Every record file: its key and the record, or why it could not be read.
    fn records(&self) -> Result<Vec<Listed>, ConfError>;
}

/// The plugin's writable view of a network's index; exists only under the network's lock.
pub struct IndexWriter<'l> {
    source: &'l dyn Source,
    map: MmapMut,
    g: Geometry,
}

impl<'l> IndexWriter<'l> {
    /// Opens the network's index, building it from the records when it is missing or
    /// damaged, or when a writer died in the middle of a change (then the old file is marked
    /// superseded, so its readers move on).
    pub fn open(source: &'l dyn Source) -> Result<Self, ConfError> {
        let path = index_path(source.dir());
        let old = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => {
                // SAFETY: only a writer holding the network lock changes the file, through
                // `Mem`; readers only load.
                Some(unsafe { MmapMut::map_mut(&file) }.map_err(|e| ConfError::io(&path, e))?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ConfError::io(&path, e)),
        };
        if let Some(map) = old {
            let Some(mem) = mem_of(map.as_ptr(), map.len()) else {
                return Self::rebuild(source, None);
            };
            let even = mem.seq().load(Ordering::Acquire) & 1 == 0;
            match mem.geometry() {
                Ok(g) if mem.magic() == MAGIC && even && counters_sane(mem, &g) => {
                    if mem.u32(H_FORMS).is_ok_and(|f| f == FORMS) {
                        return Ok(IndexWriter { source, map, g });
                    }
                    tracing::info!(path = %path.display(), "an index of an earlier release: rebuilding it with R35's name forms");
                    let w = Self::rebuild(source, None)?;
                    mem.superseded().store(1, Ordering::Release);
                    return Ok(w);
                }
                _ => {
                    tracing::warn!(path = %path.display(), "the network index is damaged or was left mid-change; rebuilding it");
                    let w = Self::rebuild(source, None)?;
                    mem.superseded().store(1, Ordering::Release);
                    return Ok(w);
                }
            }
        }
        Self::rebuild(source, None)
    }

    /// A new index from the JSON records.
    fn rebuild(
        source: &'l dyn Source,
        previous: Option<&IndexWriter<'_>>,
    ) -> Result<Self, ConfError> {
        let mut entries = Vec::new();
        for (key, rec) in source.records()? {
            match rec {
                Ok(r) => entries.push(Entry::keyed(key, &r)),
                Err(e) => tracing::error!(%key, "not indexed: {e}"),
            }
        }
        tracing::info!(dir = %source.dir().display(), records = entries.len(), "building the network index");
        Self::build(source, &entries, previous)
    }

    /// Writes a new index holding `entries` and renames it into place; `previous`, if any,
    /// is marked superseded.
    fn build(
        source: &'l dyn Source,
        entries: &[Entry],
        previous: Option<&IndexWriter<'_>>,
    ) -> Result<Self, ConfError> {
        let blobs = entries
            .iter()
            .map(Entry::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let g = Geometry::for_content(
            entries.len() + 1,
            entries.iter().map(Entry::buckets).sum::<usize>() + 8,
            blobs.iter().map(Vec::len).sum::<usize>() + 256,
        )
        .ok_or_else(|| {
            let why = std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "the network's records would make an index over the format's 2 GiB",
            );
            ConfError::io(index_path(source.dir()), why)
        })?;
        let dir = source.dir();
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-index-")
            .permissions(std::fs::Permissions::from_mode(0o640))
            .tempfile_in(dir)
            .map_err(|e| ConfError::io(dir, e))?;
        let io = |e| ConfError::io(tmp.path(), e);
        // Allocated, not sparse: a full disk is an error here rather than a SIGBUS when a
        // page of the mapping is first written.
        nix::fcntl::posix_fallocate(tmp.as_file(), 0, g.file_len() as i64)
            .map_err(|errno| io(std::io::Error::from(errno)))?;
        // SAFETY: a fresh private file nobody else has mapped.
        let map = unsafe { MmapMut::map_mut(tmp.as_file()) }.map_err(io)?;
        let w = IndexWriter { source, map, g };
        let mem = w.mem();
        mem.set_u32(H_PEER_CAP, g.peer_cap);
        mem.set_u32(H_BUCKETS, g.buckets);
        mem.set_u32(H_HEAP_CAP, g.heap_cap);
        // The free list holds every slot (a free slot's offset field is next + 1).
        for s in 0..g.peer_cap {
            let next = if s + 1 < g.peer_cap { s + 2 } else { 0 };
            mem.set_u32(g.peers_at() + PEER * s as usize, next);
        }
        mem.set_u32(H_FREE_HEAD, 1);
        mem.set_u32(H_FORMS, FORMS);
        for (e, blob) in entries.iter().zip(&blobs) {
            w.put(e, blob)
                .expect("a new index is sized for its entries");
        }
        mem.set_u64_release(H_MAGIC, MAGIC);
        let path = index_path(source.dir());
        tmp.persist(&path)
            .map_err(|e| ConfError::io(&path, e.error))?;
        if let Some(old) = previous {
            old.mem().superseded().store(1, Ordering::Release);
        }
        Ok(w)
    }

    pub(super) fn mem(&self) -> Mem {
        Mem::of_mapping(self.map.as_ptr(), self.map.len())
    }

    /// Adds an attachment, or replaces the one with the same key.
    pub fn insert(self, record: &Record) -> Result<Self, ConfError> {
        self.insert_keyed(record.key(), record)
    }

    /// Adds an attachment under `key` (another host's: `<host>/<cid>@<ifname>`), or replaces
    /// the one with that key.
    pub fn insert_keyed(self, key: String, record: &Record) -> Result<Self, ConfError> {
        let entry = Entry::keyed(key, record);
        let blob = entry.encode()?;
        let (mem, g) = (self.mem(), self.g);
        let old = match self.existing(&entry.key) {
            Some(slot) => match Blob::at(mem, &g, slot).and_then(Blob::entry) {
                Ok(e) => Some((slot, e)),
                Err(_) => return self.replace_all(entry),
            },
            None => None,
        };
        let header = |off| mem.u32(off).unwrap_or(u32::MAX) as usize;
        let fits = header(H_LIVE) < g.peer_cap as usize
            && (header(H_USED_BUCKETS) + entry.buckets()) * 2 <= g.buckets as usize
            && header(H_HEAP_USED) + blob.len() <= g.heap_cap as usize;
        if !fits {
            return self.replace_all(entry);
        }
        let changed = self.change(|w| {
            if let Some((slot, e)) = &old {
                w.drop_peer(*slot, e);
            }
            w.put(&entry, &blob)
        });
        match changed {
            Ok(()) => Ok(self),
            // Room was checked, so the tables are damaged: start over from the records
            // (the caller wrote this one's JSON first).
            Err(Torn) => Self::rebuild(self.source, Some(&self)),
        }
    }

    /// Removes an attachment; nothing to do when it is not there.
    pub fn remove(self, key: &str) -> Result<Self, ConfError> {
        let Some(slot) = self.existing(key) else {
            return Ok(self);
        };
        match Blob::at(self.mem(), &self.g, slot).and_then(Blob::entry) {
            Ok(entry) => {
                let _ = self.change(|w| {
                    w.drop_peer(slot, &entry);
                    Ok(())
                });
                Ok(self)
            }
            // Rebuilt from the records, which may still hold this one (the caller removes the
            // index entry before the JSON): remove it from the new file too.
            Err(_) => {
                let rebuilt = Self::rebuild(self.source, Some(&self))?;
                match rebuilt.existing(key) {
                    Some(_) => rebuilt.remove(key),
                    None => Ok(rebuilt),
                }
            }
        }
    }

    /// Makes the index hold exactly the network's readable records (GC): when an entry has
    /// no record (a ghost, which would answer for a container that is gone) or a record has
    /// no entry, the index is rebuilt from the records. Returns the ghosts' keys.
    pub fn reconcile(self) -> Result<(Self, Vec<String>), ConfError> {
        let records: std::collections::BTreeSet<String> = self
            .source
            .records()?
            .into_iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(k, _)| k)
            .collect();
        let (mem, g) = (self.mem(), self.g);
        let indexed: Result<std::collections::BTreeSet<String>, Torn> = (0..g.peer_cap)
            .filter(|s| mem.u32(g.peers_at() + PEER * *s as usize + 4).unwrap_or(0) != 0)
            .map(|s| Blob::at(mem, &g, s).and_then(Blob::entry).map(|e| e.key))
            .collect();
        let ghosts = match &indexed {
            Ok(keys) if *keys == records => return Ok((self, Vec::new())),
            Ok(keys) => keys.difference(&records).cloned().collect(),
            Err(Torn) => Vec::new(),
        };
        let rebuilt = Self::rebuild(self.source, Some(&self))?;
        Ok((rebuilt, ghosts))
    }

    /// Out of room (or an unreadable peer): a new file with every other live entry and
    /// `entry`, swapped in at once. O(n), and the new file has room for n more changes.
    fn replace_all(self, entry: Entry) -> Result<Self, ConfError> {
        let (mem, g) = (self.mem(), self.g);
        let live: Result<Vec<Entry>, Torn> = (0..g.peer_cap)
            .filter(|s| mem.u32(g.peers_at() + PEER * *s as usize + 4).unwrap_or(0) != 0)
            .map(|s| Blob::at(mem, &g, s).and_then(Blob::entry))
            .collect();
        let Ok(mut entries) = live else {
            return Self::rebuild(self.source, Some(&self));
        };
        entries.retain(|e| e.key != entry.key);
        entries.push(entry);
        Self::build(self.source, &entries, Some(&self))
    }

    /// The slot of a key's peer.
    fn existing(&self, key: &str) -> Option<u32> {
        let (mem, g) = (self.mem(), self.g);
        let mut found = None;
        probe(mem, &g, key_hash(key), |_, kind, slot| {
            if kind == KEY && Blob::at(mem, &g, slot)?.key_is(key)? {
                found = Some(slot);
                return Ok(false);
            }
            Ok(true)
        })
        .ok()?;
        found
    }

    /// Runs a change inside the seqlock's write section.
    fn change<T>(&self, f: impl FnOnce(&Self) -> Result<T, Torn>) -> Result<T, Torn> {
        let mem = self.mem();
        let seq = mem.seq();
        let s = seq.load(Ordering::Relaxed);
        seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let r = f(self);
        seq.store(s + 2, Ordering::Release);
        r
    }

    /// Stores a peer: a slot, its blob, and its buckets. The caller checked the room.
    fn put(&self, e: &Entry, blob: &[u8]) -> Result<(), Torn> {
        let (mem, g) = (self.mem(), self.g);
        let head = mem.u32(H_FREE_HEAD)?;
        let slot = head.checked_sub(1).ok_or(Torn)?;
        let p = g.peers_at() + PEER * slot as usize;
        let used = mem.u32(H_HEAP_USED)?;
        mem.set_u32(H_FREE_HEAD, mem.u32(p)?);
        mem.set_bytes(g.heap_at() + used as usize, blob);
        mem.set_u32(p, used);
        mem.set_u32(p + 4, blob.len() as u32);
        mem.set_u32(H_HEAP_USED, used + blob.len() as u32);
        for (kind, h) in bucket_hashes(e) {
            self.add_bucket(kind, h, slot)?;
        }
        mem.set_u32(H_LIVE, mem.u32(H_LIVE)? + 1);
        Ok(())
    }

    fn add_bucket(&self, kind: u32, h: u64, slot: u32) -> Result<(), Torn> {
        let (mem, g) = (self.mem(), self.g);
        let mask = g.buckets as usize - 1;
        let start = h as usize & mask;
        for i in 0..g.buckets as usize {
            let b = g.buckets_at() + BUCKET * ((start + i) & mask);
            let k = mem.u32(b)?;
            if k == EMPTY || k == TOMBSTONE {
                mem.set_u32(b + 4, (h >> 32) as u32);
                mem.set_u32(b + 8, slot);
                mem.set_u32(b, kind);
                if k == EMPTY {
                    mem.set_u32(H_USED_BUCKETS, mem.u32(H_USED_BUCKETS)? + 1);
                }
                return Ok(());
            }
        }
        Err(Torn)
    }

    /// Tombstones a peer's buckets and frees its slot; its heap bytes become garbage.
    fn drop_peer(&self, slot: u32, e: &Entry) {
        let (mem, g) = (self.mem(), self.g);
        for (kind, h) in bucket_hashes(e) {
            let _ = probe(mem, &g, h, |b, k, s| {
                if k == kind && s == slot {
                    mem.set_u32(b, TOMBSTONE);
                    return Ok(false);
                }
                Ok(true)
            });
        }
        let p = g.peers_at() + PEER * slot as usize;
        let header = |off| mem.u32(off).unwrap_or(0);
        let len = mem.u32(p + 4).unwrap_or(0);
        mem.set_u32(p, header(H_FREE_HEAD));
        mem.set_u32(p + 4, 0);
        mem.set_u32(H_FREE_HEAD, slot + 1);
        mem.set_u32(H_GARBAGE, header(H_GARBAGE) + len);
        mem.set_u32(H_LIVE, header(H_LIVE).saturating_sub(1));
    }
}

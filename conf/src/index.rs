//! The shared index of one network: `networks/<net>/.index`, a memory-mapped file that every
//! resolver on the network reads at query time and that the plugin changes in place, under
//! the network's lock, when a record comes or goes.
//!
//! Why a shared file: with one resolver per container, a private copy of the network in each
//! resolver makes every change O(n) in all (n resolvers woken, each re-reading a record) and
//! makes a new resolver read n records before it answers. Here a change costs O(1) amortized
//! and wakes nobody, a new resolver maps one file, and the records' memory is the page
//! cache's, shared by every resolver of the network.
//!
//! Layout (native-endian; the file never leaves the machine): a 64-byte header; the peer
//! table (8 bytes a slot: offset and length of the peer's blob in the heap); the bucket
//! table (open addressing with linear probing, 12 bytes a bucket: kind, hash tag, slot; a
//! peer has one bucket per name it answers to, per address and for its key); the heap
//! (peer blobs, appended; a removed blob's bytes are counted as garbage).
//!
//! Consistency is a seqlock: the writer makes `seq` odd, changes the file, makes it even
//! again; a reader copies out what it needs and retries if `seq` moved meanwhile. Every
//! offset a reader follows is bounds-checked, so a torn read costs a retry, never a crash.
//! When a table is full the writer builds a new file sized for twice the content, renames it
//! over `.index` and sets `superseded` in the old one, which readers check on every lookup.
//!
//! The JSON records stay the source of truth: a missing or damaged index (wrong magic, or a
//! writer that died with `seq` odd) is rebuilt from them by the next writer.

use std::fs::{File, OpenOptions};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use memmap2::{Mmap, MmapMut};

use crate::record::Record;
use crate::store::{NetworkLock, NetworkStore};
use crate::ConfError;

/// The index's file name in a network directory (a dot file: not a record).
pub const INDEX_FILE: &str = ".index";

const MAGIC: u64 = u64::from_le_bytes(*b"EMBNSIX1");

// Header fields, byte offsets.
const HEADER: usize = 64;
const H_MAGIC: usize = 0;
const H_SEQ: usize = 8;
const H_SUPERSEDED: usize = 16;
const H_PEER_CAP: usize = 20;
const H_BUCKETS: usize = 24;
const H_HEAP_CAP: usize = 28;
const H_HEAP_USED: usize = 32;
const H_LIVE: usize = 36;
const H_USED_BUCKETS: usize = 40;
const H_GARBAGE: usize = 44;
const H_FREE_HEAD: usize = 48;

const PEER: usize = 8;
const BUCKET: usize = 12;

// Bucket kinds.
const EMPTY: u32 = 0;
const NAME: u32 = 1;
const ADDR: u32 = 2;
const KEY: u32 = 3;
const TOMBSTONE: u32 = 4;

/// How long a reader waits for a writer to finish before it reports the index busy (a
/// change takes microseconds; only a writer that died mid-change holds it longer).
const READ_PATIENCE: Duration = Duration::from_millis(20);

/// What a lookup needs of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The attachment's store key (`CID@IFNAME`).
    pub key: String,
    /// The container name (R2), answered by PTR (R10).
    pub name: Option<String>,
    /// Every name it answers to: name, aliases, and `<name>.<domainName>` for each.
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl Entry {
    pub fn of(r: &Record) -> Entry {
        let mut names: Vec<String> = r.names().map(str::to_string).collect();
        if let Some(domain) = &r.domain_name {
            let qualified: Vec<String> = names.iter().map(|n| format!("{n}.{domain}")).collect();
            names.extend(qualified);
        }
        names.sort();
        names.dedup();
        let mut ips = r.ips.clone();
        ips.sort();
        ips.dedup();
        Entry {
            key: r.key(),
            name: r.name.clone(),
            names,
            ips,
        }
    }

    /// Buckets this entry takes: its key, each name, each address.
    fn buckets(&self) -> usize {
        1 + self.names.len() + self.ips.len()
    }

    fn encode(&self) -> Result<Vec<u8>, ConfError> {
        let too_big = || ConfError::InvalidConfig(format!("record {} is too large", self.key));
        let mut out = Vec::with_capacity(64);
        let put_str = |out: &mut Vec<u8>, s: &str| -> Result<(), ConfError> {
            let len = u16::try_from(s.len()).map_err(|_| too_big())?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            Ok(())
        };
        put_str(&mut out, &self.key)?;
        match &self.name {
            Some(n) => {
                out.push(1);
                put_str(&mut out, n)?;
            }
            None => out.push(0),
        }
        let count = |n: usize| {
            u16::try_from(n)
                .map(u16::to_le_bytes)
                .map_err(|_| too_big())
        };
        out.extend_from_slice(&count(self.names.len())?);
        for n in &self.names {
            put_str(&mut out, n)?;
        }
        out.extend_from_slice(&count(self.ips.len())?);
        for ip in &self.ips {
            let (family, bytes) = ip_bytes(ip);
            out.push(family);
            out.extend_from_slice(&bytes);
        }
        u32::try_from(out.len()).map_err(|_| too_big())?;
        Ok(out)
    }
}

fn ip_bytes(ip: &IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (4, b)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    }
}

/// FNV-1a, 64 bits: stable across builds (the plugin and resolvers of different builds may
/// share a file), and a domain byte keeps names, addresses and keys apart.
fn hash(domain: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&domain).chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn name_hash(name: &str) -> u64 {
    hash(b'n', name.as_bytes())
}

fn addr_hash(ip: &IpAddr) -> u64 {
    let (family, bytes) = ip_bytes(ip);
    let mut v = [0u8; 17];
    v[0] = family;
    v[1..].copy_from_slice(&bytes);
    hash(b'a', &v)
}

fn key_hash(key: &str) -> u64 {
    hash(b'k', key.as_bytes())
}

/// The sizes of one index file; fixed for the file's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    peer_cap: u32,
    buckets: u32,
    heap_cap: u32,
}

impl Geometry {
    /// Room for twice `peers`, `buckets` and `heap` (tables at most half full before a
    /// rebuild, a quarter after one).
    fn for_content(peers: usize, buckets: usize, heap: usize) -> Geometry {
        let pow = |n: usize, min: usize| n.max(min).next_power_of_two() as u32;
        Geometry {
            peer_cap: pow(2 * peers, 64),
            buckets: pow(4 * buckets, 512),
            heap_cap: pow(2 * heap, 16 << 10),
        }
    }

    fn peers_at(&self) -> usize {
        HEADER
    }

    fn buckets_at(&self) -> usize {
        HEADER + PEER * self.peer_cap as usize
    }

    fn heap_at(&self) -> usize {
        self.buckets_at() + BUCKET * self.buckets as usize
    }

    fn file_len(&self) -> usize {
        self.heap_at() + self.heap_cap as usize
    }
}

/// A torn or out-of-bounds read: retried while a writer is at work, damage otherwise.
#[derive(Debug)]
struct Torn;

/// Bounds-checked, atomic access to a mapping another process may be changing.
#[derive(Clone, Copy)]
struct Mem {
    ptr: *mut u8,
    len: usize,
}

impl Mem {
    fn u8(&self, off: usize) -> Result<u8, Torn> {
        if off >= self.len {
            return Err(Torn);
        }
        // SAFETY: in bounds of a live mapping; an atomic load is sound against a concurrent
        // writer, and u8 needs no alignment.
        Ok(unsafe { (*(self.ptr.add(off) as *const AtomicU8)).load(Ordering::Relaxed) })
    }

    fn u16(&self, off: usize) -> Result<u16, Torn> {
        Ok(u16::from_le_bytes([self.u8(off)?, self.u8(off + 1)?]))
    }

    fn u32(&self, off: usize) -> Result<u32, Torn> {
        if off & 3 != 0 || self.len < 4 || off > self.len - 4 {
            return Err(Torn);
        }
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned).
        Ok(unsafe { (*(self.ptr.add(off) as *const AtomicU32)).load(Ordering::Relaxed) })
    }

    fn seq(&self) -> &AtomicU64 {
        // SAFETY: every mapping is at least HEADER bytes (checked at open); H_SEQ is 8-aligned.
        unsafe { &*(self.ptr.add(H_SEQ) as *const AtomicU64) }
    }

    fn superseded(&self) -> &AtomicU32 {
        // SAFETY: as for `seq`.
        unsafe { &*(self.ptr.add(H_SUPERSEDED) as *const AtomicU32) }
    }

    fn magic(&self) -> u64 {
        // SAFETY: as for `seq`.
        unsafe { (*(self.ptr.add(H_MAGIC) as *const AtomicU64)).load(Ordering::Acquire) }
    }

    /// Writer only (it holds the network lock; readers only load).
    fn set_u8(&self, off: usize, v: u8) {
        assert!(off < self.len);
        // SAFETY: in bounds of a writable mapping.
        unsafe { (*(self.ptr.add(off) as *const AtomicU8)).store(v, Ordering::Relaxed) }
    }

    fn set_u32(&self, off: usize, v: u32) {
        assert!(off & 3 == 0 && off + 4 <= self.len);
        // SAFETY: in bounds and aligned, in a writable mapping.
        unsafe { (*(self.ptr.add(off) as *const AtomicU32)).store(v, Ordering::Relaxed) }
    }

    fn set_u64_release(&self, off: usize, v: u64) {
        assert!(off & 7 == 0 && off + 8 <= self.len);
        // SAFETY: in bounds and aligned, in a writable mapping.
        unsafe { (*(self.ptr.add(off) as *const AtomicU64)).store(v, Ordering::Release) }
    }

    fn set_bytes(&self, off: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.set_u8(off + i, *b);
        }
    }

    fn geometry(&self) -> Result<Geometry, Torn> {
        let g = Geometry {
            peer_cap: self.u32(H_PEER_CAP)?,
            buckets: self.u32(H_BUCKETS)?,
            heap_cap: self.u32(H_HEAP_CAP)?,
        };
        let sane = g.buckets.is_power_of_two() && g.peer_cap > 0 && g.file_len() <= self.len;
        sane.then_some(g).ok_or(Torn)
    }
}

/// A peer's blob in the heap, read field by field.
struct Blob {
    mem: Mem,
    pos: usize,
    end: usize,
}

impl Blob {
    fn at(mem: Mem, g: &Geometry, slot: u32) -> Result<Blob, Torn> {
        if slot >= g.peer_cap {
            return Err(Torn);
        }
        let p = g.peers_at() + PEER * slot as usize;
        let (off, len) = (mem.u32(p)? as usize, mem.u32(p + 4)? as usize);
        if len == 0 || off + len > g.heap_cap as usize {
            return Err(Torn);
        }
        let start = g.heap_at() + off;
        Ok(Blob {
            mem,
            pos: start,
            end: start + len,
        })
    }

    fn take(&mut self, n: usize) -> Result<usize, Torn> {
        let at = self.pos;
        if at + n > self.end {
            return Err(Torn);
        }
        self.pos += n;
        Ok(at)
    }

    fn u16(&mut self) -> Result<u16, Torn> {
        let at = self.take(2)?;
        self.mem.u16(at)
    }

    fn string(&mut self) -> Result<String, Torn> {
        let len = self.u16()? as usize;
        let at = self.take(len)?;
        let bytes = (0..len)
            .map(|i| self.mem.u8(at + i))
            .collect::<Result<Vec<u8>, Torn>>()?;
        String::from_utf8(bytes).map_err(|_| Torn)
    }

    fn string_is(&mut self, want: &str) -> Result<bool, Torn> {
        let len = self.u16()? as usize;
        let at = self.take(len)?;
        if len != want.len() {
            return Ok(false);
        }
        for (i, b) in want.bytes().enumerate() {
            if self.mem.u8(at + i)? != b {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn skip_string(&mut self) -> Result<(), Torn> {
        let len = self.u16()? as usize;
        self.take(len).map(drop)
    }

    fn ip(&mut self) -> Result<IpAddr, Torn> {
        let at = self.take(17)?;
        let mut b = [0u8; 16];
        for (i, x) in b.iter_mut().enumerate() {
            *x = self.mem.u8(at + 1 + i)?;
        }
        match self.mem.u8(at)? {
            4 => Ok(IpAddr::from([b[0], b[1], b[2], b[3]])),
            6 => Ok(IpAddr::from(b)),
            _ => Err(Torn),
        }
    }

    fn key_is(&mut self, key: &str) -> Result<bool, Torn> {
        self.string_is(key)
    }

    /// Past the key, the container name.
    fn name(&mut self) -> Result<Option<String>, Torn> {
        self.skip_string()?;
        let at = self.take(1)?;
        match self.mem.u8(at)? {
            0 => Ok(None),
            _ => self.string().map(Some),
        }
    }

    /// Past the key and the name, whether `name` is one of the served names; the blob is
    /// then positioned at the address list.
    fn serves(&mut self, name: &str) -> Result<bool, Torn> {
        self.name_skip()?;
        let n = self.u16()?;
        let mut found = false;
        for _ in 0..n {
            if !found {
                found = self.string_is(name)?;
            } else {
                self.skip_string()?;
            }
        }
        Ok(found)
    }

    fn name_skip(&mut self) -> Result<(), Torn> {
        self.skip_string()?;
        let at = self.take(1)?;
        if self.mem.u8(at)? != 0 {
            self.skip_string()?;
        }
        Ok(())
    }

    /// At the address list, the addresses.
    fn ips(&mut self) -> Result<Vec<IpAddr>, Torn> {
        let n = self.u16()?;
        (0..n).map(|_| self.ip()).collect()
    }

    fn entry(mut self) -> Result<Entry, Torn> {
        let key = self.string()?;
        let at = self.take(1)?;
        let name = match self.mem.u8(at)? {
            0 => None,
            _ => Some(self.string()?),
        };
        let n = self.u16()?;
        let names = (0..n)
            .map(|_| self.string())
            .collect::<Result<Vec<_>, _>>()?;
        let ips = self.ips()?;
        Ok(Entry {
            key,
            name,
            names,
            ips,
        })
    }
}

/// The buckets a hash probes, in order, up to the first empty one: (bucket offset, kind, slot)
/// of those whose tag matches.
fn probe(
    mem: Mem,
    g: &Geometry,
    h: u64,
    mut visit: impl FnMut(usize, u32, u32) -> Result<bool, Torn>,
) -> Result<(), Torn> {
    let mask = g.buckets as usize - 1;
    let tag = (h >> 32) as u32;
    let start = h as usize & mask;
    for i in 0..g.buckets as usize {
        let b = g.buckets_at() + BUCKET * ((start + i) & mask);
        let kind = mem.u32(b)?;
        if kind == EMPTY {
            return Ok(());
        }
        if kind != TOMBSTONE && mem.u32(b + 4)? == tag && !visit(b, kind, mem.u32(b + 8)?)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Why a read gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// A writer held the index longer than a reader waits (it may have died mid-change).
    Busy,
    /// The file is damaged (or not an index); the next writer rebuilds it.
    Damaged,
    /// There is no index file (yet).
    Missing,
    /// The file is there but cannot be opened (permissions): never read as "no names".
    Unreadable,
}

struct Mapped {
    map: Mmap,
    g: Geometry,
    /// The file's identity, to notice a replacement the writer did not announce.
    ino: (u64, u64),
}

impl Mapped {
    fn open(path: &Path) -> Result<Mapped, ReadError> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ReadError::Missing,
            _ => ReadError::Unreadable,
        })?;
        // SAFETY: the mapping is only read through `Mem`, which copes with concurrent
        // changes; the file is never truncated (a bigger index is a new file).
        let map = unsafe { Mmap::map(&file) }.map_err(|_| ReadError::Damaged)?;
        let mem = mem_of(map.as_ptr(), map.len()).ok_or(ReadError::Damaged)?;
        if mem.magic() != MAGIC {
            return Err(ReadError::Damaged);
        }
        let g = mem.geometry().map_err(|_| ReadError::Damaged)?;
        let meta = file.metadata().map_err(|_| ReadError::Damaged)?;
        Ok(Mapped {
            map,
            g,
            ino: (meta.dev(), meta.ino()),
        })
    }

    fn mem(&self) -> Mem {
        Mem {
            ptr: self.map.as_ptr() as *mut u8,
            len: self.map.len(),
        }
    }

    /// Runs `f` as a seqlock reader: retried while a writer is at work.
    fn read<T>(&self, f: impl Fn(Mem, &Geometry) -> Result<T, Torn>) -> Result<T, ReadError> {
        let mem = self.mem();
        let deadline = Instant::now() + READ_PATIENCE;
        let mut spins = 0u32;
        loop {
            let s1 = mem.seq().load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let r = f(mem, &self.g);
                fence(Ordering::Acquire);
                if mem.seq().load(Ordering::Relaxed) == s1 {
                    return r.map_err(|_| ReadError::Damaged);
                }
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else if Instant::now() < deadline {
                std::thread::yield_now();
            } else {
                return Err(ReadError::Busy);
            }
        }
    }
}

fn mem_of(ptr: *const u8, len: usize) -> Option<Mem> {
    (len >= HEADER).then_some(Mem {
        ptr: ptr as *mut u8,
        len,
    })
}

/// A resolver's read-only view of one network's index, re-opened when superseded.
pub struct IndexReader {
    path: PathBuf,
    current: Option<Mapped>,
    checked: Instant,
}

/// How often a reader makes sure `.index` is still the file it maps, in case it was replaced
/// by other means than a writer (which announces it with `superseded`).
const RECHECK: Duration = Duration::from_secs(1);

impl IndexReader {
    pub fn new(store: &NetworkStore) -> IndexReader {
        IndexReader {
            path: index_path(store),
            current: None,
            checked: Instant::now(),
        }
    }

    fn stale(&mut self) -> bool {
        let Some(m) = &self.current else {
            return true;
        };
        if m.mem().superseded().load(Ordering::Acquire) != 0 {
            return true;
        }
        if self.checked.elapsed() < RECHECK {
            return false;
        }
        self.checked = Instant::now();
        std::fs::metadata(&self.path).is_ok_and(|meta| (meta.dev(), meta.ino()) != m.ino)
    }

    fn mapped(&mut self) -> Result<&Mapped, ReadError> {
        if self.stale() {
            match Mapped::open(&self.path) {
                Ok(m) => self.current = Some(m),
                // A superseded map is still better than none while the new file is missing.
                Err(ReadError::Missing) if self.current.is_some() => {}
                Err(e) => {
                    self.current = None;
                    return Err(e);
                }
            }
        }
        self.current.as_ref().ok_or(ReadError::Missing)
    }

    /// Runs a read; a damaged file is dropped, so the next read re-opens `.index` (which the
    /// next writer rebuilds).
    fn read<T>(&mut self, f: impl Fn(Mem, &Geometry) -> Result<T, Torn>) -> Result<T, ReadError> {
        let r = self.mapped()?.read(f);
        if r.is_err() {
            if let Err(ReadError::Damaged) = r {
                self.current = None;
            }
        }
        r
    }

    /// Every address of the attachments answering to `name` (normalized), deduplicated;
    /// `None` when no attachment does.
    pub fn addresses(&mut self, name: &str) -> Result<Option<Vec<IpAddr>>, ReadError> {
        let h = name_hash(name);
        self.read(|mem, g| {
            let mut out: Option<Vec<IpAddr>> = None;
            probe(mem, g, h, |_, kind, slot| {
                if kind == NAME {
                    let mut blob = Blob::at(mem, g, slot)?;
                    if blob.serves(name)? {
                        let ips = out.get_or_insert_with(Vec::new);
                        for ip in blob.ips()? {
                            if !ips.contains(&ip) {
                                ips.push(ip);
                            }
                        }
                    }
                }
                Ok(true)
            })?;
            Ok(out)
        })
    }

    /// The container name of an attachment holding `ip` (R10).
    pub fn pointer(&mut self, ip: &IpAddr) -> Result<Option<String>, ReadError> {
        let h = addr_hash(ip);
        self.read(|mem, g| {
            let mut out = None;
            probe(mem, g, h, |_, kind, slot| {
                if kind == ADDR {
                    let mut blob = Blob::at(mem, g, slot)?;
                    let name = blob.name()?;
                    for _ in 0..blob.u16()? {
                        blob.skip_string()?;
                    }
                    if name.is_some() && blob.ips()?.contains(ip) {
                        out = name;
                        return Ok(false);
                    }
                }
                Ok(true)
            })?;
            Ok(out)
        })
    }

    /// How many attachments the network has.
    pub fn len(&mut self) -> Result<usize, ReadError> {
        self.read(|mem, _| Ok(mem.u32(H_LIVE)? as usize))
    }

    pub fn is_empty(&mut self) -> Result<bool, ReadError> {
        self.len().map(|n| n == 0)
    }
}

pub fn index_path(store: &NetworkStore) -> PathBuf {
    store.dir().join(INDEX_FILE)
}

/// The plugin's writable view of a network's index; exists only under the network's lock.
pub struct IndexWriter<'l> {
    store: &'l NetworkStore,
    lock: &'l NetworkLock,
    map: MmapMut,
    g: Geometry,
}

impl<'l> IndexWriter<'l> {
    /// Opens the network's index, building it from the records when it is missing or
    /// damaged, or when a writer died in the middle of a change (then the old file is marked
    /// superseded, so its readers move on).
    pub fn open(store: &'l NetworkStore, lock: &'l NetworkLock) -> Result<Self, ConfError> {
        let path = index_path(store);
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
                return Self::rebuild(store, lock, None);
            };
            let even = mem.seq().load(Ordering::Acquire) & 1 == 0;
            match mem.geometry() {
                Ok(g) if mem.magic() == MAGIC && even && counters_sane(mem, &g) => {
                    return Ok(IndexWriter {
                        store,
                        lock,
                        map,
                        g,
                    })
                }
                _ => {
                    tracing::warn!(path = %path.display(), "the network index is damaged or was left mid-change; rebuilding it");
                    let w = Self::rebuild(store, lock, None)?;
                    mem.superseded().store(1, Ordering::Release);
                    return Ok(w);
                }
            }
        }
        Self::rebuild(store, lock, None)
    }

    /// A new index from the JSON records.
    fn rebuild(
        store: &'l NetworkStore,
        lock: &'l NetworkLock,
        previous: Option<&IndexWriter<'_>>,
    ) -> Result<Self, ConfError> {
        let mut entries = Vec::new();
        for (key, rec) in store.list()? {
            match rec {
                Ok(r) => entries.push(Entry::of(&r)),
                Err(e) => tracing::error!(%key, "not indexed: {e}"),
            }
        }
        tracing::info!(dir = %store.dir().display(), records = entries.len(), "building the network index");
        Self::build(store, lock, &entries, previous)
    }

    /// Writes a new index holding `entries` and renames it into place; `previous`, if any,
    /// is marked superseded.
    fn build(
        store: &'l NetworkStore,
        lock: &'l NetworkLock,
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
        );
        let dir = store.dir();
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
        let w = IndexWriter {
            store,
            lock,
            map,
            g,
        };
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
        for (e, blob) in entries.iter().zip(&blobs) {
            w.put(e, blob)
                .expect("a new index is sized for its entries");
        }
        mem.set_u64_release(H_MAGIC, MAGIC);
        let path = index_path(store);
        tmp.persist(&path)
            .map_err(|e| ConfError::io(&path, e.error))?;
        if let Some(old) = previous {
            old.mem().superseded().store(1, Ordering::Release);
        }
        Ok(w)
    }

    fn mem(&self) -> Mem {
        Mem {
            ptr: self.map.as_ptr() as *mut u8,
            len: self.map.len(),
        }
    }

    /// Adds an attachment, or replaces the one with the same key.
    pub fn insert(self, record: &Record) -> Result<Self, ConfError> {
        let entry = Entry::of(record);
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
            Err(Torn) => Self::rebuild(self.store, self.lock, Some(&self)),
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
                let rebuilt = Self::rebuild(self.store, self.lock, Some(&self))?;
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
            .store
            .list()?
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
        let rebuilt = Self::rebuild(self.store, self.lock, Some(&self))?;
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
            return Self::rebuild(self.store, self.lock, Some(&self));
        };
        entries.retain(|e| e.key != entry.key);
        entries.push(entry);
        Self::build(self.store, self.lock, &entries, Some(&self))
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

/// Whether the header's counters fit the geometry (a writer trusts them for its room checks).
fn counters_sane(mem: Mem, g: &Geometry) -> bool {
    let field = |off| mem.u32(off).unwrap_or(u32::MAX);
    field(H_LIVE) <= g.peer_cap
        && field(H_FREE_HEAD) <= g.peer_cap
        && field(H_USED_BUCKETS) <= g.buckets
        && field(H_HEAP_USED) <= g.heap_cap
}

/// The buckets an entry takes: its key, each name, each address.
fn bucket_hashes(e: &Entry) -> Vec<(u32, u64)> {
    let mut out = vec![(KEY, key_hash(&e.key))];
    out.extend(e.names.iter().map(|n| (NAME, name_hash(n))));
    out.extend(e.ips.iter().map(|ip| (ADDR, addr_hash(ip))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::StatePaths;

    fn rec(cid: &str, name: &str, aliases: &[&str], ips: &[&str]) -> Record {
        let ips = ips.iter().map(|s| s.parse().unwrap()).collect();
        Record::with_defaults("n", cid, Some(name), aliases, ips)
    }

    /// Network `n` in a fresh state dir (kept while the returned guard lives).
    fn network() -> (tempfile::TempDir, NetworkStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(&StatePaths::new(tmp.path()), "n");
        (tmp, store)
    }

    fn ip_of(i: usize) -> String {
        format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
    }

    fn sorted(v: Option<Vec<IpAddr>>) -> Vec<String> {
        let mut v: Vec<String> = v
            .unwrap_or_default()
            .iter()
            .map(|i| i.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn insert_lookup_replace_remove() {
        let (_tmp, store) = network();
        let lock = store.lock().unwrap();
        let mut reader = IndexReader::new(&store);
        assert_eq!(reader.addresses("web"), Err(ReadError::Missing));
        store
            .put(&lock, &rec("c1", "web", &["www"], &["10.0.0.2", "fd00::2"]))
            .unwrap();
        store
            .put(&lock, &rec("c2", "api", &["www"], &["10.0.0.3"]))
            .unwrap();
        assert_eq!(
            sorted(reader.addresses("web").unwrap()),
            ["10.0.0.2", "fd00::2"]
        );
        assert_eq!(
            sorted(reader.addresses("www").unwrap()),
            ["10.0.0.2", "10.0.0.3", "fd00::2"]
        );
        assert_eq!(reader.addresses("nope").unwrap(), None);
        assert_eq!(
            reader
                .pointer(&"10.0.0.3".parse().unwrap())
                .unwrap()
                .as_deref(),
            Some("api")
        );
        assert_eq!(reader.pointer(&"10.0.0.9".parse().unwrap()).unwrap(), None);
        assert_eq!(reader.len().unwrap(), 2);
        // Replacing a record drops its old names and addresses.
        store
            .put(&lock, &rec("c1", "web", &[], &["10.0.0.4"]))
            .unwrap();
        assert_eq!(sorted(reader.addresses("www").unwrap()), ["10.0.0.3"]);
        assert_eq!(sorted(reader.addresses("web").unwrap()), ["10.0.0.4"]);
        assert_eq!(reader.pointer(&"10.0.0.2".parse().unwrap()).unwrap(), None);
        assert_eq!(reader.len().unwrap(), 2);
        store.remove(&lock, "c2", "eth0").unwrap();
        assert_eq!(reader.addresses("api").unwrap(), None);
        assert_eq!(reader.addresses("www").unwrap(), None);
        assert_eq!(reader.len().unwrap(), 1);
        // Removing what is not there changes nothing.
        store.remove(&lock, "c2", "eth0").unwrap();
        assert_eq!(reader.len().unwrap(), 1);
    }

    #[test]
    fn growth_and_churn_keep_an_open_reader_right() {
        let (_tmp, store) = network();
        let lock = store.lock().unwrap();
        store
            .put(&lock, &rec("c0", "c0", &[], &[&ip_of(0)]))
            .unwrap();
        let mut reader = IndexReader::new(&store);
        assert_eq!(reader.len().unwrap(), 1);
        let first_len = std::fs::metadata(index_path(&store)).unwrap().len();
        for i in 1..1000 {
            store
                .put(
                    &lock,
                    &rec(&format!("c{i}"), &format!("c{i}"), &["all"], &[&ip_of(i)]),
                )
                .unwrap();
        }
        assert!(std::fs::metadata(index_path(&store)).unwrap().len() > first_len);
        assert_eq!(reader.len().unwrap(), 1000);
        assert_eq!(sorted(reader.addresses("c999").unwrap()), [ip_of(999)]);
        assert_eq!(reader.addresses("all").unwrap().unwrap().len(), 999);
        // Churn: tombstones and garbage are compacted by rebuilds, and nothing is lost.
        for round in 0..3 {
            for i in (1..1000).step_by(2) {
                store.remove(&lock, &format!("c{i}"), "eth0").unwrap();
            }
            assert_eq!(reader.len().unwrap(), 500, "round {round}");
            assert_eq!(reader.addresses("c3").unwrap(), None);
            for i in (1..1000).step_by(2) {
                store
                    .put(
                        &lock,
                        &rec(&format!("c{i}"), &format!("c{i}"), &["all"], &[&ip_of(i)]),
                    )
                    .unwrap();
            }
            assert_eq!(reader.len().unwrap(), 1000);
            assert_eq!(sorted(reader.addresses("c3").unwrap()), [ip_of(3)]);
            assert_eq!(reader.addresses("all").unwrap().unwrap().len(), 999);
        }
        let size = std::fs::metadata(index_path(&store)).unwrap().len();
        assert!(size < 2 << 20, "index of 1000 records is {size} bytes");
    }

    #[test]
    fn a_writer_that_died_mid_change_is_repaired_from_the_records() {
        let (_tmp, store) = network();
        let lock = store.lock().unwrap();
        store
            .put(&lock, &rec("c1", "web", &[], &["10.0.0.2"]))
            .unwrap();
        let mut reader = IndexReader::new(&store);
        assert!(reader.addresses("web").unwrap().is_some());
        // A writer dies with seq odd: readers give up after their patience, not forever.
        {
            let w = IndexWriter::open(&store, &lock).unwrap();
            w.mem().seq().fetch_add(1, Ordering::SeqCst);
        }
        assert_eq!(reader.addresses("web"), Err(ReadError::Busy));
        // The next writer rebuilds from the JSON records and the reader moves to the new file.
        store
            .put(&lock, &rec("c2", "api", &[], &["10.0.0.3"]))
            .unwrap();
        assert_eq!(sorted(reader.addresses("web").unwrap()), ["10.0.0.2"]);
        assert_eq!(sorted(reader.addresses("api").unwrap()), ["10.0.0.3"]);
        // Garbage in place of the index is rebuilt too.
        std::fs::write(index_path(&store), b"not an index").unwrap();
        let mut fresh = IndexReader::new(&store);
        assert_eq!(fresh.addresses("web"), Err(ReadError::Damaged));
        store.remove(&lock, "c2", "eth0").unwrap();
        assert_eq!(sorted(fresh.addresses("web").unwrap()), ["10.0.0.2"]);
        assert_eq!(fresh.addresses("api").unwrap(), None);
    }

    #[test]
    fn readers_never_see_a_wrong_answer_while_a_writer_churns() {
        let (_tmp, store) = network();
        {
            let lock = store.lock().unwrap();
            store
                .put(&lock, &rec("c0", "c0", &[], &[&ip_of(0)]))
                .unwrap();
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut r = IndexReader::new(&store);
                let (mut hits, mut lookups) = (0, 0);
                while !done.load(Ordering::Relaxed) {
                    for i in 0..300 {
                        lookups += 1;
                        // Each name only ever has its own address.
                        if let Some(ips) = r.addresses(&format!("c{i}")).unwrap() {
                            assert_eq!(sorted(Some(ips)), [ip_of(i)]);
                            hits += 1;
                        }
                    }
                }
                (hits, lookups)
            });
            for round in 0..4 {
                for i in 1..300 {
                    let lock = store.lock().unwrap();
                    if round & 1 == 0 {
                        store
                            .put(
                                &lock,
                                &rec(&format!("c{i}"), &format!("c{i}"), &[], &[&ip_of(i)]),
                            )
                            .unwrap();
                    } else {
                        store.remove(&lock, &format!("c{i}"), "eth0").unwrap();
                    }
                }
            }
            done.store(true, Ordering::Relaxed);
            let (hits, lookups) = reader.join().unwrap();
            assert!(hits > 0 && lookups > hits, "{hits} hits of {lookups}");
        });
    }
}

//! The resolvers' side: a read-only mapping of `.index`, read as a seqlock reader (copy out,
//! retry if a writer moved `seq` meanwhile), re-opened when the writer supersedes the file.

use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use memmap2::Mmap;

use super::entry::*;
use super::layout::*;

/// How long a reader waits for a writer to finish before it reports the index busy (a
/// change takes microseconds; only a writer that died mid-change holds it longer).
pub(super) const READ_PATIENCE: Duration = Duration::from_millis(20);

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

pub(super) struct Mapped {
    map: Mmap,
    g: Geometry,
    /// The file's device and inode, to notice a replacement the writer did not announce.
    ino: (u64, u64),
}

impl Mapped {
    pub(super) fn open(path: &Path) -> Result<Mapped, ReadError> {
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

    pub(super) fn mem(&self) -> Mem {
        Mem::of_mapping(self.map.as_ptr(), self.map.len())
    }

    /// Runs `f` as a seqlock reader: retried while a writer is at work.
    pub(super) fn read<T>(
        &self,
        f: impl Fn(Mem, &Geometry) -> Result<T, Torn>,
    ) -> Result<T, ReadError> {
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

/// A PTR answer: the container name holding an address, and whether that container is on
/// this host (a local one wins, on every network of the asker: R31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub name: String,
    pub local: bool,
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
    /// The reader of the index in the network directory `dir` (opened at the first lookup).
    pub fn new(dir: &Path) -> IndexReader {
        IndexReader {
            path: index_path(dir),
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

    /// The container name of an attachment holding `ip` (R10), and whether it is this host's. This host's attachment wins
    /// over another host's (a key with a `/`): a record from etcd claiming a local
    /// container's address, by mistake (overlapping subnets) or not, never takes its PTR.
    pub fn pointer(&mut self, ip: &IpAddr) -> Result<Option<Pointer>, ReadError> {
        let h = addr_hash(ip);
        self.read(|mem, g| {
            let (mut local, mut remote) = (None, None);
            probe(mem, g, h, |_, kind, slot| {
                if kind == ADDR {
                    let from_another_host =
                        crate::attachment::StoreKey::is_remote(&Blob::at(mem, g, slot)?.string()?);
                    let mut blob = Blob::at(mem, g, slot)?;
                    let name = blob.name()?;
                    for _ in 0..blob.u16()? {
                        blob.skip_string()?;
                    }
                    if name.is_some() && blob.ips()?.contains(ip) {
                        if !from_another_host {
                            local = name;
                            return Ok(false);
                        }
                        remote = remote.take().or(name);
                    }
                }
                Ok(true)
            })?;
            let local = local.map(|name| Pointer { name, local: true });
            Ok(local.or(remote.map(|name| Pointer { name, local: false })))
        })
    }

    /// How many attachments the network has.
    pub fn len(&mut self) -> Result<usize, ReadError> {
        self.read(|mem, _| Ok(mem.u32(H_LIVE)? as usize))
    }

    /// Whether the index holds no attachment.
    pub fn is_empty(&mut self) -> Result<bool, ReadError> {
        self.len().map(|n| n == 0)
    }
}

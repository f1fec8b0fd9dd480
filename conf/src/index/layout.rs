//! The index file's layout (header, peer table, bucket table, heap; see the module docs) and
//! the bounds-checked, atomic access through which both sides touch a mapping another
//! process may be changing. Every unsafe dereference of the index is in this file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// The index's file name in a network directory (a dot file: not a record).
pub const INDEX_FILE: &str = ".index";

/// The index file of the network whose directory is `dir`.
pub fn index_path(dir: &Path) -> PathBuf {
    dir.join(INDEX_FILE)
}

pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"EMBNSIX1");

// Header fields, byte offsets.
pub(super) const HEADER: usize = 64;
pub(super) const H_MAGIC: usize = 0;
pub(super) const H_SEQ: usize = 8;
pub(super) const H_SUPERSEDED: usize = 16;
pub(super) const H_PEER_CAP: usize = 20;
pub(super) const H_BUCKETS: usize = 24;
pub(super) const H_HEAP_CAP: usize = 28;
pub(super) const H_HEAP_USED: usize = 32;
pub(super) const H_LIVE: usize = 36;
pub(super) const H_USED_BUCKETS: usize = 40;
pub(super) const H_GARBAGE: usize = 44;
pub(super) const H_FREE_HEAD: usize = 48;
/// Which name forms the entries carry ([`FORMS`]); 0 in a file of a release before R35, whose
/// readers ignore the field (the header's bytes past it were always zero).
pub(super) const H_FORMS: usize = 52;

/// The name forms this build writes: 1, R35's `ns/name` of a scoped attachment and `/name`
/// of an unscoped one beside the plain names. A writer finding fewer rebuilds the index from
/// the records, so scoped askers see the attachments added before it.
pub(super) const FORMS: u32 = 1;

pub(super) const PEER: usize = 8;
pub(super) const BUCKET: usize = 12;

// Bucket kinds.
pub(super) const EMPTY: u32 = 0;
pub(super) const NAME: u32 = 1;
pub(super) const ADDR: u32 = 2;
pub(super) const KEY: u32 = 3;
pub(super) const TOMBSTONE: u32 = 4;

/// The sizes of one index file; fixed for the file's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) peer_cap: u32,
    pub(super) buckets: u32,
    pub(super) heap_cap: u32,
}

impl Geometry {
    /// Room for twice `peers`, `buckets` and `heap` (tables at most half full before a
    /// rebuild, a quarter after one); `None` past what the format's 32-bit sizes and offsets
    /// hold (2 GiB of heap: far past any bound of a network, R30's included).
    pub(super) fn for_content(peers: usize, buckets: usize, heap: usize) -> Option<Geometry> {
        let pow = |n: usize, min: usize| -> Option<u32> {
            let v = n.checked_mul(2)?.max(min).checked_next_power_of_two()?;
            (v <= 1 << 31).then_some(v as u32)
        };
        Some(Geometry {
            peer_cap: pow(peers, 64)?,
            buckets: pow(buckets.checked_mul(2)?, 512)?,
            heap_cap: pow(heap, 16 << 10)?,
        })
    }

    pub(super) fn peers_at(&self) -> usize {
        HEADER
    }

    pub(super) fn buckets_at(&self) -> usize {
        HEADER + PEER * self.peer_cap as usize
    }

    pub(super) fn heap_at(&self) -> usize {
        self.buckets_at() + BUCKET * self.buckets as usize
    }

    pub(super) fn file_len(&self) -> usize {
        self.heap_at() + self.heap_cap as usize
    }
}

/// A torn or out-of-bounds read: retried while a writer is at work, damage otherwise.
#[derive(Debug)]
pub(super) struct Torn;

/// Bounds-checked, atomic access to a mapping another process may be changing.
#[derive(Clone, Copy)]
pub(super) struct Mem {
    ptr: *mut u8,
    len: usize,
}

impl Mem {
    /// A mapping already known to be at least [`HEADER`] bytes (checked when it was opened
    /// or made): the header accessors rely on it.
    pub(super) fn of_mapping(ptr: *const u8, len: usize) -> Mem {
        debug_assert!(len >= HEADER);
        Mem {
            ptr: ptr as *mut u8,
            len,
        }
    }

    pub(super) fn u8(&self, off: usize) -> Result<u8, Torn> {
        if off >= self.len {
            return Err(Torn);
        }
        // SAFETY: in bounds of a live mapping; an atomic load is sound against a concurrent
        // writer, and u8 needs no alignment.
        Ok(unsafe { (*(self.ptr.add(off) as *const AtomicU8)).load(Ordering::Relaxed) })
    }

    pub(super) fn u16(&self, off: usize) -> Result<u16, Torn> {
        Ok(u16::from_le_bytes([self.u8(off)?, self.u8(off + 1)?]))
    }

    pub(super) fn u32(&self, off: usize) -> Result<u32, Torn> {
        if off & 3 != 0 || self.len < 4 || off > self.len - 4 {
            return Err(Torn);
        }
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned).
        Ok(unsafe { (*(self.ptr.add(off) as *const AtomicU32)).load(Ordering::Relaxed) })
    }

    pub(super) fn seq(&self) -> &AtomicU64 {
        // SAFETY: every mapping is at least HEADER bytes (checked at open); H_SEQ is 8-aligned.
        unsafe { &*(self.ptr.add(H_SEQ) as *const AtomicU64) }
    }

    pub(super) fn superseded(&self) -> &AtomicU32 {
        // SAFETY: as for `seq`.
        unsafe { &*(self.ptr.add(H_SUPERSEDED) as *const AtomicU32) }
    }

    pub(super) fn magic(&self) -> u64 {
        // SAFETY: as for `seq`.
        unsafe { (*(self.ptr.add(H_MAGIC) as *const AtomicU64)).load(Ordering::Acquire) }
    }

    /// Writer only (it holds the network lock; readers only load).
    pub(super) fn set_u8(&self, off: usize, v: u8) {
        assert!(off < self.len);
        // SAFETY: in bounds of a writable mapping.
        unsafe { (*(self.ptr.add(off) as *const AtomicU8)).store(v, Ordering::Relaxed) }
    }

    pub(super) fn set_u32(&self, off: usize, v: u32) {
        assert!(off & 3 == 0 && off + 4 <= self.len);
        // SAFETY: in bounds and aligned, in a writable mapping.
        unsafe { (*(self.ptr.add(off) as *const AtomicU32)).store(v, Ordering::Relaxed) }
    }

    pub(super) fn set_u64_release(&self, off: usize, v: u64) {
        assert!(off & 7 == 0 && off + 8 <= self.len);
        // SAFETY: in bounds and aligned, in a writable mapping.
        unsafe { (*(self.ptr.add(off) as *const AtomicU64)).store(v, Ordering::Release) }
    }

    pub(super) fn set_bytes(&self, off: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.set_u8(off + i, *b);
        }
    }

    pub(super) fn geometry(&self) -> Result<Geometry, Torn> {
        let g = Geometry {
            peer_cap: self.u32(H_PEER_CAP)?,
            buckets: self.u32(H_BUCKETS)?,
            heap_cap: self.u32(H_HEAP_CAP)?,
        };
        let sane = g.buckets.is_power_of_two() && g.peer_cap > 0 && g.file_len() <= self.len;
        sane.then_some(g).ok_or(Torn)
    }
}

pub(super) fn mem_of(ptr: *const u8, len: usize) -> Option<Mem> {
    (len >= HEADER).then_some(Mem {
        ptr: ptr as *mut u8,
        len,
    })
}

/// Whether the header's counters fit the geometry (a writer trusts them for its room checks).
pub(super) fn counters_sane(mem: Mem, g: &Geometry) -> bool {
    let field = |off| mem.u32(off).unwrap_or(u32::MAX);
    field(H_LIVE) <= g.peer_cap
        && field(H_FREE_HEAD) <= g.peer_cap
        && field(H_USED_BUCKETS) <= g.buckets
        && field(H_HEAP_USED) <= g.heap_cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r30_a_size_past_the_formats_32_bits_is_refused_not_wrapped() {
        let g = Geometry::for_content(10, 40, 1 << 20).unwrap();
        assert_eq!((g.peer_cap, g.buckets, g.heap_cap), (64, 512, 2 << 20));
        // A heap of 1 GiB + 1 would need 4 GiB: it wrapped to 0 before (and the writer's
        // first put panicked).
        assert!(Geometry::for_content(10, 40, (1 << 30) + 1).is_none());
        assert!(Geometry::for_content(usize::MAX, 1, 1).is_none());
        assert!(Geometry::for_content(1 << 31, 1, 1).is_none());
        assert!(Geometry::for_content(1, 1, 1 << 30).is_some());
    }
}

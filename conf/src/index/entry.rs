//! One attachment's entry: the bytes a writer puts in the heap ([`Entry::encode`]) and how a
//! reader takes them back ([`Blob`]), side by side so the format is defined once; the hashes
//! and the bucket probe that find an entry by name, address or key.

use std::net::IpAddr;

use super::layout::*;
use crate::record::{scoped_name, Record};
use crate::ConfError;

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
    /// The entry a record makes: its names (with `name.<domain>` forms) and addresses, sorted.
    pub fn of(r: &Record) -> Entry {
        Entry::keyed(r.key(), r)
    }

    /// The entry of a record under `key` (its file's key: another host's records are
    /// `<host>/<cid>@<ifname>`).
    pub fn keyed(key: String, r: &Record) -> Entry {
        let mut names: Vec<String> = r.names().map(str::to_string).collect();
        if let Some(domain) = &r.domain_name {
            let qualified: Vec<String> = names.iter().map(|n| format!("{n}.{domain}")).collect();
            names.extend(qualified);
        }
        // R35: a scoped attachment answers its own namespace's askers under `ns/name`, an
        // unscoped one every scoped asker under `/name`; both keep their plain names for
        // askers without a namespace (and resolvers of releases before R35, which know no
        // other form).
        let ns = r.namespace.as_deref().unwrap_or("");
        let scoped: Vec<String> = names.iter().map(|n| scoped_name(ns, n)).collect();
        names.extend(scoped);
        names.sort();
        names.dedup();
        let mut ips = r.ips.clone();
        ips.sort();
        ips.dedup();
        Entry {
            key,
            name: r.name.clone(),
            names,
            ips,
        }
    }

    /// Buckets this entry takes: its key, each name, each address.
    pub(super) fn buckets(&self) -> usize {
        1 + self.names.len() + self.ips.len()
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, ConfError> {
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

pub(super) fn ip_bytes(ip: &IpAddr) -> (u8, [u8; 16]) {
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
pub(super) fn hash(domain: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&domain).chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub(super) fn name_hash(name: &str) -> u64 {
    hash(b'n', name.as_bytes())
}

pub(super) fn addr_hash(ip: &IpAddr) -> u64 {
    let (family, bytes) = ip_bytes(ip);
    let mut v = [0u8; 17];
    v[0] = family;
    v[1..].copy_from_slice(&bytes);
    hash(b'a', &v)
}

pub(super) fn key_hash(key: &str) -> u64 {
    hash(b'k', key.as_bytes())
}

/// A peer's blob in the heap, read field by field.
pub(super) struct Blob {
    mem: Mem,
    pos: usize,
    end: usize,
}

impl Blob {
    pub(super) fn at(mem: Mem, g: &Geometry, slot: u32) -> Result<Blob, Torn> {
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

    pub(super) fn take(&mut self, n: usize) -> Result<usize, Torn> {
        let at = self.pos;
        if at + n > self.end {
            return Err(Torn);
        }
        self.pos += n;
        Ok(at)
    }

    pub(super) fn u16(&mut self) -> Result<u16, Torn> {
        let at = self.take(2)?;
        self.mem.u16(at)
    }

    pub(super) fn string(&mut self) -> Result<String, Torn> {
        let len = self.u16()? as usize;
        let at = self.take(len)?;
        let bytes = (0..len)
            .map(|i| self.mem.u8(at + i))
            .collect::<Result<Vec<u8>, Torn>>()?;
        String::from_utf8(bytes).map_err(|_| Torn)
    }

    pub(super) fn string_is(&mut self, want: &str) -> Result<bool, Torn> {
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

    pub(super) fn skip_string(&mut self) -> Result<(), Torn> {
        let len = self.u16()? as usize;
        self.take(len).map(drop)
    }

    pub(super) fn ip(&mut self) -> Result<IpAddr, Torn> {
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

    pub(super) fn key_is(&mut self, key: &str) -> Result<bool, Torn> {
        self.string_is(key)
    }

    /// Past the key, the container name.
    pub(super) fn name(&mut self) -> Result<Option<String>, Torn> {
        self.skip_string()?;
        let at = self.take(1)?;
        match self.mem.u8(at)? {
            0 => Ok(None),
            _ => self.string().map(Some),
        }
    }

    /// Past the key and the name, whether `name` is one of the served names; the blob is
    /// then positioned at the address list.
    pub(super) fn serves(&mut self, name: &str) -> Result<bool, Torn> {
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

    pub(super) fn name_skip(&mut self) -> Result<(), Torn> {
        self.skip_string()?;
        let at = self.take(1)?;
        if self.mem.u8(at)? != 0 {
            self.skip_string()?;
        }
        Ok(())
    }

    /// At the address list, the addresses.
    pub(super) fn ips(&mut self) -> Result<Vec<IpAddr>, Torn> {
        let n = self.u16()?;
        (0..n).map(|_| self.ip()).collect()
    }

    pub(super) fn entry(mut self) -> Result<Entry, Torn> {
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
pub(super) fn probe(
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

/// The buckets an entry takes: its key, each name, each address.
pub(super) fn bucket_hashes(e: &Entry) -> Vec<(u32, u64)> {
    let mut out = vec![(KEY, key_hash(&e.key))];
    out.extend(e.names.iter().map(|n| (NAME, name_hash(n))));
    out.extend(e.ips.iter().map(|ip| (ADDR, addr_hash(ip))));
    out
}

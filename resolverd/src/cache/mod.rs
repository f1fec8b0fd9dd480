//! R34 (ours): the resolver's cache of forwarded answers. Pure logic over bytes: what may be
//! cached, for how long, and the reply a hit relays. One cache per resolver, so one
//! container's answers never reach another's.
//!
//! - A query is cacheable when it has one question and no record but an OPT whose options,
//!   if any, are a COOKIE or padding (dig sends a cookie by default; neither changes the
//!   answer); its key is the question (name lower-cased, type, class) and the RD, CD, DO bits
//!   and whether it had an OPT record. The upstream set is the cache's generation: a change
//!   empties it (`sync`).
//! - An answer is kept when it is NOERROR or NXDOMAIN, not truncated, and parses to its end:
//!   positive ones for their smallest TTL, at most `max_ttl`; NXDOMAIN and NODATA for the
//!   smaller of their SOA's TTL and MINIMUM (RFC 2308 §5), at most `max_negative_ttl`, and
//!   not at all without an SOA. SERVFAIL, REFUSED, other codes and timeouts are never kept.
//! - What is kept has the options of the upstream's OPT record taken out: its COOKIE answered
//!   one client's exchange, not the next.
//! - A hit is the upstream's bytes with the client's ID and question (its case) and every TTL
//!   capped (in the first reply too) and counted down by the entry's age; it is served only if it fits the client's size (R13),
//!   else the query is forwarded as before.
//! - The bound is in bytes: each entry costs its key, its reply and a fixed overhead; the
//!   least recently used go first.

use std::time::Instant;

use embedns_conf::record::CacheSettings;
use lru::LruCache;

use crate::wire::{
    self, reply_limit, Options, Query, RCODE_NOERROR as NOERROR, RCODE_NXDOMAIN as NXDOMAIN,
    TYPE_OPT, TYPE_SOA,
};
/// What an entry costs beyond its key, bytes and TTL places: the list node and map slot, the
/// entry's fields, allocation headers. Measured: glibc's bytes in use (`mallinfo2`) grew by
/// 283 bytes per entry over 1,100 entries of a typical A answer, whose key, bytes and TTL
/// places are about 70.
const ENTRY_OVERHEAD: usize = 216;
/// No single answer takes more than this share of the bound.
const LARGEST_SHARE: usize = 8;

/// The key's flag byte.
const KEY_RD: u8 = 0x01;
const KEY_CD: u8 = 0x02;
const KEY_DO: u8 = 0x04;
const KEY_EDNS: u8 = 0x08;

/// What the cache and R34a's coalescing know of a query once it is read, owned: it goes with
/// the query upstream, so the forward's coalescing and the reply's keeping read nothing again.
#[derive(Debug, Clone)]
pub struct Asked {
    question_end: usize,
    /// The question, lower-cased, and the flag byte.
    key: Vec<u8>,
    edns_payload: Option<u16>,
}

/// A query the cache can answer, read in place: its [`Asked`] and its bytes.
pub struct Question<'a> {
    query: &'a [u8],
    asked: Asked,
}

impl std::ops::Deref for Question<'_> {
    type Target = Asked;

    fn deref(&self) -> &Asked {
        &self.asked
    }
}

impl<'a> Question<'a> {
    /// `None` for a query of another shape (more questions, records, EDNS options but a
    /// cookie or padding): those are forwarded and never cached.
    pub fn parse(query: &'a [u8]) -> Option<Question<'a>> {
        Question::of(&Query::parse(query)?)
    }

    /// The query `q`, read once already, if the cache may answer it: no OPT record, or one
    /// of version 0 whose options, if any, are a COOKIE or padding.
    pub fn of(q: &Query<'a>) -> Option<Question<'a>> {
        let query = q.bytes;
        let mut flags = 0;
        if query[2] & 0x01 != 0 {
            flags |= KEY_RD;
        }
        if query[3] & 0x10 != 0 {
            flags |= KEY_CD;
        }
        let edns_payload = match q.opt {
            None => None,
            Some(o) if o.version == 0 && o.options != Options::Other => {
                flags |= KEY_EDNS;
                if o.dnssec_ok {
                    flags |= KEY_DO;
                }
                Some(o.payload)
            }
            Some(_) => return None,
        };
        let mut key = query[12..q.question_end].to_ascii_lowercase();
        key.push(flags);
        Some(Question {
            query,
            asked: Asked {
                question_end: q.question_end,
                key,
                edns_payload,
            },
        })
    }

    /// What is kept of it once its bytes go on.
    pub fn into_asked(self) -> Asked {
        self.asked
    }
}

impl Asked {
    /// The cache's key: the question lower-cased and the flags that change the answer.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The payload size of the client's OPT record, if it sent one.
    pub fn edns_payload(&self) -> Option<u16> {
        self.edns_payload
    }
}

/// One kept answer.
struct Entry {
    reply: Box<[u8]>,
    stored: Instant,
    /// Seconds it may be served from `stored`.
    lifetime: u32,
    /// The cap its records' TTLs are served under (`max_ttl` or `max_negative_ttl`).
    cap: u32,
    /// Where the TTL of each record (the OPT record's excepted) is.
    ttls: Box<[u16]>,
    cost: usize,
}

/// The cache of one resolver.
pub struct Cache {
    settings: CacheSettings,
    /// The upstream set the entries came from.
    generation: u64,
    entries: LruCache<Box<[u8]>, Entry>,
    bytes: usize,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new()
    }
}

impl Cache {
    /// An empty cache that keeps nothing until [`Cache::sync`] gives it settings.
    pub fn new() -> Cache {
        Cache {
            settings: CacheSettings {
                size: 0,
                ..CacheSettings::default()
            },
            generation: 0,
            entries: LruCache::unbounded(),
            bytes: 0,
        }
    }

    /// Follows the resolver's upstream set: another generation (new upstreams, a reload,
    /// other settings) empties the cache first.
    pub fn sync(&mut self, generation: u64, settings: CacheSettings) {
        if generation != self.generation || settings != self.settings {
            // A new map: a cache turned off or shrunk gives its memory back.
            self.entries = LruCache::unbounded();
            self.bytes = 0;
            self.generation = generation;
            self.settings = settings;
        }
    }

    /// The upstream set its entries came from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Entries and the bytes they are counted at.
    pub fn usage(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }

    /// The reply for `q` from the cache, if there is a live entry that fits the client's size.
    pub fn get(&mut self, q: &Question, tcp: bool, now: Instant) -> Option<Vec<u8>> {
        let e = self.entries.get(q.key.as_slice())?;
        let age = now.saturating_duration_since(e.stored).as_secs();
        if age >= u64::from(e.lifetime) {
            self.remove(&q.key);
            return None;
        }
        if e.reply.len() > reply_limit(q.edns_payload, tcp) {
            return None;
        }
        let mut out = e.reply.to_vec();
        out[..2].copy_from_slice(&q.query[..2]);
        // The same question but for its letters' case: the client's, as an upstream echoes it.
        out[12..q.question_end].copy_from_slice(&q.query[12..q.question_end]);
        for &at in e.ttls.iter() {
            let at = usize::from(at);
            let ttl = u32::from_be_bytes(out[at..at + 4].try_into().unwrap());
            let served = ttl.min(e.cap).saturating_sub(age as u32);
            out[at..at + 4].copy_from_slice(&served.to_be_bytes());
        }
        Some(out)
    }

    /// Keeps `reply`, the upstream's answer to `q`, if it may be kept, with its TTLs capped
    /// (in `reply` too: the client that asked first is sent what the next will be). Returns
    /// whether it was kept.
    pub fn put(&mut self, q: &Asked, reply: &mut [u8], now: Instant) -> bool {
        if self.settings.size == 0 {
            return false;
        }
        let Some(plan) = plan(reply, q.question_end, &self.settings) else {
            return false;
        };
        let options = plan.opt_rdata.as_ref().map_or(0, |o| o.len());
        let cost = q.key.len() + reply.len() - options + 2 * plan.ttls.len() + ENTRY_OVERHEAD;
        if cost > self.settings.size / LARGEST_SHARE {
            return false;
        }
        for &at in &plan.ttls {
            let at = usize::from(at);
            let ttl = u32::from_be_bytes(reply[at..at + 4].try_into().unwrap());
            reply[at..at + 4].copy_from_slice(&ttl.min(plan.cap).to_be_bytes());
        }
        self.remove(&q.key);
        while self.bytes + cost > self.settings.size {
            match self.entries.pop_lru() {
                Some((_, old)) => self.bytes -= old.cost,
                None => break,
            }
        }
        let (kept, ttls) = without_options(reply, plan.opt_rdata, plan.ttls);
        let entry = Entry {
            reply: kept.into(),
            stored: now,
            lifetime: plan.lifetime,
            cap: plan.cap,
            ttls: ttls.into(),
            cost,
        };
        self.entries.put(q.key.as_slice().into(), entry);
        self.bytes += cost;
        true
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.pop(key) {
            self.bytes -= old.cost;
        }
    }
}

/// How long an answer may be kept, under which cap, and where its TTLs are.
struct Plan {
    lifetime: u32,
    cap: u32,
    ttls: Vec<u16>,
    /// Where the OPT record's options are, if it has any.
    opt_rdata: Option<std::ops::Range<usize>>,
}

/// `reply` with its OPT record's options taken out, and the TTLs' places in it.
fn without_options(
    reply: &[u8],
    options: Option<std::ops::Range<usize>>,
    ttls: Vec<u16>,
) -> (Vec<u8>, Vec<u16>) {
    let Some(options) = options else {
        return (reply.to_vec(), ttls);
    };
    let mut kept = Vec::with_capacity(reply.len() - options.len());
    kept.extend_from_slice(&reply[..options.start]);
    kept.extend_from_slice(&reply[options.end..]);
    kept[options.start - 2..options.start].copy_from_slice(&[0, 0]); // RDLENGTH
    let removed = options.len() as u16;
    let moved = ttls
        .into_iter()
        .map(|at| {
            if usize::from(at) > options.start {
                at - removed
            } else {
                at
            }
        })
        .collect();
    (kept, moved)
}

/// The upstream's `reply` as another client asking the same question may have it (R34a): the
/// options of its OPT record (a COOKIE answered one client's exchange) taken out, as a kept
/// answer's are; `None` if it does not read to its end.
pub fn for_another_client(reply: &[u8], question_end: usize) -> Option<Vec<u8>> {
    let u16_at = |i: usize| wire::u16_at(reply, i);
    if reply.len() < question_end {
        return None;
    }
    let sections = [u16_at(6)?, u16_at(8)?, u16_at(10)?];
    let mut opt_rdata = None;
    let mut i = question_end;
    for (section, &count) in sections.iter().enumerate() {
        for _ in 0..count {
            i = skip_name(reply, i)?;
            let rdata = i + 10;
            let end = rdata + usize::from(u16_at(i + 8)?);
            if end > reply.len() {
                return None;
            }
            if u16_at(i)? == TYPE_OPT && section == 2 && end > rdata {
                opt_rdata = Some(rdata..end);
            }
            i = end;
        }
    }
    (i == reply.len()).then(|| without_options(reply, opt_rdata, Vec::new()).0)
}

/// Reads an upstream's reply to the end; `None` if it is not to be kept.
fn plan(reply: &[u8], question_end: usize, s: &CacheSettings) -> Option<Plan> {
    let u16_at = |i: usize| wire::u16_at(reply, i);
    let u32_at = |i: usize| {
        let b = reply.get(i..i + 4)?;
        Some(u32::from_be_bytes(b.try_into().ok()?))
    };
    if reply.len() < question_end || reply[2] & 0x02 != 0 {
        return None; // truncated: the client retries over TCP, where the whole answer is
    }
    let rcode = reply[3] & 0x0f;
    if (rcode != NOERROR && rcode != NXDOMAIN) || u16_at(4)? != 1 {
        return None;
    }
    let sections = [u16_at(6)?, u16_at(8)?, u16_at(10)?];
    let mut ttls = Vec::new();
    let mut smallest = u32::MAX;
    let mut soa: Option<u32> = None;
    let mut opt_rdata = None;
    let mut i = question_end;
    for (section, &count) in sections.iter().enumerate() {
        for _ in 0..count {
            i = skip_name(reply, i)?;
            let rtype = u16_at(i)?;
            let rdata = i + 10;
            let end = rdata + usize::from(u16_at(i + 8)?);
            if end > reply.len() {
                return None;
            }
            if rtype == TYPE_OPT {
                // The OPT record's "TTL" is the extended rcode and flags: an extended rcode
                // (BADVERS, BADCOOKIE) is an error, never kept.
                if section != 2 || reply[i + 4] != 0 || opt_rdata.is_some() {
                    return None;
                }
                if end > rdata {
                    opt_rdata = Some(rdata..end);
                }
            } else {
                let ttl = u32_at(i + 4)?;
                ttls.push(u16::try_from(i + 4).ok()?);
                smallest = smallest.min(ttl);
                if section == 1 && rtype == TYPE_SOA && end >= rdata + 4 {
                    // RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM).
                    soa = Some(ttl.min(u32_at(end - 4)?));
                }
            }
            i = end;
        }
    }
    if i != reply.len() {
        return None; // trailing bytes (a signature we cannot adjust): relayed, not kept
    }
    let negative = rcode == NXDOMAIN || sections[0] == 0;
    let (cap, lifetime) = if negative {
        let soa = soa?; // without an SOA, a negative answer is not cached (RFC 2308 §5)
        (
            s.max_negative_ttl,
            smallest.min(soa).min(s.max_negative_ttl),
        )
    } else {
        (s.max_ttl, smallest.min(s.max_ttl))
    };
    (lifetime > 0).then_some(Plan {
        lifetime,
        cap,
        ttls,
        opt_rdata,
    })
}

/// The end of a record's owner name from `at`: labels, then the end or a pointer.
fn skip_name(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    loop {
        let len = *bytes.get(i)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(i + 1),
            0x00 => i += 1 + usize::from(len),
            0xc0 => return bytes.get(i + 1).map(|_| i + 2),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests;

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

use crate::wire::{self, reply_limit, TYPE_OPT};

const TYPE_SOA: u16 = 6;
/// EDNS options a query may carry and still be answered from the cache (RFC 7873, 7830).
const OPTION_COOKIE: u16 = 10;
const OPTION_PADDING: u16 = 12;
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;
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

/// A query the cache can answer, read in place.
pub struct Question<'a> {
    query: &'a [u8],
    question_end: usize,
    /// The question, lower-cased, and the flag byte.
    key: Vec<u8>,
    edns_payload: Option<u16>,
}

impl<'a> Question<'a> {
    /// `None` for a query of another shape (more questions, records, EDNS options but a
    /// cookie or padding): those are forwarded and never cached.
    pub fn parse(query: &'a [u8]) -> Option<Question<'a>> {
        let u16_at = |i: usize| wire::u16_at(query, i);
        // A query (QR=0) of opcode QUERY with one question and at most one more record.
        if query.len() < 12 || query[2] & 0xf8 != 0 {
            return None;
        }
        if u16_at(4)? != 1 || u16_at(6)? != 0 || u16_at(8)? != 0 || u16_at(10)? > 1 {
            return None;
        }
        let question_end = wire::question_end(query)?;
        let mut flags = 0;
        if query[2] & 0x01 != 0 {
            flags |= KEY_RD;
        }
        if query[3] & 0x10 != 0 {
            flags |= KEY_CD;
        }
        let edns_payload = if u16_at(10)? == 1 {
            // Root name, OPT, payload, extended rcode, version 0, flags, then its options.
            let opt = &query[question_end..];
            if opt.len() < 11 || opt[0] != 0 || u16_at(question_end + 1)? != TYPE_OPT {
                return None;
            }
            if opt[6] != 0 || usize::from(u16_at(question_end + 9)?) != opt.len() - 11 {
                return None;
            }
            let mut i = question_end + 11;
            while i < query.len() {
                if ![OPTION_COOKIE, OPTION_PADDING].contains(&u16_at(i)?) {
                    return None;
                }
                i += 4 + usize::from(u16_at(i + 2)?);
            }
            if i != query.len() {
                return None;
            }
            flags |= KEY_EDNS;
            if opt[7] & 0x80 != 0 {
                flags |= KEY_DO;
            }
            Some(u16_at(question_end + 3)?)
        } else {
            if query.len() != question_end {
                return None;
            }
            None
        };
        let mut key = query[12..question_end].to_ascii_lowercase();
        key.push(flags);
        Some(Question {
            query,
            question_end,
            key,
            edns_payload,
        })
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
    pub fn put(&mut self, q: &Question, reply: &mut [u8], now: Instant) -> bool {
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
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::time::Duration;

    fn settings() -> CacheSettings {
        CacheSettings {
            size: 64 * 1024,
            max_ttl: 30,
            max_negative_ttl: 5,
        }
    }

    fn query(name: &str, t: RecordType, edns: Option<(u16, bool)>, cd: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.metadata.checking_disabled = cd;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some((payload, dnssec_ok)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(payload).set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    /// The upstream's reply to `q`: answers with `ttl`, or `rcode` with an SOA (TTL 300,
    /// MINIMUM `soa_min`) when `answers` is 0.
    fn reply(q: &[u8], answers: usize, ttl: u32, rcode: ResponseCode, soa_min: u32) -> Vec<u8> {
        let q = Message::from_vec(q).unwrap();
        let mut r = Message::new(0x9999, MessageType::Response, OpCode::Query);
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.metadata.response_code = rcode;
        r.add_queries(q.queries.clone());
        let name = q.queries[0].name().clone();
        for k in 0..answers {
            let rdata = RData::A(A::new(192, 0, 2, k as u8 + 1));
            r.add_answer(Record::from_rdata(name.clone(), ttl, rdata));
        }
        if answers == 0 && soa_min > 0 {
            let soa = SOA::new(
                Name::from_ascii("ns.example.").unwrap(),
                Name::from_ascii("admin.example.").unwrap(),
                1,
                3600,
                600,
                86400,
                soa_min,
            );
            let zone = Name::from_ascii("example.").unwrap();
            r.add_authority(Record::from_rdata(zone, 300, RData::SOA(soa)));
        }
        if q.edns.is_some() {
            r.set_edns(Edns::new());
        }
        r.to_vec().unwrap()
    }

    fn cache() -> Cache {
        let mut c = Cache::new();
        c.sync(1, settings());
        c
    }

    fn ttls(bytes: &[u8]) -> Vec<u32> {
        let m = Message::from_vec(bytes).unwrap();
        m.answers
            .iter()
            .chain(&m.authorities)
            .map(|r| r.ttl)
            .collect()
    }

    #[test]
    fn a_hit_is_the_upstreams_bytes_with_the_clients_id_and_case_and_ttls_counted_down() {
        let mut c = cache();
        let t0 = Instant::now();
        let asked = query("www.example.", RecordType::A, None, false);
        let mut up = reply(&asked, 2, 300, ResponseCode::NoError, 0);
        assert!(c.put(&Question::parse(&asked).unwrap(), &mut up, t0));
        assert_eq!(ttls(&up), vec![30, 30], "the first reply is capped too");

        let mut again = query("WwW.ExAmple.", RecordType::A, None, false);
        again[..2].copy_from_slice(&[0xab, 0xcd]);
        let q = Question::parse(&again).unwrap();
        let hit = c
            .get(&q, false, t0 + Duration::from_millis(12_400))
            .unwrap();
        assert_eq!(&hit[..2], &[0xab, 0xcd]);
        assert_eq!(&hit[12..q.question_end], &again[12..q.question_end]);
        // TTL 300 capped at 30, 12 s later.
        assert_eq!(ttls(&hit), vec![18, 18]);
        // Everything else as the upstream sent it.
        assert_eq!(hit[2..12], up[2..12]);
        assert_eq!(hit.len(), up.len());
        // The smallest TTL under the cap decides when it goes.
        assert!(c.get(&q, false, t0 + Duration::from_secs(30)).is_none());
        assert_eq!(c.usage(), (0, 0));

        let mut short = reply(&asked, 1, 7, ResponseCode::NoError, 0);
        c.put(&Question::parse(&asked).unwrap(), &mut short, t0);
        assert_eq!(
            ttls(&c.get(&q, false, t0 + Duration::from_secs(6)).unwrap()),
            vec![1]
        );
        assert!(c.get(&q, false, t0 + Duration::from_secs(7)).is_none());
    }

    #[test]
    fn negative_answers_live_by_their_soa_and_the_shorter_cap() {
        let mut c = cache();
        let t0 = Instant::now();
        let nx = query("gone.example.", RecordType::A, None, false);
        let q = Question::parse(&nx).unwrap();
        assert!(c.put(&q, &mut reply(&nx, 0, 0, ResponseCode::NXDomain, 300), t0));
        let hit = c.get(&q, false, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(hit[3] & 0x0f, NXDOMAIN);
        assert_eq!(
            ttls(&hit),
            vec![3],
            "the SOA's TTL, capped at 5 s, 2 s later"
        );
        assert!(c.get(&q, false, t0 + Duration::from_secs(5)).is_none());
        // NODATA with an SOA whose MINIMUM is shorter than the cap.
        let nodata = query("v4only.example.", RecordType::AAAA, None, false);
        let q = Question::parse(&nodata).unwrap();
        assert!(c.put(&q, &mut reply(&nodata, 0, 0, ResponseCode::NoError, 2), t0));
        assert!(c.get(&q, false, t0 + Duration::from_secs(1)).is_some());
        assert!(c.get(&q, false, t0 + Duration::from_secs(2)).is_none());
        // Without an SOA, not kept; nor when negative caching is off.
        assert!(!c.put(&q, &mut reply(&nodata, 0, 0, ResponseCode::NoError, 0), t0));
        c.sync(
            1,
            CacheSettings {
                max_negative_ttl: 0,
                ..settings()
            },
        );
        assert!(!c.put(
            &q,
            &mut reply(&nodata, 0, 0, ResponseCode::NXDomain, 300),
            t0
        ));
    }

    #[test]
    fn failures_truncation_and_zero_ttls_are_never_kept() {
        let mut c = cache();
        let t0 = Instant::now();
        let asked = query("www.example.", RecordType::A, None, false);
        let q = Question::parse(&asked).unwrap();
        for rcode in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::FormErr,
            ResponseCode::NotImp,
        ] {
            assert!(
                !c.put(&q, &mut reply(&asked, 1, 60, rcode, 0), t0),
                "{rcode}"
            );
        }
        let mut tc = reply(&asked, 1, 60, ResponseCode::NoError, 0);
        tc[2] |= 0x02;
        assert!(!c.put(&q, &mut tc, t0));
        assert!(!c.put(&q, &mut reply(&asked, 1, 0, ResponseCode::NoError, 0), t0));
        let mut trailing = reply(&asked, 1, 60, ResponseCode::NoError, 0);
        trailing.push(0);
        assert!(!c.put(&q, &mut trailing, t0));
        let cut = reply(&asked, 1, 60, ResponseCode::NoError, 0);
        assert!(!c.put(&q, &mut cut[..cut.len() - 1].to_vec(), t0));
        assert_eq!(c.usage(), (0, 0));
    }

    #[test]
    fn keys_separate_type_class_rd_cd_do_and_edns() {
        let mut c = cache();
        let t0 = Instant::now();
        let plain = query("www.example.", RecordType::A, None, false);
        c.put(
            &Question::parse(&plain).unwrap(),
            &mut reply(&plain, 1, 60, ResponseCode::NoError, 0),
            t0,
        );
        let mut no_rd = plain.clone();
        no_rd[2] &= !0x01;
        let others = [
            query("www.example.", RecordType::AAAA, None, false),
            query("www.example.", RecordType::A, None, true),
            query("www.example.", RecordType::A, Some((1232, false)), false),
            query("www.example.", RecordType::A, Some((1232, true)), false),
            no_rd,
        ];
        for other in &others {
            let q = Question::parse(other).unwrap();
            assert!(c.get(&q, false, t0).is_none());
        }
        assert!(c
            .get(&Question::parse(&plain).unwrap(), false, t0)
            .is_some());
        // The EDNS payload is not in the key: a DO query of another size finds its entry.
        let big = query("www.example.", RecordType::A, Some((4096, true)), false);
        c.put(
            &Question::parse(&big).unwrap(),
            &mut reply(&big, 1, 60, ResponseCode::NoError, 0),
            t0,
        );
        let small = query("www.example.", RecordType::A, Some((1232, true)), false);
        assert!(c
            .get(&Question::parse(&small).unwrap(), false, t0)
            .is_some());
    }

    fn with_option(mut m: Message, code: u16, data: Vec<u8>) -> Vec<u8> {
        let mut e = m.edns.take().unwrap_or_default();
        e.options_mut()
            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                code, data,
            ));
        m.set_edns(e);
        m.to_vec().unwrap()
    }

    #[test]
    fn a_cookie_is_not_part_of_the_key_and_never_kept() {
        let mut c = cache();
        let t0 = Instant::now();
        let plain = query("www.example.", RecordType::A, Some((1232, false)), false);
        let first = with_option(
            Message::from_vec(&plain).unwrap(),
            OPTION_COOKIE,
            vec![1; 8],
        );
        // The upstream answers with the client's cookie and its own.
        let answered = Message::from_vec(&reply(&plain, 1, 60, ResponseCode::NoError, 0)).unwrap();
        let mut up = with_option(answered, OPTION_COOKIE, vec![1; 24]);
        let q = Question::parse(&first).unwrap();
        assert!(c.put(&q, &mut up, t0));
        let second = with_option(
            Message::from_vec(&plain).unwrap(),
            OPTION_COOKIE,
            vec![2; 8],
        );
        let hit = c
            .get(&Question::parse(&second).unwrap(), false, t0)
            .unwrap();
        let m = Message::from_vec(&hit).unwrap();
        assert!(
            m.edns.as_ref().unwrap().options().as_ref().is_empty(),
            "{m:?}"
        );
        assert_eq!(ttls(&hit), vec![30]);
        assert_eq!(
            hit.len(),
            up.len() - 28,
            "the option (4 + 24 bytes) taken out"
        );
        // Without a cookie, the same entry.
        assert!(c
            .get(&Question::parse(&plain).unwrap(), false, t0)
            .is_some());
    }

    #[test]
    fn other_shapes_are_not_cacheable() {
        let plain = Message::from_vec(&query("www.example.", RecordType::A, None, false)).unwrap();
        // Client subnet (8) changes the answer; NSID (3) asks for the upstream's identity.
        for code in [8, 3] {
            assert!(Question::parse(&with_option(plain.clone(), code, vec![0; 4])).is_none());
        }
        let mut two = Message::query();
        two.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
        two.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        assert!(Question::parse(&two.to_vec().unwrap()).is_none());
        let mut response = query("www.example.", RecordType::A, None, false);
        response[2] |= 0x80;
        assert!(Question::parse(&response).is_none());
        let mut trailing = query("www.example.", RecordType::A, None, false);
        trailing.push(0);
        assert!(Question::parse(&trailing).is_none());
    }

    #[test]
    fn a_hit_too_big_for_the_client_is_forwarded_instead() {
        let mut c = cache();
        let t0 = Instant::now();
        let big = query("many.example.", RecordType::A, Some((4096, false)), false);
        // 40 A records: 12 + 18 + 40 * 16 + 11 bytes, beyond 512.
        let mut up = reply(&big, 40, 60, ResponseCode::NoError, 0);
        assert!(up.len() > 512);
        assert!(c.put(&Question::parse(&big).unwrap(), &mut up, t0));
        let small = query("many.example.", RecordType::A, Some((512, false)), false);
        let q = Question::parse(&small).unwrap();
        assert!(c.get(&q, false, t0).is_none());
        assert!(c.get(&q, true, t0).is_some(), "over TCP it fits");
    }

    #[test]
    fn the_bound_is_in_bytes_and_the_least_recently_used_go_first() {
        let mut c = Cache::new();
        c.sync(
            1,
            CacheSettings {
                size: 8 * 1024,
                ..settings()
            },
        );
        let t0 = Instant::now();
        let names: Vec<String> = (0..100).map(|i| format!("n{i}.example.")).collect();
        for (i, n) in names.iter().enumerate() {
            let q = query(n, RecordType::A, None, false);
            c.put(
                &Question::parse(&q).unwrap(),
                &mut reply(&q, 1, 60, ResponseCode::NoError, 0),
                t0,
            );
            // The first stays in use.
            let first = query(&names[0], RecordType::A, None, false);
            assert!(
                c.get(&Question::parse(&first).unwrap(), false, t0)
                    .is_some(),
                "after {i}"
            );
        }
        let (entries, bytes) = c.usage();
        assert!(
            bytes <= 8 * 1024 && entries < 100 && entries > 10,
            "{entries} {bytes}"
        );
        let second = query(&names[1], RecordType::A, None, false);
        assert!(c
            .get(&Question::parse(&second).unwrap(), false, t0)
            .is_none());
        // Too big a share of the bound: not kept at all.
        let big = query("big.example.", RecordType::A, None, false);
        let mut up = reply(&big, 80, 60, ResponseCode::NoError, 0);
        assert!(!c.put(&Question::parse(&big).unwrap(), &mut up, t0));
    }

    #[test]
    fn another_generation_or_size_empties_it_and_size_0_keeps_nothing() {
        let mut c = cache();
        let t0 = Instant::now();
        let asked = query("www.example.", RecordType::A, None, false);
        let q = Question::parse(&asked).unwrap();
        let mut up = reply(&asked, 1, 60, ResponseCode::NoError, 0);
        c.put(&q, &mut up, t0);
        c.sync(1, settings());
        assert!(
            c.get(&q, false, t0).is_some(),
            "the same generation keeps it"
        );
        c.sync(2, settings());
        assert!(c.get(&q, false, t0).is_none());
        c.sync(
            2,
            CacheSettings {
                size: 0,
                ..settings()
            },
        );
        assert!(!c.put(&q, &mut up, t0));
    }

    #[test]
    fn a_cname_chain_lives_by_its_shortest_ttl() {
        let mut c = cache();
        let t0 = Instant::now();
        let asked = query("alias.example.", RecordType::A, None, false);
        let m = Message::from_vec(&asked).unwrap();
        let mut r = Message::new(1, MessageType::Response, OpCode::Query);
        r.add_queries(m.queries.clone());
        let target = Name::from_ascii("real.example.").unwrap();
        r.add_answer(Record::from_rdata(
            m.queries[0].name().clone(),
            4,
            RData::CNAME(CNAME(target.clone())),
        ));
        r.add_answer(Record::from_rdata(
            target,
            600,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        let q = Question::parse(&asked).unwrap();
        assert!(c.put(&q, &mut r.to_vec().unwrap(), t0));
        let hit = c.get(&q, false, t0 + Duration::from_secs(3)).unwrap();
        assert_eq!(ttls(&hit), vec![1, 27]);
        assert!(c.get(&q, false, t0 + Duration::from_secs(4)).is_none());
    }
}

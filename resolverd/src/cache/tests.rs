//! R34's rules, one test each: what is kept, for how long, what a hit relays.

use super::*;
use crate::wire::OPTION_COOKIE;
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

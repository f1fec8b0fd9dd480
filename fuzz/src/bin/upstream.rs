//! Fuzz target: any bytes as an upstream's reply to a forwarded query, as the resolver's
//! cache (R34) reads it to keep it. It must never panic; what it keeps must be served with
//! the client's ID and question, within the client's size, its TTLs at most the cap.

use std::time::{Duration, Instant};

use embedns_conf::record::CacheSettings;
use embedns_resolverd::cache::{Cache, Question};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

fn query(id: u16, name: &str, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232).set_dnssec_ok(true);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn main() {
    let settings = CacheSettings {
        size: 64 * 1024,
        max_ttl: 30,
        max_negative_ttl: 5,
    };
    let asked = [query(1, "www.example.", false), query(2, "www.example.", true)];
    let again = [query(7, "WWW.example.", false), query(8, "WWW.example.", true)];
    afl::fuzz!(|data: &[u8]| {
        for (first, second) in asked.iter().zip(&again) {
            let mut cache = Cache::new();
            cache.sync(1, settings);
            let q = Question::parse(first).expect("a cacheable query");
            let t0 = Instant::now();
            let mut reply = data.to_vec();
            if !cache.put(&q, &mut reply, t0) {
                continue;
            }
            let q2 = Question::parse(second).expect("a cacheable query");
            for tcp in [false, true] {
                let Some(hit) = cache.get(&q2, tcp, t0 + Duration::from_secs(1)) else {
                    continue;
                };
                assert_eq!(hit[..2], second[..2], "the client's ID");
                // "\x03WWW\x07example\x00", type and class: bytes 12 to 29.
                assert_eq!(hit[12..29], second[12..29], "the client's question, its case");
                assert!(hit.len() <= if tcp { 65535 } else { 1232.max(512) });
                if let Ok(m) = Message::from_vec(&hit) {
                    for r in m.answers.iter().chain(&m.authorities) {
                        assert!(r.ttl < 30, "a TTL past the cap: {}", r.ttl);
                    }
                }
            }
        }
    });
}

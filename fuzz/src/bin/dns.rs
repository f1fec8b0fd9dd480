//! Fuzz target: any bytes as a query to a resolver that knows a small network (names,
//! aliases, a link, IPv4 and IPv6), over UDP and TCP. It must never panic, every reply
//! must fit its transport, and a query the fast path takes must get from it exactly the
//! general path's reply.

use embedns_conf::paths::StatePaths;
use embedns_conf::record::{Link, Record};
use embedns_conf::store::NetworkStore;
use embedns_resolverd::answer::{general_reply, handle, Ask, Decision};
use embedns_resolverd::wire::error_for_raw;
use embedns_resolverd::fast::Simple;
use embedns_resolverd::network_index::NetworkIndex;
use embedns_resolverd::lookup::{Outcome, View};
use hickory_proto::op::ResponseCode;

fn record(cid: &str, name: &str, aliases: &[&str], ips: &[&str]) -> Record {
    let ips = ips.iter().map(|s| s.parse().unwrap()).collect();
    let mut r = Record::with_defaults("n1", cid, Some(name), aliases, ips);
    r.domain_name = Some("dns.podman".into());
    r.search = vec!["corp.example".into()];
    r
}

fn main() {
    // The network goes through the store, into a real shared index, as the plugin writes it.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let paths = StatePaths::new(dir.path());
    let nets = {
        let mut me = record("me", "cli", &[], &["10.0.0.1"]);
        me.links = vec![Link {
            name: "web".into(),
            alias: "db".into(),
        }];
        let store = NetworkStore::new(&paths, "n1");
        let lock = store.lock().expect("the network lock");
        let many: Vec<String> = (1..60).map(|i| format!("fd00::{i:x}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for r in [
            me.clone(),
            record("c2", "web", &["www"], &["10.0.0.2", "fd00::2"]),
            record("c3", "big", &["www"], &many),
        ] {
            store.put(&lock, &r).expect("a record");
        }
        vec![NetworkIndex::new(&paths, "n1", vec![me])]
    };
    let view = View { networks: &nets };
    let many: Vec<std::net::IpAddr> = (1..60u16)
        .map(|i| std::net::IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i]))
        .collect();
    let outcomes = [
        Outcome::Addresses(vec!["10.0.0.2".parse().unwrap()], 600),
        Outcome::Addresses(many, 600),
        Outcome::NoData(600),
        Outcome::Unavailable,
    ];
    afl::fuzz!(|data: &[u8]| {
        if let Some(fast) = Simple::parse(data) {
            for tcp in [false, true] {
                for outcome in &outcomes {
                    let (name, qtype, want) =
                        general_reply(data, outcome, tcp).expect("the general path reads it too");
                    assert_eq!((fast.name(), fast.qtype), (name.as_str(), qtype));
                    assert_eq!(fast.reply(outcome, fast.size_limit(tcp)), Some(want));
                }
            }
        }
        for tcp in [false, true] {
            match handle(data, &view, tcp) {
                Decision::Reply { bytes, .. } => {
                    assert!(bytes.len() >= 12 && bytes.len() <= 65535);
                    assert_eq!(bytes[..2], data[..2], "the client's ID");
                }
                Decision::Forward(Ask {
                    question_end,
                    fallback,
                }) => {
                    assert!(question_end <= data.len());
                    let err = error_for_raw(data, question_end, ResponseCode::ServFail);
                    assert_eq!(err[..2], data[..2]);
                    if let Some(local) = fallback {
                        assert_eq!(local[..2], data[..2], "the client's ID");
                    }
                }
                Decision::Drop => {}
            }
        }
    });
}

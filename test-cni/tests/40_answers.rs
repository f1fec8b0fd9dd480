//! What local answers look like (docs/behaviour.md R9–R14).

use serde_json::json;
use test_cni::{ip_of, World};

#[test]
fn r9_nodata_r11_ttl_r12_flags_r14_tcp() {
    let w = World::new("r9_nodata_r11_ttl_r12_flags_r14_tcp");
    let net = w.network("n1", json!({}));
    let (a, cli) = (w.container("a"), w.container("cli"));
    let ip = ip_of(&w.adding(&net, &a).name("web").ok());
    w.adding(&net, &cli).name("cli").ok();
    let d = w.dig(&cli, &["web", "A"]);
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.answers[0].ttl, 600, "R11 default TTL");
    // R12: qr rd ra, never aa.
    assert!(
        d.has_flag("qr") && d.has_flag("rd") && d.has_flag("ra"),
        "{:?}",
        d.flags
    );
    assert!(!d.has_flag("aa"), "{:?}", d.flags);
    let nord = w.dig(&cli, &["+nordflag", "web", "A"]);
    assert!(
        !nord.has_flag("rd") && nord.has_flag("ra"),
        "RD is copied: {:?}",
        nord.flags
    );
    // R9: a v4-only name asked AAAA or MX: NOERROR, no answers.
    for t in ["AAAA", "MX", "TXT"] {
        let d = w.dig(&cli, &["web", t]);
        assert_eq!(d.status, "NOERROR", "{t}");
        assert!(d.answers.is_empty(), "{t}: {:?}", d.answers);
    }
    // R14: TCP too.
    let t = w.dig(&cli, &["+tcp", "web", "A"]);
    assert_eq!(t.data(), vec![ip]);
}

/// R9, R11, R12, R14 whatever the query looks like: the common shape (no EDNS, or EDNS
/// without options) is answered from its bytes, the rest (dig's default cookie) through the
/// general path; a client must not be able to tell them apart.
#[test]
fn every_query_shape_gets_the_same_answer() {
    let w = World::new("every_query_shape_gets_the_same_answer");
    let net = w.network("n1", json!({}));
    let (a, cli) = (w.container("a"), w.container("cli"));
    let ip = ip_of(&w.adding(&net, &a).name("web").ok());
    w.adding(&net, &cli).name("cli").ok();
    let shapes: [&[&str]; 6] = [
        &[],
        &["+nocookie"],
        &["+noedns"],
        &["+tcp", "+nocookie"],
        &["+tcp", "+noedns"],
        &["+noedns", "+cdflag", "+nordflag"],
    ];
    for (name, t, want) in [
        ("web", "A", vec![ip.clone()]),
        ("WeB.n1.", "A", vec![ip.clone()]),
        ("web", "AAAA", vec![]),
        ("nope", "A", vec![]),
    ] {
        let reference = w.dig(&cli, &[name, t]);
        assert_eq!(reference.status, "NOERROR", "{name} {t}");
        assert_eq!(reference.data(), want, "{name} {t}");
        for shape in shapes {
            let args: Vec<&str> = shape.iter().copied().chain([name, t]).collect();
            let d = w.dig(&cli, &args);
            assert_eq!(d.status, reference.status, "{args:?}");
            assert_eq!(
                d.answers, reference.answers,
                "{args:?}: name, TTL, type, data"
            );
            let mut flags = reference.flags.clone();
            if shape.contains(&"+cdflag") {
                flags.retain(|f| f != "rd");
                flags.push("cd".into());
            }
            flags.sort();
            let mut got = d.flags.clone();
            got.sort();
            assert_eq!(got, flags, "{args:?}");
        }
    }
}

#[test]
fn r11_ttl_is_configurable() {
    let w = World::new("r11_ttl_is_configurable");
    let net = w.network("n1", json!({"ttl": 30}));
    let (a, cli) = (w.container("a"), w.container("cli"));
    w.adding(&net, &a).name("web").ok();
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.dig(&cli, &["web"]).answers[0].ttl, 30);
}

#[test]
fn r10_ptr_names_the_container() {
    let w = World::new("r10_ptr_names_the_container");
    let up = w.upstream("127.0.0.53:53", "up.test", &[]);
    let net = w.network("n1", json!({}));
    let (a, cli) = (w.container("a"), w.container("cli"));
    let ip = ip_of(
        &w.adding(&net, &a)
            .name("web")
            .cap(json!({"aliases": ["www"]}))
            .ok(),
    );
    w.adding(&net, &cli).name("cli").ok();
    let d = w.dig(&cli, &["-x", &ip]);
    assert_eq!(d.status, "NOERROR");
    assert_eq!(
        d.data(),
        vec!["web.n1."],
        "the container name, not an alias"
    );
    assert_eq!(up.queries(), 0);
    // An address that is no container's is forwarded.
    w.dig(&cli, &["-x", "192.0.2.77"]);
    assert_eq!(up.queries(), 1, "PTR of an unknown IP goes upstream");
}

#[test]
fn r13_truncation_udp_edns_and_tcp() {
    let w = World::new("r13_truncation_udp_edns_and_tcp");
    let net = w.network("n1", json!({}));
    let (big, cli) = (w.container("big"), w.container("cli"));
    w.adding(&net, &cli).name("cli").ok();
    // A container with 40 IPv6 addresses, added as a runtime would after an IPAM plugin.
    let ips: Vec<_> = (1..=40)
        .map(|i| json!({"address": format!("fd00::{i:x}/64"), "interface": 0}))
        .collect();
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": big.path}], "ips": ips});
    let out = w.plugin(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "big40"),
            ("CNI_NETNS", &big.path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
            ("CNI_ARGS", "K8S_POD_NAME=big"),
        ],
        &w.conf("n1", "1.0.0", json!({"prevResult": prev}))
            .to_string(),
    );
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    // No EDNS: 512 bytes, whole records only, TC set.
    let d = w.dig(&cli, &["+noedns", "+ignore", "+notcp", "big", "AAAA"]);
    assert!(d.has_flag("tc"), "{:?}", d.flags);
    assert!(d.msg_size <= 512 && d.msg_size > 0, "size {}", d.msg_size);
    assert!(!d.answers.is_empty() && d.answers.len() < 40);
    // EDNS 700: up to 700 bytes.
    let e = w.dig(&cli, &["+bufsize=700", "+ignore", "+notcp", "big", "AAAA"]);
    assert!(
        e.has_flag("tc") && e.msg_size <= 700 && e.answers.len() > d.answers.len(),
        "{} {}",
        e.msg_size,
        e.answers.len()
    );
    // The same without a cookie (EDNS with no options: the fast path).
    let f = w.dig(
        &cli,
        &[
            "+nocookie",
            "+bufsize=700",
            "+ignore",
            "+notcp",
            "big",
            "AAAA",
        ],
    );
    // As many whole answers as with the cookie (the reply's OPT carries no option either
    // way); which ones is R5's random order.
    assert!(
        f.has_flag("tc") && f.msg_size == e.msg_size && f.answers.len() == e.answers.len(),
        "{} {} vs {} {}",
        f.msg_size,
        f.answers.len(),
        e.msg_size,
        e.answers.len()
    );
    // TCP: everything.
    let t = w.dig(&cli, &["+tcp", "big", "AAAA"]);
    assert!(!t.has_flag("tc"));
    assert_eq!(t.answers.len(), 40);
    let out = w.plugin(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "big40"),
            ("CNI_NETNS", &big.path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ],
        &w.conf("n1", "1.0.0", json!({})).to_string(),
    );
    assert!(out.success);
}

#[test]
fn r14_an_edns_version_above_0_gets_badvers() {
    let w = World::new("r14_an_edns_version_above_0_gets_badvers");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("web").ok();
    for transport in ["+notcp", "+tcp"] {
        let d = w.dig(&c, &["web", "A", "+edns=1", "+noednsneg", transport]);
        assert_eq!(d.status, "BADVERS", "{}", d.raw);
        assert!(d.answers.is_empty(), "{}", d.raw);
        assert!(d.raw.contains("EDNS: version: 0"), "{}", d.raw);
    }
    // Version 0 is answered as ever.
    assert_eq!(w.dig(&c, &["web", "A", "+edns=0"]).status, "NOERROR");
}

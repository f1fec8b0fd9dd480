//! The resolver's cache of forwarded answers (docs/behaviour.md R34), asked with dig from
//! inside containers; the upstream is a fake server in the test's host netns that counts what
//! reaches it (TTL 60 on its answers, an SOA of TTL and MINIMUM 300 on its NXDOMAINs).

use std::time::Duration;

use serde_json::json;
use test_cni::wait::wait_until;
use test_cni::{Mode, World};

#[test]
fn r34_an_answer_is_asked_once_and_served_with_its_ttl_capped_and_counted_down() {
    let w = World::new("r34_an_answer_is_asked_once_and_served_with_its_ttl_capped");
    let up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();

    let first = w.dig(&cli, &["a.up.test"]);
    assert_eq!(first.data(), vec!["10.9.9.1"]);
    assert_eq!(
        first.answers[0].ttl, 30,
        "TTL 60 capped at cacheMaxTtl's 30"
    );
    assert!(first.has_flag("aa"), "the upstream's flags relayed");
    // Asked again until a second has passed: the TTL counts down, the upstream is not asked.
    let later = wait_until(Duration::from_secs(5), "a TTL below 30", || {
        let d = w.dig(&cli, &["A.Up.Test"]);
        (d.answers.first()?.ttl < 30).then_some(d)
    });
    assert_eq!(later.data(), vec!["10.9.9.1"]);
    assert_eq!(
        later.answers[0].name, "A.Up.Test.",
        "the client's question, its case kept"
    );
    assert!(
        later.has_flag("aa"),
        "the upstream's bytes: {:?}",
        later.flags
    );
    assert_eq!(up.queries(), 1);
    // TCP asks the same cache.
    assert_eq!(w.dig(&cli, &["+tcp", "a.up.test"]).data(), vec!["10.9.9.1"]);
    assert_eq!(up.queries(), 1);

    let (_, report) = w.status();
    let r = report.containers[0]
        .resolver
        .status()
        .expect("a healthy resolver");
    assert!(r.counters.cached >= 2, "{r:?}");
    assert_eq!(r.cache.entries, 1, "{r:?}");
    assert_eq!(r.cache.size, 256 * 1024, "{r:?}");
    let (_, text) = w.status_text(&["cli"]);
    assert!(text.contains("cache: 1 answers"), "{text}");
}

#[test]
fn r34_an_answer_expires_at_the_cap_and_is_asked_again() {
    let w = World::new("r34_an_answer_expires_at_the_cap_and_is_asked_again");
    let up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let net = w.network("n1", json!({"cacheMaxTtl": 2}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.dig(&cli, &["a.up.test"]).answers[0].ttl, 2);
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.1"]);
    assert_eq!(up.queries(), 1);
    wait_until(Duration::from_secs(6), "the upstream asked again", || {
        w.resolve(&cli, "a.up.test", "A");
        (up.queries() == 2).then_some(())
    });
}

#[test]
fn r34_nxdomain_is_cached_for_the_shorter_cap_and_nodata_without_soa_not_at_all() {
    let w = World::new("r34_nxdomain_is_cached_for_the_shorter_cap");
    let up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    let nx = w.dig(&cli, &["missing.up.test"]);
    assert_eq!(nx.status, "NXDOMAIN");
    assert_eq!(nx.authority[0].rtype, "SOA");
    assert_eq!(
        nx.authority[0].ttl, 5,
        "SOA TTL 300 capped at cacheMaxNegativeTtl's 5"
    );
    let again = w.dig(&cli, &["missing.up.test"]);
    assert_eq!(again.status, "NXDOMAIN");
    assert_eq!(again.authority[0].rtype, "SOA");
    assert_eq!(up.queries(), 1);
    wait_until(Duration::from_secs(10), "the NXDOMAIN asked again", || {
        w.dig(&cli, &["missing.up.test"]);
        (up.queries() == 2).then_some(())
    });
    // NODATA without an SOA (RFC 2308 §5): never kept.
    let before = up.queries();
    for _ in 0..2 {
        let d = w.dig(&cli, &["a.up.test", "AAAA"]);
        assert_eq!((d.status.as_str(), d.answers.len()), ("NOERROR", 0));
    }
    assert_eq!(up.queries(), before + 2);
}

#[test]
fn r34_servfail_is_never_cached() {
    let w = World::new("r34_servfail_is_never_cached");
    let up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    up.set_mode(Mode::ServFail);
    assert_eq!(w.dig(&cli, &["a.up.test"]).status, "SERVFAIL");
    assert_eq!(w.dig(&cli, &["a.up.test"]).status, "SERVFAIL");
    assert_eq!(up.queries(), 2);
    up.set_mode(Mode::Answer);
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.1"]);
}

#[test]
fn r34_a_change_of_upstreams_empties_the_cache() {
    let w = World::new("r34_a_change_of_upstreams_empties_the_cache");
    let one = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let two = w.upstream("127.0.0.54:53", "up.test", &[("a.up.test", "10.9.9.2")]);
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.1"]);
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.1"]);
    assert_eq!(one.queries(), 1);
    // R22: the next query sees the host's new nameserver, not the answer the old one gave.
    w.set_host_resolv_conf("nameserver 127.0.0.54\n");
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.2"]);
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.2"]);
    assert_eq!(two.queries(), 1);
}

#[test]
fn r34_do_and_cd_bits_are_part_of_the_key() {
    let w = World::new("r34_do_and_cd_bits_are_part_of_the_key");
    let up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    let asked = |args: &[&str]| {
        let before = up.queries();
        assert_eq!(w.dig(&cli, args).data(), vec!["10.9.9.1"], "{args:?}");
        up.queries() - before
    };
    assert_eq!(asked(&["a.up.test"]), 1);
    assert_eq!(asked(&["+dnssec", "a.up.test"]), 1, "DO set: another key");
    assert_eq!(asked(&["+cdflag", "a.up.test"]), 1, "CD set: another key");
    assert_eq!(asked(&["+dnssec", "a.up.test"]), 0);
    assert_eq!(asked(&["+cdflag", "a.up.test"]), 0);
    assert_eq!(asked(&["a.up.test"]), 0);
    // dig sends a cookie by default: not part of the key.
    assert_eq!(asked(&["+nocookie", "a.up.test"]), 0);
    // A query with an option that may change the answer (client subnet) is forwarded every time.
    assert_eq!(asked(&["+subnet=10.1.2.0/24", "a.up.test"]), 1);
    assert_eq!(asked(&["+subnet=10.1.2.0/24", "a.up.test"]), 1);
}

#[test]
fn r34_a_peers_add_and_del_are_seen_at_once() {
    let w = World::new("r34_a_peers_add_and_del_are_seen_at_once");
    let _up = w.upstream("127.0.0.53:53", "up.test", &[("svc.up.test", "10.9.9.9")]);
    let net = w.network("n1", json!({}));
    let (cli, peer, late) = (w.container("cli"), w.container("peer"), w.container("late"));
    w.adding(&net, &cli).name("cli").ok();
    // Both kept: an answer and an NXDOMAIN.
    assert_eq!(w.resolve(&cli, "svc.up.test", "A"), vec!["10.9.9.9"]);
    assert_eq!(w.dig(&cli, &["late.up.test"]).status, "NXDOMAIN");
    // A peer now carries those names: it answers at once, whatever the cache holds.
    let peer_ip = test_cni::ip_of(
        &w.adding(&net, &peer)
            .name("peer")
            .cap(json!({"aliases": ["svc.up.test"]}))
            .ok(),
    );
    let late_ip = test_cni::ip_of(
        &w.adding(&net, &late)
            .name("late")
            .cap(json!({"aliases": ["late.up.test"]}))
            .ok(),
    );
    assert_eq!(w.resolve(&cli, "svc.up.test", "A"), vec![peer_ip]);
    assert_eq!(w.resolve(&cli, "late.up.test", "A"), vec![late_ip]);
    // Gone again: the outside answer comes back (from the cache or the upstream).
    w.del(&net, &peer, &[]);
    assert_eq!(w.resolve(&cli, "svc.up.test", "A"), vec!["10.9.9.9"]);
}

#[test]
fn r34_truncation_and_tcp_behave_as_without_the_cache() {
    let w = World::new("r34_truncation_and_tcp_behave_as_without_the_cache");
    let big = "x".repeat(1500);
    let up = test_cni::FakeUpstream::start_with_txt(
        Some(&format!("/run/netns/{}", w.host)),
        "127.0.0.53:53",
        "up.test",
        &[],
        &[("big.up.test", &big)],
    );
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    // Over UDP the upstream truncates: relayed, never kept.
    for _ in 0..2 {
        let tc = w.dig(
            &cli,
            &["+noedns", "+ignore", "+notcp", "big.up.test", "TXT"],
        );
        assert!(tc.has_flag("tc"), "{:?}", tc.flags);
    }
    assert_eq!(up.queries(), 2);
    // Over TCP the whole answer comes, and is kept.
    for _ in 0..2 {
        let full = w.dig(&cli, &["+noedns", "+tcp", "big.up.test", "TXT"]);
        assert_eq!(full.answers.len(), 1);
        assert!(!full.has_flag("tc"));
    }
    assert_eq!(up.queries(), 3);
    // Too big for a UDP client of 512 bytes: forwarded, and truncated by the upstream, as before.
    let tc = w.dig(
        &cli,
        &["+noedns", "+ignore", "+notcp", "big.up.test", "TXT"],
    );
    assert!(tc.has_flag("tc"), "{:?}", tc.flags);
    assert_eq!(up.queries(), 4);
}

#[test]
fn r34_cache_size_0_turns_it_off() {
    let w = World::new("r34_cache_size_0_turns_it_off");
    let up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let net = w.network("n1", json!({"cacheSize": 0}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    let first = w.dig(&cli, &["a.up.test"]);
    assert_eq!(first.answers[0].ttl, 60, "relayed as the upstream sent it");
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.1"]);
    assert_eq!(up.queries(), 2);
    let (_, text) = w.status_text(&["cli"]);
    assert!(text.contains("cache: off"), "{text}");
}

#[test]
fn r34a_the_same_question_in_flight_is_forwarded_once_and_each_client_gets_its_answer() {
    let w = World::new("r34a_the_same_question_in_flight_is_forwarded_once");
    let up = w.upstream("127.0.0.53:53", "up.test", &[("slow.up.test", "10.9.9.7")]);
    // No cache: the queries meet only while the first is in flight.
    let net = w.network("n1", json!({"cacheSize": 0}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    let coalesced = || {
        let (_, report) = w.status();
        report.containers[0]
            .resolver
            .status()
            .map(|s| s.counters.coalesced)
    };
    up.set_mode(Mode::Held);
    let names = [
        "slow.up.test",
        "SLOW.up.test",
        "Slow.Up.Test",
        "slow.UP.TEST",
    ];
    let answers = std::thread::scope(|s| {
        let first = s.spawn(|| w.dig(&cli, &["+time=5", "+tries=1", names[0]]));
        wait_until(Duration::from_secs(5), "the first query upstream", || {
            (up.queries() == 1).then_some(())
        });
        // The same question, asked while the first is held upstream: they wait for it.
        let others: Vec<_> = names[1..]
            .iter()
            .map(|n| {
                let (w, cli) = (&w, &cli);
                s.spawn(move || w.dig(cli, &["+time=5", "+tries=1", n]))
            })
            .collect();
        wait_until(Duration::from_secs(5), "three queries waiting", || {
            (coalesced() == Some(3)).then_some(())
        });
        assert_eq!(
            up.queries(),
            1,
            "the waiting queries were not sent upstream"
        );
        up.set_mode(Mode::Answer);
        let mut all = vec![first.join().unwrap()];
        all.extend(others.into_iter().map(|h| h.join().unwrap()));
        all
    });
    for (d, name) in answers.iter().zip(names) {
        // dig checks the ID; the answer names the client's own question, its case kept.
        assert_eq!(d.data(), vec!["10.9.9.7"], "{name}: {d:?}");
        assert_eq!(d.answers[0].name, format!("{name}."), "{name}");
    }
    assert_eq!(up.queries(), 1, "one question, forwarded once");
    assert_eq!(coalesced(), Some(3));
    // A question asked after the answer came is forwarded again (no cache here).
    assert_eq!(w.dig(&cli, &[names[0]]).data(), vec!["10.9.9.7"]);
    assert_eq!(up.queries(), 2);
}

//! `embedns status`: what a person sees, asked of the live resolvers.

use serde_json::json;
use test_cni::World;

#[test]
fn status_reports_containers_resolvers_and_health() {
    let w = World::new("status_reports_containers_resolvers_and_health");
    let _up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.9")]);
    let net = w.network("n1", json!({}));
    let (web, cli) = (w.container("web"), w.container("cli"));
    w.adding(&net, &web)
        .name("web")
        .cap(json!({"aliases": ["www"]}))
        .ok();
    w.adding(&net, &cli)
        .name("cli")
        .args("EMBEDNS_LINKS=web:db")
        .ok();
    w.resolve(&cli, "web", "A");
    w.resolve(&cli, "a.up.test", "A");

    let (code, v) = w.status();
    assert_eq!(code, 0, "{v:?}");
    assert_eq!(v.network(&net.name).unwrap().containers.len(), 2, "{v:?}");
    let cli_status = v.container("cli").expect("cli in the report");
    assert_eq!(cli_status.attachments[0].links, ["web:db"]);
    let r = cli_status.resolver.status().expect("a healthy resolver");
    assert!(r.udp_port > 0);
    assert_eq!(r.upstreams[0].address, "127.0.0.53:53");
    assert!(r.upstreams[0].from_host);
    assert!(r.counters.local >= 1, "{r:?}");
    assert_eq!(r.counters.forwarded, 1, "{r:?}");
    // A resolver doing its job makes no call its seccomp filter refuses.
    assert_eq!(r.seccomp_denied, 0, "{r:?}");

    // One container, by name, as text.
    let (code, text) = w.status_text(&["web"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("aliases [www]") && text.contains("healthy"),
        "{text}"
    );
    assert!(!text.contains("container cli"), "{text}");
    // The kernel's Landlock: without TCP rules (ABI 4, Linux 6.7) status warns.
    let (_, report) = w.status();
    let warned = text.contains("has no TCP rules (Linux 6.7+)");
    assert_eq!(
        warned,
        report.landlock_abi < 4,
        "ABI {}: {text}",
        report.landlock_abi
    );

    // A dead resolver makes status fail: its supervisor killed first, which would start it
    // again (91_always_answered), then the resolver.
    let pid = w.resolver_pids()[0];
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let parent: i32 = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    for p in [parent, pid] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::SIGKILL).unwrap();
    }
    test_cni::wait_until(
        std::time::Duration::from_secs(5),
        "a resolver to die",
        || (w.resolver_pids().len() == 1).then_some(()),
    );
    let (code, text) = w.status_text(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("UNHEALTHY"), "{text}");
}

#[test]
fn unknown_conf_keys_are_warned_about_in_the_log_and_status_never_refused() {
    let w = World::new("unknown_conf_keys_are_warned_about_in_the_log_and_status_never_refused");
    let log = w.path("plugin.log");
    // `catchNameServers` for `catchNameservers`: a typo that did nothing, silently.
    let net = w.network(
        "n1",
        serde_json::json!({"catchNameServers": false, "logFile": log}),
    );
    let c = w.container("c");
    w.adding(&net, &c).name("c").ok();
    let (code, text) = w.status_text(&[]);
    assert_eq!(code, 0, "a warning, not trouble: {text}");
    assert!(
        text.contains("keys embedns does not know (ignored; a typo?): catchNameServers"),
        "{text}"
    );
    let (_, report) = w.status();
    assert_eq!(
        report.network("n1").unwrap().unknown_keys,
        ["catchNameServers"]
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("key=\"catchNameServers\"") || logged.contains("key=catchNameServers"),
        "{logged}"
    );
    // The harness's own keys (capabilities, CNI's) are not warned about.
    assert!(!text.contains("capabilities"), "{text}");
}

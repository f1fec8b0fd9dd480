//! `embedns status`: what a person sees, asked of the live resolvers.

use serde_json::{json, Value};
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

    let (code, out) = w.status_text(&["--json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["networks"][0]["containers"].as_array().unwrap().len(), 2);
    let cli_status = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cli")
        .unwrap()
        .clone();
    assert_eq!(cli_status["attachments"][0]["links"], json!(["web:db"]));
    let r = &cli_status["resolver"];
    assert_eq!(r["healthy"], true);
    assert!(r["udpPort"].as_u64().unwrap() > 0);
    assert_eq!(r["upstreams"][0]["address"], "127.0.0.53:53");
    assert_eq!(r["upstreams"][0]["fromHost"], true);
    assert!(r["counters"]["local"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["counters"]["forwarded"], 1, "{r}");
    // A resolver doing its job makes no call its seccomp filter refuses.
    assert_eq!(r["seccompDenied"], 0, "{r}");

    // One container, by name, as text.
    let (code, text) = w.status_text(&["web"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("aliases [www]") && text.contains("healthy"),
        "{text}"
    );
    assert!(!text.contains("container cli"), "{text}");

    // A dead resolver makes status fail.
    let pid = w.resolver_pids()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    test_cni::wait_until(
        std::time::Duration::from_secs(5),
        "a resolver to die",
        || (w.resolver_pids().len() == 1).then_some(()),
    );
    let (code, text) = w.status_text(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("UNHEALTHY"), "{text}");
}

//! Which names a container resolves (docs/behaviour.md R1–R8), asked with dig and busybox
//! nslookup from inside real container netns.

use std::collections::BTreeSet;

use serde_json::json;
use test_cni::{ip_of, World};

#[test]
fn r1_scope_and_same_name_on_two_networks() {
    let w = World::new("r1_scope_and_same_name_on_two_networks");
    let (n1, n2) = (w.network("front", json!({})), w.network("back", json!({})));
    let (a, b, cli) = (w.container("a"), w.container("b"), w.container("cli"));
    let web1 = ip_of(&w.adding(&n1, &a).name("web").ok());
    let web2 = ip_of(&w.adding(&n2, &b).name("web").ok());
    let only2 = w.container("only2");
    w.adding(&n2, &only2).name("db").ok();
    w.adding(&n1, &cli).name("cli").ok();
    // R1: cli (on front) sees front's web, not back's, and nothing of back.
    assert_eq!(w.resolve(&cli, "web", "A"), vec![web1.clone()]);
    assert_eq!(w.resolve(&cli, "db", "A"), Vec::<String>::new());
    assert_eq!(w.resolve(&only2, "web", "A"), vec![web2]);
}

#[test]
fn r2_name_sources() {
    let w = World::new("r2_name_sources");
    let net = w.network("n1", json!({}));
    let (a, b, c, d, cli) = (
        w.container("a"),
        w.container("b"),
        w.container("c"),
        w.container("d"),
        w.container("cli"),
    );
    let ip_a = ip_of(&w.adding(&net, &a).name("frompod").ok());
    let ip_b = ip_of(&w.adding(&net, &b).cap(json!({"name": "fromruntime"})).ok());
    let ip_c = ip_of(&w.adding(&net, &c).args("name=fromargs").ok());
    // K8S_POD_NAME wins over runtimeConfig.name, which wins over CNI_ARGS name.
    let ip_d = ip_of(
        &w.adding(&net, &d)
            .name("winner")
            .args("name=loser")
            .cap(json!({"name": "loser2"}))
            .ok(),
    );
    w.adding(&net, &cli).ok(); // no name: still served
    assert_eq!(w.resolve(&cli, "frompod", "A"), vec![ip_a]);
    assert_eq!(w.resolve(&cli, "fromruntime", "A"), vec![ip_b]);
    assert_eq!(w.resolve(&cli, "fromargs", "A"), vec![ip_c]);
    assert_eq!(w.resolve(&cli, "winner", "A"), vec![ip_d]);
    assert!(w.resolve(&cli, "loser", "A").is_empty());
    assert!(w.resolve(&cli, "loser2", "A").is_empty());
}

#[test]
fn r3_aliases_map_list_static_and_short_id() {
    let w = World::new("r3_aliases_map_list_static_and_short_id");
    let net = w.network("n1", json!({"aliases": ["everyone"]}));
    let (a, b, cli) = (w.container("a"), w.container("b"), w.container("cli"));
    let long_id = "2ff3fb1478a204897c8aded9df34b9a07b5274daf89831a4435819e7042eda5b";
    // podman's map form, with the short ID as podman sends it, and a 64-hex container ID.
    let ip_a = ip_of(
        &w.adding(&net, &a)
            .name("web")
            .cap(json!({"aliases": {"n1": ["www", "api"], "other": ["nope"]}}))
            .id(long_id)
            .ok(),
    );
    // the conventions' list form
    let ip_b = ip_of(
        &w.adding(&net, &b)
            .name("db")
            .cap(json!({"aliases": ["database"]}))
            .ok(),
    );
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.resolve(&cli, "www", "A"), vec![ip_a.clone()]);
    assert_eq!(w.resolve(&cli, "api", "A"), vec![ip_a.clone()]);
    assert!(w.resolve(&cli, "nope", "A").is_empty());
    assert_eq!(w.resolve(&cli, "database", "A"), vec![ip_b.clone()]);
    assert_eq!(
        w.resolve(&cli, "2ff3fb1478a2", "A"),
        vec![ip_a.clone()],
        "short ID"
    );
    let mut all = vec![ip_a, ip_b];
    all.sort();
    let mut everyone = w.resolve(&cli, "everyone", "A");
    everyone.retain(|ip| all.contains(ip));
    assert_eq!(everyone, all, "static alias on every container");
}

#[test]
fn r4_links_are_private_and_checked_first() {
    let w = World::new("r4_links_are_private_and_checked_first");
    let net = w.network("n1", json!({}));
    let (web, db, cli, other) = (
        w.container("web"),
        w.container("db"),
        w.container("cli"),
        w.container("other"),
    );
    let ip_web = ip_of(&w.adding(&net, &web).name("web").ok());
    let ip_db = ip_of(&w.adding(&net, &db).name("db").ok());
    // cli links web as "db" (hiding the real db for cli only), via CNI_ARGS, and "later"
    // to a container that is not there yet, via runtimeConfig.links.
    w.adding(&net, &cli)
        .name("cli")
        .args("EMBEDNS_LINKS=web:db")
        .cap(json!({"links": [{"name": "late", "alias": "later"}]}))
        .ok();
    w.adding(&net, &other).name("other").ok();
    assert_eq!(w.resolve(&cli, "db", "A"), vec![ip_web.clone()]);
    assert_eq!(
        w.resolve(&other, "db", "A"),
        vec![ip_db],
        "a link is visible only to its owner"
    );
    assert!(
        w.resolve(&cli, "later", "A").is_empty(),
        "target not there yet"
    );
    let late = w.container("late");
    let ip_late = ip_of(&w.adding(&net, &late).name("late").ok());
    // Once the target joins, the alias resolves at once, without restarting anything (the
    // shared index changed before ADD returned).
    assert_eq!(w.resolve(&cli, "later", "A"), vec![ip_late.clone()]);
    assert!(w.resolve(&other, "later", "A").is_empty());
}

#[test]
fn r5_shared_alias_answers_all_ips_round_robin() {
    let w = World::new("r5_shared_alias_answers_all_ips_round_robin");
    let net = w.network("n1", json!({}));
    let (a, b, c, cli) = (
        w.container("a"),
        w.container("b"),
        w.container("c"),
        w.container("cli"),
    );
    let mut ips = BTreeSet::new();
    for (ct, n) in [(&a, "w1"), (&b, "w2"), (&c, "w3")] {
        ips.insert(ip_of(
            &w.adding(&net, ct)
                .name(n)
                .cap(json!({"aliases": ["www", "www"]}))
                .ok(),
        ));
    }
    w.adding(&net, &cli).name("cli").ok();
    let mut orders = BTreeSet::new();
    for _ in 0..20 {
        let d = w.dig(&cli, &["www", "A"]);
        let got: BTreeSet<String> = d.data().into_iter().collect();
        assert_eq!(got, ips, "every IP, deduplicated");
        assert_eq!(d.answers.len(), 3);
        orders.insert(d.ordered());
    }
    assert!(orders.len() > 1, "the order never changed over 20 answers");
}

#[test]
fn r6_case_and_trailing_dot_r7_dotted_names() {
    let w = World::new("r6_case_and_trailing_dot_r7_dotted_names");
    let net = w.network("mynet", json!({}));
    let (a, cli) = (w.container("a"), w.container("cli"));
    let ip = ip_of(
        &w.adding(&net, &a)
            .name("web")
            .cap(json!({"aliases": ["svc.backend"]}))
            .ok(),
    );
    w.adding(&net, &cli).name("cli").ok();
    let d = w.dig(&cli, &["WeB.", "A"]);
    assert_eq!(d.data(), vec![ip.clone()]);
    assert_eq!(d.answers[0].name, "WeB.", "the question's case is echoed");
    assert_eq!(w.resolve(&cli, "web.mynet", "A"), vec![ip.clone()]);
    assert_eq!(w.resolve(&cli, "WEB.MYNET.", "A"), vec![ip.clone()]);
    // a.b.c: first as a whole, then a.b on network c.
    assert_eq!(w.resolve(&cli, "svc.backend", "A"), vec![ip.clone()]);
    assert_eq!(w.resolve(&cli, "svc.backend.mynet", "A"), vec![ip]);
}

#[test]
fn r8_peers_come_and_go_live() {
    let w = World::new("r8_peers_come_and_go_live");
    let net = w.network("n1", json!({}));
    let (cli, peer) = (w.container("cli"), w.container("peer"));
    w.adding(&net, &cli).name("cli").ok();
    let pids = w.resolver_pids();
    assert!(w.resolve(&cli, "peer", "A").is_empty());
    // Visible to the very next query: ADD changed the shared index before it returned.
    let ip = ip_of(&w.adding(&net, &peer).name("peer").ok());
    assert_eq!(w.resolve(&cli, "peer", "A"), vec![ip.clone()]);
    w.del(&net, &peer, &[]);
    assert!(
        w.resolve(&cli, "peer", "A").is_empty(),
        "gone at once after DEL"
    );
    assert!(
        w.resolver_pids().contains(&pids[0]),
        "cli's resolver was not restarted"
    );
    // busybox nslookup, through the container's resolv.conf, agrees.
    let out = w.exec(&cli, &["busybox", "nslookup", "cli"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Address"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn busybox_nslookup_with_a_search_list() {
    // ★ The World's host resolv.conf has `search corp.example`, kept in the container's
    // (R23); busybox nslookup then asks only `web.corp.example`, which must be `web`.
    let w = World::new("busybox_nslookup_with_a_search_list");
    let _up = w.upstream(
        "127.0.0.53:53",
        "corp.example",
        &[("real.corp.example", "10.9.9.9")],
    );
    let net = w.network("n1", json!({}));
    let (a, cli) = (w.container("a"), w.container("cli"));
    let ip = ip_of(&w.adding(&net, &a).name("web").ok());
    w.adding(&net, &cli).name("cli").ok();
    let out =
        String::from_utf8_lossy(&w.exec(&cli, &["busybox", "nslookup", "web"]).stdout).into_owned();
    assert!(out.contains(&format!("Address: {ip}")), "{out}");
    // A name of the search domain that is no container is still forwarded.
    let out = String::from_utf8_lossy(&w.exec(&cli, &["busybox", "nslookup", "real"]).stdout)
        .into_owned();
    assert!(out.contains("Address: 10.9.9.9"), "{out}");
}

#[test]
fn r16a_search_qualified_names_are_forwarded_first() {
    // The World's host resolv.conf says `search corp.example`; its upstream knows
    // `git.corp.example`, a real name that a container named `git` must not capture.
    let w = World::new("r16a_search_qualified_names_are_forwarded_first");
    let _up = w.upstream(
        "127.0.0.53:53",
        "corp.example",
        &[("git.corp.example", "10.9.9.8")],
    );
    let net = w.network("n1", json!({}));
    let (git, web, cli) = (w.container("git"), w.container("web"), w.container("cli"));
    let git_ip = ip_of(&w.adding(&net, &git).name("git").ok());
    let web_ip = ip_of(&w.adding(&net, &web).name("web").ok());
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.resolve(&cli, "git.corp.example", "A"), vec!["10.9.9.8"]);
    assert_eq!(w.resolve(&cli, "git", "A"), vec![git_ip]);
    // The upstream says NXDOMAIN: the local name answers, for dig and for busybox.
    assert_eq!(
        w.resolve(&cli, "web.corp.example", "A"),
        vec![web_ip.clone()]
    );
    let out =
        String::from_utf8_lossy(&w.exec(&cli, &["busybox", "nslookup", "web"]).stdout).into_owned();
    assert!(out.contains(&format!("Address: {web_ip}")), "{out}");

    // Nothing is forwarded from an internal network: answered locally at once.
    let internal = w.network("n2", json!({"internal": true}));
    let (db, cli2) = (w.container("db"), w.container("cli2"));
    let db_ip = ip_of(&w.adding(&internal, &db).name("db").ok());
    w.adding(&internal, &cli2).name("cli2").ok();
    let d = w.dig(&cli2, &["db.corp.example", "A"]);
    assert_eq!(d.data(), vec![db_ip]);
    assert_eq!(d.status, "NOERROR");

    // No upstream answers (nothing listens where it points): no real name can be found,
    // so the local one answers, and busybox finds its peer.
    let dead = w.network("n3", json!({"dns": {"nameservers": ["127.0.0.9"]}}));
    let (app, cli3) = (w.container("app"), w.container("cli3"));
    let app_ip = ip_of(&w.adding(&dead, &app).name("app").ok());
    w.adding(&dead, &cli3).name("cli3").ok();
    assert_eq!(
        w.resolve(&cli3, "app.corp.example", "A"),
        vec![app_ip.clone()]
    );
    let out = String::from_utf8_lossy(&w.exec(&cli3, &["busybox", "nslookup", "app"]).stdout)
        .into_owned();
    assert!(out.contains(&format!("Address: {app_ip}")), "{out}");
}

#[test]
fn r4_r7_links_apply_to_name_network_and_hide_while_their_target_is_gone() {
    let w = World::new("r4_r7_links_apply_to_name_network_and_hide_while_their_target_is_gone");
    let net = w.network("n1", json!({}));
    let (db, other, cli) = (w.container("db"), w.container("other"), w.container("cli"));
    let db_ip = ip_of(&w.adding(&net, &db).name("db").ok());
    // An unrelated container whose name is cli's alias for db.
    let other_ip = ip_of(&w.adding(&net, &other).name("database").ok());
    w.adding(&net, &cli)
        .name("cli")
        .args("EMBEDNS_LINKS=db:database")
        .ok();
    assert_eq!(w.resolve(&cli, "database", "A"), vec![db_ip.clone()]);
    assert_eq!(w.resolve(&cli, "database.n1", "A"), vec![db_ip.clone()]);
    assert_eq!(w.resolve(&cli, "DATABASE.n1.", "A"), vec![db_ip]);
    // Others see the container named `database`.
    assert_eq!(w.resolve(&db, "database.n1", "A"), vec![other_ip.clone()]);
    // The target leaves: the alias still hides `database` from cli, in both forms.
    w.del(&net, &db, &[]);
    assert!(w.resolve(&cli, "database", "A").is_empty());
    assert!(!w.resolve(&cli, "database.n1", "A").contains(&other_ip));
    assert_eq!(w.resolve(&other, "database", "A"), vec![other_ip]);
}

#[test]
fn names_docker_and_kubernetes_accept_never_fail_add() {
    let w = World::new("names_docker_and_kubernetes_accept_never_fail_add");
    let net = w.network("n1", json!({}));
    let (web, pod, cli) = (w.container("web"), w.container("pod"), w.container("cli"));
    // Docker accepts `web-`; DNS carries it: served.
    let web_ip = ip_of(&w.adding(&net, &web).name("web-").ok());
    // A Kubernetes pod name of one 70-character label: DNS cannot carry it, so it is not
    // served, but the pod starts, and its short ID still answers; so do `web-` and an alias
    // the runtime gave that DNS cannot carry.
    let long = "p".repeat(70);
    let id = format!("{:0>64}", "abcdef0123");
    let pod_ip = ip_of(
        &w.adding(&net, &pod)
            .name(&long)
            .id(&id)
            .cap(json!({"aliases": ["ok-alias", "dots..twice"]}))
            .ok(),
    );
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.resolve(&cli, "web-", "A"), vec![web_ip]);
    assert_eq!(w.resolve(&cli, &id[..12], "A"), vec![pod_ip.clone()]);
    assert_eq!(w.resolve(&cli, "ok-alias", "A"), vec![pod_ip]);
}

#[test]
fn a_container_id_too_long_for_a_file_name_fails_add_before_anything_is_written() {
    let w =
        World::new("a_container_id_too_long_for_a_file_name_fails_add_before_anything_is_written");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    // Valid as a container ID (≤ 256), but `<id>@eth0.json` would be 260 bytes.
    let id = "c".repeat(250);
    let out = w.adding(&net, &c).name("c").id(&id).run();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("CNI_CONTAINERID") && said.contains("255"),
        "{said}"
    );
    assert!(w.records("n1").is_empty());
    assert_eq!(w.sandboxes(), 0);
    assert!(w.resolver_pids().is_empty());
}

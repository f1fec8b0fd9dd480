//! Several hosts, trusted as little as possible (docs/behaviour.md R27-R33): what a writer of
//! the etcd prefix, another host or a clone can and cannot do to a host's own records,
//! answers and log; values and claims across versions; etcd's RBAC. Every test runs on etcd
//! 3.4 and 3.5, with real hosts (netns), members, sync processes and dig.

use std::time::Duration;

use embedns_conf::multihost::keys::Layout;
use serde_json::json;
use test_cni::ip_of;
use test_cni::multihost::{Cluster, Etcd};
use test_cni::wait::wait_until;

#[macro_use]
mod common;
use common::{absent, etcd_value, etcd_write, web_and_cli, WebAndCli, SPREAD};

on_both!(a_key_from_etcd_never_reaches_a_hosts_own_records);
fn a_key_from_etcd_never_reaches_a_hosts_own_records(etcd: Etcd) {
    let c = Cluster::new(etcd, "forged_keys", 2, 6);
    let nets = c.network("mh");
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let WebAndCli {
        web, cli, web_ip, ..
    } = web_and_cli(&c, &nets[0], &nets[1]);
    let own_key = c.record_keys(0, "mh", "host1").remove(0);
    let attachment = own_key.rsplit('/').next().unwrap().to_string();
    let local = h1
        .data_dir
        .join("networks/mh")
        .join(format!("{attachment}.json"));
    let (file_before, value_before) = (
        std::fs::read_to_string(&local).unwrap(),
        etcd_value(&c, 0, &own_key),
    );
    // R27: the published value is a versioned peer record, nothing of the container's own
    // resolver (its netns path, upstreams, search list).
    let published: serde_json::Value = serde_json::from_str(&value_before).unwrap();
    assert_eq!(published["v"], 1, "{published}");
    assert_eq!(published["netns"], "", "{published}");
    assert!(
        published.get("search").is_none() && published.get("links").is_none(),
        "{published}"
    );
    // A writer of the prefix forges web's record with another address and upstreams, under
    // `..` and `.` as the host.
    let forged = value_before
        .replace(&web_ip, "10.77.1.250")
        .replace("\"explicit\":[]", "\"explicit\":[\"192.0.2.53:53\"]");
    let net_prefix = format!("{}/mh", c.prefix);
    for host in ["..", "."] {
        etcd_write(
            &c,
            1,
            &format!("{net_prefix}/{host}/{attachment}"),
            Some(&forged),
        );
    }
    // A legitimate change after them is taken in: the forged keys stopped nothing.
    let late = h2.container("late");
    let late_ip = ip_of(&h2.adding(&nets[1], &late).name("late").ok());
    wait_until(SPREAD, "host1 to answer late", || {
        (h1.resolve(&web, "late", "A") == vec![late_ip.clone()]).then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&local).unwrap(),
        file_before,
        "host1's own record"
    );
    assert_eq!(
        etcd_value(&c, 0, &own_key),
        value_before,
        "host1's key in etcd"
    );
    assert_eq!(h2.resolve(&cli, "web", "A"), vec![web_ip.clone()]);
    // Deleting them deletes nothing of host1's.
    for host in ["..", "."] {
        etcd_write(&c, 1, &format!("{net_prefix}/{host}/{attachment}"), None);
    }
    let later = h2.container("later");
    let later_ip = ip_of(&h2.adding(&nets[1], &later).name("later").ok());
    wait_until(SPREAD, "host1 to answer later", || {
        (h1.resolve(&web, "later", "A") == vec![later_ip.clone()]).then_some(())
    });
    assert!(local.is_file(), "host1's own record is still there");
    assert_eq!(c.record_keys(0, "mh", "host1"), vec![own_key]);
    assert_eq!(h1.resolve(&web, "web", "A"), vec![web_ip.clone()]);
    assert_eq!(h2.resolve(&cli, "web", "A"), vec![web_ip]);
    // Host1's status lists host2, alive, with its three records; `..` and `.` are no hosts.
    let (code, text) = h1.status_text(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("host host2") && text.contains("3 records, alive (holds its claim)"),
        "{text}"
    );
    assert!(
        !text.contains("host ..") && !text.contains("host . "),
        "{text}"
    );
    // Nothing but directories under `.remote` (a plain file there fails every index rebuild).
    for e in std::fs::read_dir(h1.data_dir.join("networks/mh/.remote")).unwrap() {
        assert!(e.unwrap().file_type().unwrap().is_dir());
    }
    // The host name `..` is refused in a conf.
    let mut bad = c.etcd_options(0);
    bad["etcd"]["host"] = json!("..");
    let net = h1.network_in("mh2", "10.77.9", bad);
    let x = h1.container("x");
    let out = h1.adding(&net, &x).name("x").run();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("host"),
        "{out:?}"
    );
}

on_both!(a_change_that_could_not_be_applied_is_applied_later_and_blocks_no_other);
fn a_change_that_could_not_be_applied_is_applied_later_and_blocks_no_other(etcd: Etcd) {
    let c = Cluster::new(etcd, "failed_apply", 2, 6);
    let nets = c.network("mh");
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let WebAndCli { web, cli_ip, .. } = web_and_cli(&c, &nets[0], &nets[1]);
    wait_until(SPREAD, "host1 to answer cli", || {
        (h1.resolve(&web, "cli", "A") == vec![cli_ip.clone()]).then_some(())
    });
    // A third host's record that host1 cannot write: `.remote/host3` is a file there.
    let remote = h1.data_dir.join("networks/mh/.remote");
    std::fs::write(remote.join("host3"), "").unwrap();
    let template_key = c.record_keys(1, "mh", "host2").remove(0);
    let template = etcd_value(&c, 1, &template_key);
    let attachment = template_key.rsplit('/').next().unwrap();
    let (cid, _) = attachment.split_once('@').unwrap();
    let ghost_cid = format!("{cid}x3");
    let third = template
        .replace(cid, &ghost_cid)
        .replace("\"name\":\"cli\"", "\"name\":\"third\"")
        .replace("10.77.2.", "10.77.3.");
    etcd_write(
        &c,
        1,
        &Layout::new(&c.prefix, "mh").record("host3", &format!("{ghost_cid}@eth0")),
        Some(&third),
    );
    // Host2's next container spreads all the same.
    let late = h2.container("late");
    let late_ip = ip_of(&h2.adding(&nets[1], &late).name("late").ok());
    wait_until(SPREAD, "host1 to answer late", || {
        (h1.resolve(&web, "late", "A") == vec![late_ip.clone()]).then_some(())
    });
    assert!(absent(h1, &web, "third"));
    // Once the obstacle is gone, the change is made.
    std::fs::remove_file(remote.join("host3")).unwrap();
    wait_until(Duration::from_secs(10), "host1 to answer third", || {
        (!h1.resolve(&web, "third", "A").is_empty()).then_some(())
    });
}

on_both!(another_hosts_values_are_checked_like_local_ones_and_never_take_a_local_ptr);
fn another_hosts_values_are_checked_like_local_ones_and_never_take_a_local_ptr(etcd: Etcd) {
    let c = Cluster::new(etcd, "checked_values", 2, 6);
    let nets = c.network("mh");
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let WebAndCli {
        web, cli, web_ip, ..
    } = web_and_cli(&c, &nets[0], &nets[1]);
    let template_key = c.record_keys(1, "mh", "host2").remove(0);
    let template = etcd_value(&c, 1, &template_key);
    let attachment = template_key.rsplit('/').next().unwrap();
    let (cid, _) = attachment.split_once('@').unwrap();
    let cli_ip = template
        .split("\"ips\":[\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    // Values a writer of the prefix could put under a host of its own.
    let forge = |n: usize, name: &str, ip: &str, extra_aliases: usize| {
        let aliases: Vec<String> = (0..extra_aliases).map(|i| format!("\"a{i}\"")).collect();
        let value = template
            .replace(cid, &format!("{cid}f{n}"))
            .replace("\"name\":\"cli\"", &format!("\"name\":\"{name}\""))
            .replace(&cli_ip, ip)
            .replace(
                "\"aliases\":[]",
                &format!("\"aliases\":[{}]", aliases.join(",")),
            );
        let key = Layout::new(&c.prefix, "mh").record("host9", &format!("{cid}f{n}@eth0"));
        (key, value)
    };
    let mut values = vec![
        forge(1, "loop", "127.0.0.1", 0),
        forge(2, "many", "10.77.9.2", 80),
        forge(3, "impostor", &web_ip, 0),
        // Loopback written as IPv6, the cloud metadata address, a link-local IPv6 one.
        forge(5, "mapped", "::ffff:127.0.0.1", 0),
        forge(6, "metadata", "169.254.169.254", 0),
        forge(7, "linklocal", "fe80::1", 0),
    ];
    let (key, mut big) = forge(4, "big", "10.77.9.4", 0);
    big = big.replacen('{', &format!("{{\"pad\":\"{}\",", "x".repeat(20_000)), 1);
    values.push((key, big));
    for (key, value) in &values {
        etcd_write(&c, 1, key, Some(value));
    }
    // A legitimate change after them spreads; none of the bad values is taken in.
    let late = h2.container("late");
    let late_ip = ip_of(&h2.adding(&nets[1], &late).name("late").ok());
    wait_until(SPREAD, "host1 to answer late", || {
        (h1.resolve(&web, "late", "A") == vec![late_ip.clone()]).then_some(())
    });
    for name in ["loop", "many", "a1", "big", "metadata"] {
        assert!(absent(h1, &web, name), "{name}");
    }
    for name in ["mapped", "linklocal"] {
        assert!(h1.resolve(&web, name, "AAAA").is_empty(), "{name}");
    }
    let skipped = c.sync_status(0, "mh").unwrap().skipped;
    assert!(skipped >= 6, "skipped {skipped}");
    // The impostor claiming web's address resolves by its name, but web keeps its PTR,
    // and status says the address is held twice.
    assert_eq!(h1.resolve(&web, "impostor", "A"), vec![web_ip.clone()]);
    let ptr = h1.dig(&web, &["-x", &web_ip]);
    assert_eq!(ptr.data(), vec!["web.mh.".to_string()], "{ptr:?}");
    let (_, text) = h1.status_text(&[]);
    assert!(text.contains(&format!("{web_ip} (host9)")), "{text}");
    assert!(text.contains("values from other hosts skipped"), "{text}");
    assert_eq!(h2.resolve(&cli, "web", "A"), vec![web_ip]);
}

on_both!(a_writer_of_garbage_values_cannot_grow_the_sync_log_without_bound);
fn a_writer_of_garbage_values_cannot_grow_the_sync_log_without_bound(etcd: Etcd) {
    let c = Cluster::new(etcd, "garbage_log", 2, 6);
    let nets = c.network("mh");
    let h1 = &c.hosts[0].w;
    let WebAndCli { web, .. } = web_and_cli(&c, &nets[0], &nets[1]);
    // 10,000 values that are no record, in transactions of 100 puts: each is skipped with a
    // line of host1's sync log, over 1 MiB of them.
    for t in 0..100 {
        let mut txn = String::from("\n");
        for k in 0..100 {
            txn += &format!("put {}/mh/host9/g{t}x{k}@eth0 garbage\n", c.prefix);
        }
        txn += "\n\n";
        let out = c.etcdctl_with_input(1, &["txn"], &txn);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_until(Duration::from_secs(20), "host1 to skip them all", || {
        let s = c.sync_status(0, "mh")?;
        (s.skipped >= 10_000).then_some(())
    });
    let log = h1.data_dir.join("sync/mh.log");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (current, rotated) = (size(&log), size(&log.with_extension("log.1")));
    assert!(
        rotated > 0,
        "rotated once at least ({current} + {rotated} bytes)"
    );
    assert!(
        current <= 1 << 20 && rotated <= 1 << 20,
        "{current} + {rotated} bytes"
    );
    // And host1 still answers.
    assert_eq!(h1.resolve(&web, "web", "A").len(), 1);
}

on_both!(one_host_of_three_on_the_previous_release_and_its_upgrade_keep_the_network_whole);
fn one_host_of_three_on_the_previous_release_and_its_upgrade_keep_the_network_whole(etcd: Etcd) {
    // R27: host1 runs the release before the peer record (it publishes its whole records and
    // reads values as such), hosts 2 and 3 this one; then host1's binaries are replaced while
    // its sync process and resolver run on.
    let previous = test_cni::bins::previous_shared_release();
    let c = Cluster::new(etcd, "mixed_versions", 3, 6);
    let (h1, h2, h3) = (&c.hosts[0].w, &c.hosts[1].w, &c.hosts[2].w);
    h1.use_binaries(&previous);
    let nets = c.network("mh");
    let (web, db, cli) = (h1.container("web"), h2.container("db"), h3.container("cli"));
    let web_ip = ip_of(&h1.adding(&nets[0], &web).name("web").ok());
    let db_ip = ip_of(&h2.adding(&nets[1], &db).name("db").ok());
    let cli_ip = ip_of(&h3.adding(&nets[2], &cli).name("cli").ok());
    let everyone = |extra: &[(&str, &str)]| {
        let mut named = vec![
            ("web", web_ip.clone()),
            ("db", db_ip.clone()),
            ("cli", cli_ip.clone()),
        ];
        named.extend(extra.iter().map(|(n, ip)| (*n, ip.to_string())));
        for (w, from) in [(h1, &web), (h2, &db), (h3, &cli)] {
            for (name, ip) in &named {
                wait_until(SPREAD, &format!("{name} from {}", from.netns), || {
                    (w.resolve(from, name, "A") == vec![ip.clone()]).then_some(())
                });
            }
        }
    };
    everyone(&[]);
    // The upgrade of host1: its next container is added by the new plugin; the old sync
    // process publishes it, and everyone answers it.
    h1.use_binaries(&test_cni::bins::bin_dir());
    let web2 = h1.container("web2");
    let web2_ip = ip_of(&h1.adding(&nets[0], &web2).name("web2").ok());
    everyone(&[("web2", &web2_ip)]);
}

on_both!(a_host_notices_its_claim_deleted_or_taken_and_publishes_only_while_it_holds_it);
fn a_host_notices_its_claim_deleted_or_taken_and_publishes_only_while_it_holds_it(etcd: Etcd) {
    let c = Cluster::new(etcd, "claim_fence", 2, 6);
    let nets = c.network("mh");
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let WebAndCli { cli, .. } = web_and_cli(&c, &nets[0], &nets[1]);
    let claim = Layout::new(&c.prefix, "mh").claim("host1");
    let own = etcd_value(&c, 0, &claim);
    assert!(!own.is_empty());
    // Deleted by hand mid-session: host1 claims its name again.
    etcd_write(&c, 1, &claim, None);
    wait_until(SPREAD * 2, "host1 to claim its name again", || {
        (etcd_value(&c, 1, &claim) == own).then_some(())
    });
    // Taken by another machine (a clone): host1 stops publishing and says who holds it.
    etcd_write(&c, 1, &claim, Some("clone-machine /run/embedns"));
    wait_until(SPREAD * 2, "host1 to see its claim taken", || {
        let s = c.sync_status(0, "mh")?;
        s.claim_refused?.contains("clone-machine").then_some(())
    });
    let late = h1.container("late");
    let late_id = format!("{}-late", h1.id);
    let late_ip = ip_of(&h1.adding(&nets[0], &late).name("late").id(&late_id).ok());
    let keys = c.record_keys(0, "mh", "host1");
    let published = keys
        .iter()
        .any(|k| k.ends_with(&format!("/{late_id}@eth0")));
    assert!(!published, "published without the claim: {keys:?}");
    // The clone goes: host1 claims its name again and publishes what it has.
    etcd_write(&c, 1, &claim, None);
    wait_until(Duration::from_secs(10), "late to spread", || {
        (h2.resolve(&cli, "late", "A") == vec![late_ip.clone()]).then_some(())
    });
}

on_both!(with_etcd_rbac_each_host_may_write_only_its_own_keys);
fn with_etcd_rbac_each_host_may_write_only_its_own_keys(etcd: Etcd) {
    // docs/multihost.md's recipe: etcd users, a role per host.
    let c = Cluster::with_rbac(etcd, "rbac", 2, 6, "mh");
    let nets = c.network("mh");
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let WebAndCli {
        web,
        cli,
        web_ip,
        cli_ip,
    } = web_and_cli(&c, &nets[0], &nets[1]);
    wait_until(
        SPREAD,
        "names across hosts, each published as its own user",
        || {
            (h1.resolve(&web, "cli", "A") == vec![cli_ip.clone()]
                && h2.resolve(&cli, "web", "A") == vec![web_ip.clone()])
            .then_some(())
        },
    );
    // Host1's user may not write host2's keys, nor those of a host whose name starts with
    // host1's (`host1x`: the claim `<net>/host1` is an exact key, the records `<net>/host1/`).
    let password = std::fs::read_to_string(h1.dir.join("etcd-password")).unwrap();
    let password = password.trim();
    for key in ["host2/forged@eth0", "host1x/forged@eth0", "host2"] {
        let full = format!("{}/mh/{key}", c.prefix);
        let out = c.etcdctl_as(0, "host1", password, &["put", &full, "x"]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains("permission denied"),
            "{key}: {said}"
        );
    }
    let own = Layout::new(&c.prefix, "mh").record("host1", "probe@eth0");
    let out = c.etcdctl_as(0, "host1", password, &["put", &own, "x"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.etcdctl_as(0, "host1", password, &["del", &own]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Faults of the host around a running resolver: a log that would grow without bound, a
//! damaged index met by every query, a nat rule already in the container, iptables gone at
//! DEL, the redirect's remover against re-ADDs, GC and its own session; and a test that
//! cannot run here must fail, not pass.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use test_cni::calls::Direct;
use test_cni::{ip_of, wait_until, World};

#[test]
fn the_resolver_log_rotates_while_running_and_a_query_flood_logs_little() {
    let w = World::new("the_resolver_log_rotates_while_running_and_a_query_flood_logs_little");
    let (n1, n2) = (w.network("n1", json!({})), w.network("n2", json!({})));
    let c = w.container("c");
    w.adding(&n1, &c).name("web").ok();
    let id = w.record_id("n1", &[]);
    let log = w.data_dir.join(format!("sandboxes/{id}/log/resolver.log"));
    // A log that has grown to the cap while running (1 MiB).
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let line = b"filler filler filler filler filler filler filler filler filler\n";
        for _ in 0..(1 << 20) / line.len() + 1 {
            f.write_all(line).unwrap();
        }
    }
    // A second network: the plugin's reload makes the resolver log a line.
    let out = w
        .adding(&n2, &c)
        .name("web")
        .env(&[("CNI_IFNAME", "eth1")])
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old = log.with_extension("log.1");
    wait_until(Duration::from_secs(5), "the log to rotate", || {
        old.exists().then_some(())
    });
    assert!(std::fs::metadata(&old).unwrap().len() >= 1 << 20);
    assert!(std::fs::metadata(&log).unwrap().len() < 64 << 10);

    // A damaged index (the resolver, unprivileged, never repairs it): every query meets it
    // and is answered from the records; the log does not grow with them.
    let web_ip = w.resolve(&c, "web", "A");
    let dir = w.data_dir.join("networks/n1");
    let index = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(".index"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&index, &[0xff; 64], 0).unwrap();
    let batch = w.path("batch");
    std::fs::write(&batch, "web.n1 A\n".repeat(300)).unwrap();
    let out = w.exec(
        &c,
        &[
            "dig",
            "@127.0.0.11",
            "+time=2",
            "+tries=1",
            "+short",
            "-f",
            &batch.display().to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| [l.to_string()] == web_ip.as_slice())
            .count(),
        300,
        "{text:.2000}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let n = logged.matches("index unreadable").count();
    assert!((1..=3).contains(&n), "{n} lines for 300 queries:\n{logged}");
    // The next writer rebuilds it.
    let d = w.container("d");
    w.adding(&n1, &d).name("db").ok();
    let before = std::fs::read_to_string(&log).unwrap().len();
    assert_eq!(w.resolve(&c, "web.n1", "A"), web_ip);
    let after = std::fs::read_to_string(&log).unwrap();
    assert!(!after[before..].contains("index unreadable"), "{after}");
}

#[test]
fn the_redirect_goes_first_and_a_removal_that_fails_is_reported() {
    let w = World::new("the_redirect_goes_first_and_a_removal_that_fails_is_reported");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    // A rule already in the container that would take 127.0.0.11 if ours were appended.
    let out = w.exec(
        &c,
        &[
            "iptables",
            "-w",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "127.0.0.11/32",
            "-j",
            "ACCEPT",
        ],
    );
    assert!(out.status.success());
    let ip = ip_of(&w.adding(&net, &c).name("web").ok());
    assert_eq!(w.resolve(&c, "web", "A"), vec![ip]);
    let out = w.exec(&c, &["iptables", "-w", "-t", "nat", "-S", "OUTPUT"]);
    let output = String::from_utf8_lossy(&out.stdout);
    let first = output
        .lines()
        .find(|l| l.starts_with("-A OUTPUT"))
        .unwrap_or("");
    assert!(first.contains("-j EMBEDNS_OUTPUT"), "{output}");

    // DEL where no iptables tool works: DEL succeeds, and says what it left.
    let broken = w.fake_tools(
        "broken",
        &[
            (
                "iptables-restore",
                "#!/bin/sh\necho 'simulated failure' >&2\nexit 1\n",
            ),
            (
                "iptables",
                "#!/bin/sh\necho 'simulated failure' >&2\nexit 4\n",
            ),
        ],
    );
    w.del(&net, &c, &[("PATH", &broken)]);
    assert!(w.nat_rules(&c).contains("EMBEDNS_OUTPUT"));
    // The netns stays, so the remover DEL left tries a second later, fails and notes it.
    let (code, report) = wait_until(Duration::from_secs(5), "the leftover to be noted", || {
        let (code, report) = w.status();
        (code != 0).then_some((code, report))
    });
    assert_eq!(
        code, 1,
        "status exits 1 while something is left: {report:?}"
    );
    let left = &report.leftovers[0];
    assert_eq!(left.netns, c.path, "{report:?}");
    assert!(left.error.contains("simulated failure"), "{report:?}");
    // GC, with iptables working again, removes it.
    let out = w.gc("n1", &[]);
    assert!(out.success, "GC: {}", out.stdout);
    assert!(!w.nat_rules(&c).contains("EMBEDNS"), "{}", w.nat_rules(&c));
    let (code, report) = w.status();
    assert_eq!(code, 0, "{report:?}");
    assert!(report.leftovers.is_empty(), "{report:?}");
}

#[test]
fn a_test_that_cannot_run_fails_instead_of_passing() {
    test_cni::require_root("a_test_that_cannot_run_fails_instead_of_passing");
    // This test binary, as an unprivileged user, running one of its own tests.
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "--exact",
            "the_redirect_goes_first_and_a_removal_that_fails_is_reported",
            "--test-threads=1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "a test that could not run passed:\n{text}"
    );
    assert!(text.contains("needs root"), "{text}");
    assert!(text.contains("1 failed"), "{text}");
}

/// Waits (at most 5 s) until no redirect remover of `w`'s dataDir runs.
fn removers_done(w: &World) {
    let pattern = format!("remove-redirect-later {}", w.data_dir.display());
    wait_until(Duration::from_secs(5), "the removers to finish", || {
        test_cni::pgrep(&pattern).is_empty().then_some(())
    });
}

#[test]
fn a_re_add_after_a_del_keeps_its_redirect_whatever_happened_to_the_removers_marker() {
    let w = World::new(
        "a_re_add_after_a_del_keeps_its_redirect_whatever_happened_to_the_removers_marker",
    );
    let net = w.network("n1", json!({}));
    let (c, d) = (w.container("c"), w.container("d"));
    let d_id = format!("{}-d", w.id);
    w.adding(&net, &c).name("c").ok();
    let d_ip = ip_of(&w.adding(&net, &d).name("d").id(&d_id).ok());
    // The marker cannot be written (`removers` is a file): the DEL removes the rules itself
    // instead of leaving a remover no ADD could find.
    let removers = w.data_dir.join("removers");
    let _ = std::fs::remove_dir_all(&removers);
    std::fs::write(&removers, "").unwrap();
    w.del(&net, &c, &[]);
    w.adding(&net, &c).name("c").ok();
    removers_done(&w);
    assert_eq!(
        w.resolve(&c, "d", "A"),
        vec![d_ip.clone()],
        "c's redirect after its re-ADD"
    );

    // embedns's DEL killed right after starting its remover, before noting its pid: the
    // re-ADD still keeps that remover off its new rules.
    std::fs::remove_file(&removers).unwrap();
    let del = w.conf("n1", "1.0.0", json!({})).to_string();
    let env = |verb| {
        [
            ("CNI_COMMAND", verb),
            ("CNI_CONTAINERID", d_id.as_str()),
            ("CNI_NETNS", d.path.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
            ("EMBEDNS_TEST_CRASH_AT", "del:remover-started"),
        ]
    };
    let out = w.plugin(&env("DEL"), &del);
    assert!(!out.success, "the crash point killed the DEL: {out:?}");
    let out = w.direct(
        "ADD",
        Direct {
            net: "n1",
            container: &d,
            id: &d_id,
            name: "d",
            ip: &d_ip,
            conf: json!({}),
        },
    );
    assert!(out.success, "{out:?}");
    removers_done(&w);
    assert_eq!(w.resolve(&c, "d", "A"), vec![d_ip], "c asking for d");
    assert_eq!(
        w.resolve(&d, "c", "A").len(),
        1,
        "d's redirect after its re-ADD"
    );
}

#[test]
fn gc_leaves_a_live_containers_redirect_alone_whatever_an_earlier_del_left_there() {
    let w =
        World::new("gc_leaves_a_live_containers_redirect_alone_whatever_an_earlier_del_left_there");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    let id = format!("{}-live", w.id);
    w.adding(&net, &c).name("c").id(&id).ok();
    // A note, as a DEL of an earlier container in this netns leaves when its removal fails
    // (then `podman network connect` put a new container's rules there).
    let leftovers = w.data_dir.join("leftovers");
    std::fs::create_dir_all(&leftovers).unwrap();
    let note = json!({"container_id": "earlier", "netns": c.path, "error": "test"});
    std::fs::write(leftovers.join("earlier.json"), note.to_string()).unwrap();
    let conf = w.conf(
        "n1",
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": id, "ifname": "eth0"}]}),
    );
    let out = w.plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
        &conf.to_string(),
    );
    assert!(out.success, "GC: {} {}", out.stdout, out.stderr);
    assert!(
        w.nat_rules(&c).contains("EMBEDNS_OUTPUT"),
        "{}",
        w.nat_rules(&c)
    );
    assert_eq!(w.resolve(&c, "c", "A").len(), 1);
    assert!(
        !leftovers.join("earlier.json").exists(),
        "the note is cleared"
    );
}

#[test]
fn the_redirects_remover_runs_in_its_own_session_from_the_root_dir_with_no_inherited_fds() {
    let w = World::new(
        "the_redirects_remover_runs_in_its_own_session_from_the_root_dir_with_no_inherited_fds",
    );
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("c").ok();
    // The netns stays after the DEL: the remover waits a second before removing the rules.
    w.del(&net, &c, &[]);
    let pattern = format!("remove-redirect-later {}", w.data_dir.display());
    let pid = wait_until(Duration::from_secs(5), "the remover", || {
        test_cni::pgrep(&pattern).first().copied()
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 2..]
        .split(' ')
        .collect();
    assert_eq!(
        fields.get(3),
        Some(&pid.to_string().as_str()),
        "its own session: {stat}"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|fd| fd.parse::<i32>().unwrap_or(0) > 2)
        .collect();
    assert!(fds.is_empty(), "inherited fds {fds:?}");
    removers_done(&w);
    w.wait_redirect_gone(&c, "the remover's removal");
}

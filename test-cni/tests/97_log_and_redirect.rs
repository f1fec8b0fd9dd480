//! Faults of the host around a running resolver: a log that would grow without bound, a
//! damaged index met by every query, a nat rule already in the container, iptables gone at
//! DEL; and a test that cannot run here must fail, not pass.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
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

//! What a resolver, or any process sharing its identity, controls is data to root, never a
//! path root follows: the resolver's log directory belongs to the resolvers' user, so links,
//! hard links and FIFOs planted there must not make the plugin or a starting resolver (still
//! root) hand a root-only file over, read it into an error, or hang.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use test_cni::{wait_until, Container, Network, World};

/// A root-only file (0600, root:root) holding `text`.
fn root_only(w: &World, name: &str, text: &str) -> PathBuf {
    let p = w.path(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `path` is still root:root 0600 and holds `text`.
fn untouched(path: &Path, text: &str) {
    let m = std::fs::metadata(path).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, 0, 0o600),
        "{}",
        path.display()
    );
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        text,
        "{}",
        path.display()
    );
}

/// `c` added to `n1` as `id`; its resolver then killed (as it may die, or be killed by a
/// process of its identity). Returns the sandbox's log directory.
fn dead_resolver(w: &World, n1: &Network, c: &Container, id: &str) -> PathBuf {
    w.adding(n1, c).name("c").id(id).ok();
    test_cni::kill_resolvers(&w.data_dir);
    wait_until(Duration::from_secs(5), "the resolver to die", || {
        w.resolver_pids().is_empty().then_some(())
    });
    w.paths().resolver_log_dir(id)
}

/// ADDs `c` (as `id`) to a second network, `net`, on eth1: with its recorded resolver dead,
/// a new one starts; with `net`'s resolver `/bin/false`, the start fails.
fn add_second(w: &World, net: &Network, c: &Container, id: &str) -> std::process::Output {
    (w.adding(net, c).name("c").id(id))
        .env(&[("CNI_IFNAME", "eth1")])
        .run()
}

/// Replaces `name` in `dir` by a symlink to `target`.
fn plant_link(dir: &Path, name: &str, target: &Path) {
    let _ = std::fs::remove_file(dir.join(name));
    std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
}

/// Replaces `name` in `dir` by a FIFO.
fn plant_fifo(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    p
}

/// Runs `add`; if it is still running after 20 s, a watchdog opens each of `fifos` (both
/// ends) and kills the world's resolvers, so that a plugin blocked on one finishes. Returns
/// its output and whether the watchdog had to act (the test then fails).
fn unless_hung(
    w: &World,
    fifos: &[PathBuf],
    add: impl FnOnce() -> std::process::Output,
) -> (std::process::Output, bool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    let released = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let ended = test_cni::wait::poll_until(Duration::from_secs(20), || {
                done.load(Ordering::SeqCst).then_some(())
            });
            if ended.is_none() {
                released.store(true, Ordering::SeqCst);
                let _held: Vec<_> = (fifos.iter())
                    .filter_map(|f| {
                        std::fs::OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(f)
                            .ok()
                    })
                    .collect();
                test_cni::kill_resolvers(&w.data_dir);
            }
        });
        let out = add();
        done.store(true, Ordering::SeqCst);
        out
    });
    (out, released.load(Ordering::SeqCst))
}

#[test]
fn a_starting_resolver_follows_no_link_planted_in_its_log_dir() {
    let w = World::new("a_starting_resolver_follows_no_link_planted_in_its_log_dir");
    let (n1, n2) = (w.network("n1", json!({})), w.network("n2", json!({})));
    let c = w.container("c");
    let id = format!("{}-links", w.id);
    let log = dead_resolver(&w, &n1, &c, &id);
    let (a, b) = (
        root_only(&w, "secret-a", "a\n"),
        root_only(&w, "secret-b", "b\n"),
    );
    plant_link(&log, "resolver.log", &a);
    plant_link(&log, "resolver.log.1", &b);
    // An ADD of a second network while the recorded resolver is dead starts a new one (as root).
    let out = add_second(&w, &n2, &c, &id);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    untouched(&a, "a\n");
    untouched(&b, "b\n");
    assert_eq!(w.resolve(&c, "c", "A").len(), 1, "the new resolver answers");
    // It logs to files of its own in place of the links.
    let m = std::fs::symlink_metadata(log.join("resolver.log")).unwrap();
    assert!(m.file_type().is_file(), "{m:?}");
}

#[test]
fn a_starting_resolver_does_not_hang_on_a_fifo_planted_in_its_log_dir() {
    let w = World::new("a_starting_resolver_does_not_hang_on_a_fifo_planted_in_its_log_dir");
    let (n1, n2) = (w.network("n1", json!({})), w.network("n2", json!({})));
    let c = w.container("c");
    let id = format!("{}-fifo", w.id);
    let log = dead_resolver(&w, &n1, &c, &id);
    let fifos = [
        plant_fifo(&log, "resolver.log"),
        plant_fifo(&log, "resolver.log.1"),
    ];
    let (out, hung) = unless_hung(&w, &fifos, || add_second(&w, &n2, &c, &id));
    assert!(!hung, "ADD hung on the FIFOs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w.resolve(&c, "c", "A").len(), 1);
}

#[test]
fn a_failed_start_reads_no_link_into_its_error() {
    let w = World::new("a_failed_start_reads_no_link_into_its_error");
    let n1 = w.network("n1", json!({}));
    // A second network whose resolver dies at once: ADD fails and quotes the resolver's log.
    let broken = w.network("n2", json!({"resolverPath": "/bin/false"}));
    let c = w.container("c");
    let id = format!("{}-tail", w.id);
    let log = dead_resolver(&w, &n1, &c, &id);
    let secret = root_only(&w, "secret", "root-only-secret\n");
    plant_link(&log, "resolver.log", &secret);
    let out = add_second(&w, &broken, &c, &id);
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("root-only-secret"), "{said}");
    untouched(&secret, "root-only-secret\n");
}

#[test]
fn a_failed_start_does_not_hang_on_a_fifo_as_its_log() {
    let w = World::new("a_failed_start_does_not_hang_on_a_fifo_as_its_log");
    let n1 = w.network("n1", json!({}));
    let broken = w.network("n2", json!({"resolverPath": "/bin/false"}));
    let c = w.container("c");
    let id = format!("{}-tailfifo", w.id);
    let log = dead_resolver(&w, &n1, &c, &id);
    let fifos = [plant_fifo(&log, "resolver.log")];
    let (out, hung) = unless_hung(&w, &fifos, || add_second(&w, &broken, &c, &id));
    assert!(!out.status.success());
    assert!(!hung, "the plugin hung on the FIFO");
}

#[test]
fn preparing_the_state_dir_changes_nothing_reached_through_the_log_dir() {
    let w = World::new("preparing_the_state_dir_changes_nothing_reached_through_the_log_dir");
    let n1 = w.network("n1", json!({}));
    let c = w.container("c");
    let id = format!("{}-prep", w.id);
    let log = dead_resolver(&w, &n1, &c, &id);
    // A hard link to a root-only file (possible for the resolvers' user where
    // fs.protected_hardlinks is 0) and a symlink to another.
    let (a, b) = (
        root_only(&w, "secret-a", "a\n"),
        root_only(&w, "secret-b", "b\n"),
    );
    std::fs::hard_link(&a, log.join("planted")).unwrap();
    plant_link(&log, "resolver.log.1", &b);
    // The state dir as an earlier version left it (root:root 0700): the next ADD converts it.
    nix::unistd::chown(&w.data_dir, None, Some(nix::unistd::Gid::from_raw(0))).unwrap();
    std::fs::set_permissions(&w.data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let d = w.container("d");
    w.adding(&n1, &d).name("d").ok();
    let m = std::fs::metadata(&w.data_dir).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o2750, "the state dir was converted");
    untouched(&a, "a\n");
    untouched(&b, "b\n");
}

/// Runs `cmd` as nobody/nogroup (65534), as other host software runs.
fn as_nobody(cmd: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(cmd)
        .output()
        .unwrap()
}

#[test]
fn a_nobody_process_cannot_read_the_store_signal_a_resolver_or_write_its_log() {
    let w = World::new("a_nobody_process_cannot_read_the_store_signal_a_resolver_or_write_its_log");
    let n1 = w.network("n1", json!({}));
    let c = w.container("c");
    let id = format!("{}-nobody", w.id);
    w.adding(&n1, &c).name("c").id(&id).ok();
    let pid = w.resolver_pid(&c);
    // The resolvers' identity is theirs alone.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |k: &str| {
        test_cni::line_starting(&status, k)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_ne!(ids("Uid:"), "65534", "{status}");
    assert_ne!(ids("Gid:"), "65534", "{status}");
    let record = w.data_dir.join("networks/n1").join(&w.records("n1")[0]);
    let log = w.paths().resolver_log_dir(&id);
    let tries = [
        vec!["cat".to_string(), record.display().to_string()],
        vec!["kill".to_string(), "-0".to_string(), pid.to_string()],
        vec![
            "ln".to_string(),
            "-s".to_string(),
            "/etc/shadow".to_string(),
            log.join("x").display().to_string(),
        ],
    ];
    for t in &tries {
        let args: Vec<&str> = t.iter().map(String::as_str).collect();
        let out = as_nobody(&args);
        assert!(!out.status.success(), "as nobody, {t:?} worked");
    }
}

#[test]
fn a_store_an_earlier_version_made_for_nobody_keeps_its_group_through_an_upgrade() {
    use std::os::unix::fs::MetadataExt;
    let w =
        World::new("a_store_an_earlier_version_made_for_nobody_keeps_its_group_through_an_upgrade");
    let n1 = w.network("n1", json!({}));
    // The state directory as the earlier default left it: root:nogroup 2750.
    std::fs::create_dir_all(&w.data_dir).unwrap();
    nix::unistd::chown(
        &w.data_dir,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    std::fs::set_permissions(&w.data_dir, std::fs::Permissions::from_mode(0o2750)).unwrap();
    let c = w.container("c");
    w.adding(&n1, &c).name("c").ok();
    assert_eq!(
        std::fs::metadata(&w.data_dir).unwrap().gid(),
        65534,
        "the group stays"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.resolver_pid(&c))).unwrap();
    let ids = |k: &str| {
        test_cni::line_starting(&status, k)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!((ids("Uid:"), ids("Gid:")), ("65530".into(), "65534".into()));
    assert_eq!(w.resolve(&c, "c", "A").len(), 1);
}

#[test]
fn check_reads_a_resolv_conf_the_container_may_write_bounded_and_never_blocks() {
    let w =
        World::new("check_reads_a_resolv_conf_the_container_may_write_bounded_and_never_blocks");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("c").ok();
    // etcNetns: the file `ip netns exec` shows the container as its /etc/resolv.conf.
    let file = Path::new("/etc/netns").join(&c.netns).join("resolv.conf");
    assert!(w.cnitool("check", &net.name, &c, &[]).status.success());
    // Grown past any resolv.conf (still naming 127.0.0.11): read up to a bound, then refused.
    std::fs::write(&file, "nameserver 127.0.0.11\n".repeat(10_000)).unwrap();
    let out = w.cnitool("check", &net.name, &c, &[]);
    let err =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("over 65536 bytes"),
        "{err}"
    );
    // Replaced by a FIFO: CHECK fails at once instead of waiting for a writer.
    let fifo = plant_fifo(file.parent().unwrap(), "resolv.conf");
    let (out, hung) = unless_hung(&w, &[fifo], || w.cnitool("check", &net.name, &c, &[]));
    assert!(!hung, "CHECK blocked on a FIFO");
    let err =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a regular file"),
        "{err}"
    );
}

#[test]
fn the_plugins_log_file_follows_no_link() {
    let w = World::new("the_plugins_log_file_follows_no_link");
    let target = root_only(&w, "target", "root's\n");
    let log = w.path("plugin.log");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    let net = w.network("n1", json!({"logFile": log, "logLevel": "debug"}));
    let c = w.container("c");
    w.adding(&net, &c).name("c").ok();
    untouched(&target, "root's\n");
    // A log file of its own is made 0600.
    std::fs::remove_file(&log).unwrap();
    w.del(&net, &c, &[]);
    let m = std::fs::metadata(&log).unwrap();
    assert!(m.is_file() && m.len() > 0);
    assert_eq!(m.mode() & 0o777, 0o600);
}

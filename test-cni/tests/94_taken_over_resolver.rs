//! What a resolver taken over by an attacker (or anything holding its identity) can still do
//! to the root plugin and to its host, and what it cannot: each test plays such a resolver.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use test_cni::calls::Direct;
use test_cni::World;

/// How a fake control socket answers.
#[derive(Clone, Copy)]
enum Reply {
    /// One byte a second, never a line end.
    Trickle,
    /// Bytes as fast as the plugin takes them, never a line end.
    Flood,
}

/// Puts a fake control server in place of `id`'s resolver's socket (the resolver itself stays
/// alive, so the plugin talks to its recorded, live resolver), ADDs the container to a second
/// network (which asks the running resolver to reload), and returns (the ADD's output,
/// whether a watchdog had to stop the fake after 30 s, the bytes the fake sent).
fn add_against(w: &World, reply: Reply) -> (std::process::Output, bool, u64) {
    let (n1, n2) = (w.network("n1", json!({})), w.network("n2", json!({})));
    let c = w.container("c");
    let id = format!("{}-ctl", w.id);
    w.adding(&n1, &c).name("c").id(&id).ok();
    let sock = w.paths().control_socket(&id);
    std::fs::remove_file(&sock).unwrap();
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (stop, sent, hung) = (
        AtomicBool::new(false),
        AtomicU64::new(0),
        AtomicBool::new(false),
    );
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) {
                if std::time::Instant::now() > deadline {
                    hung.store(true, Ordering::SeqCst);
                    return;
                }
                let Ok((mut conn, _)) = listener.accept() else {
                    test_cni::wait::poll_until(Duration::from_millis(20), || None::<()>);
                    continue;
                };
                let mut request = [0u8; 512];
                let _ = conn.read(&mut request);
                conn.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let chunk = vec![b'x'; 64 * 1024];
                while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    let n = match reply {
                        Reply::Trickle => conn.write(b"x"),
                        Reply::Flood => conn.write(&chunk),
                    };
                    match n {
                        Ok(n) => sent.fetch_add(n as u64, Ordering::SeqCst),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => break, // the plugin closed its end
                    };
                    if let Reply::Trickle = reply {
                        test_cni::wait::poll_until(Duration::from_secs(1), || {
                            stop.load(Ordering::SeqCst).then_some(())
                        });
                    }
                }
            }
        });
        let out = w
            .adding(&n2, &c)
            .name("c")
            .id(&id)
            .env(&[("CNI_IFNAME", "eth1")])
            .run();
        stop.store(true, Ordering::SeqCst);
        out
    });
    (
        out,
        hung.load(Ordering::SeqCst),
        sent.load(Ordering::SeqCst),
    )
}

#[test]
fn a_resolver_trickling_its_control_reply_cannot_hold_the_plugin() {
    let w = World::new("a_resolver_trickling_its_control_reply_cannot_hold_the_plugin");
    let (out, hung, sent) = add_against(&w, Reply::Trickle);
    assert!(
        !hung,
        "the plugin was still waiting after 30 s ({sent} bytes trickled)"
    );
    assert!(
        !out.status.success(),
        "a resolver that does not reply fails the ADD"
    );
}

#[test]
fn a_resolver_flooding_its_control_reply_cannot_exhaust_the_plugin() {
    let w = World::new("a_resolver_flooding_its_control_reply_cannot_exhaust_the_plugin");
    let (out, hung, sent) = add_against(&w, Reply::Flood);
    assert!(
        !hung,
        "the plugin was still reading after 30 s ({sent} bytes)"
    );
    assert!(!out.status.success());
    assert!(sent < 16 << 20, "the plugin took {sent} bytes of one reply");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("without a line end"), "{said}");
}

/// The inodes of the network namespaces `pid`'s threads are in.
fn thread_netns(pid: i32) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::metadata(t.path().join("ns/net")).ok())
        .map(|m| m.ino())
        .collect()
}

#[test]
fn a_resolver_with_no_host_upstream_has_no_presence_in_the_host_netns() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new("a_resolver_with_no_host_upstream_has_no_presence_in_the_host_netns");
    let host_ns = std::fs::metadata(format!("/run/netns/{}", w.host))
        .unwrap()
        .ino();
    let up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    // An internal network: no thread of its resolver in the host's netns.
    let internal = w.network("n1", json!({"internal": true}));
    let c = w.container("c");
    w.adding(&internal, &c).name("c").ok();
    let pid = w.resolver_pid(&c);
    assert!(
        !thread_netns(pid).contains(&host_ns),
        "{:?}",
        thread_netns(pid)
    );
    // A network asking the host's upstreams joins: its resolver is replaced by one that can
    // reach the host's loopback nameserver (R18).
    let open = w.network("n2", json!({}));
    w.adding(&open, &c)
        .name("c")
        .env(&[("CNI_IFNAME", "eth1")])
        .ok();
    let pid = w.resolver_pid(&c);
    assert!(thread_netns(pid).contains(&host_ns));
    assert_eq!(w.resolve(&c, "a.up.test", "A"), vec!["10.9.9.1"]);
    assert_eq!(up.queries(), 1);
    // A repeated ADD (a runtime retrying) keeps a resolver that has its host-netns thread.
    let d = w.container("d");
    let d_id = format!("{}-d", w.id);
    let d_ip = test_cni::ip_of(&w.adding(&open, &d).name("d").id(&d_id).ok());
    let pid = w.resolver_pid(&d);
    let again = w.direct(
        "ADD",
        Direct {
            net: "n2",
            container: &d,
            id: &d_id,
            name: "d",
            ip: &d_ip,
            conf: json!({}),
        },
    );
    assert!(again.success, "{again:?}");
    assert_eq!(w.resolver_pid(&d), pid);
}

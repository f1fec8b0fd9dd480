//! What the multi-host tests share (`99_multihost.rs`, `99_multihost_trust.rs`): a test on
//! both etcd versions, two hosts' first containers, a definite "unknown name", etcd reads and
//! writes of a test's own.

#![allow(dead_code)] // each test binary uses its own part

use std::time::Duration;

use test_cni::multihost::Cluster;
use test_cni::{ip_of, Container, Network, World};

/// `on_both!(test)`: `test(Etcd)` as two tests, `test::etcd_3_4` (Debian 12's) and
/// `test::etcd_3_5` (Debian's newer suite).
#[macro_export]
macro_rules! on_both {
    ($test:ident) => {
        mod $test {
            use test_cni::multihost::Etcd;
            #[test]
            fn etcd_3_4() {
                super::$test(Etcd::Debian)
            }
            #[test]
            fn etcd_3_5() {
                super::$test(Etcd::V3_5)
            }
        }
    };
}

/// Whether `name` is unknown on `c`'s networks: a definite answer (R16: NOERROR, empty), not
/// a query that got no reply.
pub fn absent(w: &World, c: &Container, name: &str) -> bool {
    let d = w.dig(c, &[name, "A"]);
    assert!(!d.status.is_empty(), "no reply for {name}: {}", d.raw);
    d.status == "NOERROR" && d.answers.is_empty()
}

/// The bound docs/multihost.md states for a dead or cut-off host's names: the lease TTL + 4 s (etcd
/// may first elect a new leader, which extends every lease).
pub const EXPIRY_SLACK_SECS: u64 = 4;

/// "web" on host1 on `n1` and "cli" on host2 on `n2`, added in that order.
pub struct WebAndCli {
    pub web: Container,
    pub cli: Container,
    pub web_ip: String,
    pub cli_ip: String,
}

pub fn web_and_cli(c: &Cluster, n1: &Network, n2: &Network) -> WebAndCli {
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let (web, cli) = (h1.container("web"), h2.container("cli"));
    let web_ip = ip_of(&h1.adding(n1, &web).name("web").ok());
    let cli_ip = ip_of(&h2.adding(n2, &cli).name("cli").ok());
    WebAndCli {
        web,
        cli,
        web_ip,
        cli_ip,
    }
}

/// How long a change on one host may take to show on another in these tests (the bench
/// measures the real figure; this only bounds a wait).
pub const SPREAD: Duration = Duration::from_secs(3);

/// `etcdctl get --print-value-only KEY` against host `i`'s member.
pub fn etcd_value(c: &Cluster, i: usize, key: &str) -> String {
    let out = c.etcdctl(i, &["get", "--print-value-only", key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// `etcdctl put KEY VALUE` (or `del KEY` when `value` is None) on host `i`'s member.
pub fn etcd_write(c: &Cluster, i: usize, key: &str, value: Option<&str>) {
    let out = match value {
        Some(v) => c.etcdctl(i, &["put", key, v]),
        None => c.etcdctl(i, &["del", key]),
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

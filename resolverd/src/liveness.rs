//! Ending a resolver whose container is gone without a DEL (a runtime that crashed, `ip netns
//! del`, a runtime restarted without its state, an ADD killed after starting it): a resolver
//! holds its netns open, so nothing else would ever end it, and the namespace (with its veth
//! on the bridge) would live on.
//!
//! Every [`CHECK_EVERY`] the resolver asks: does its netns path still name the namespace it
//! serves, and does its sandbox still exist, name that path and record this process? If not,
//! it exits. An idle resolver is woken for this once per period and for nothing else; the
//! cost is two `stat`s, and a read of the small sandbox file only when it was rewritten.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use embedns_conf::paths::StatePaths;
use embedns_conf::sandbox;

/// How often the check runs, unless `EMBEDNS_RESOLVER_CHECK_SECS` says otherwise (tests set
/// it to 1 s to be quick, or high to count an idle resolver's other wake-ups). A gone
/// container's resolver exits within one period of its netns or sandbox disappearing. 30 s
/// keeps 1000 idle resolvers under 50 ms of CPU per 10 s (`make bench`, scale phase).
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// What the resolver serves, as it was when it started.
pub struct Served {
    pub paths: StatePaths,
    pub container_id: String,
    pub netns: String,
    /// The inode of the namespace it entered.
    pub netns_inode: u64,
    /// The supervisor that forked it (its parent at the start), which the sandbox records in
    /// its place.
    pub supervisor: u32,
}

impl Served {
    /// The inode of the calling thread's netns.
    pub fn current_netns_inode() -> std::io::Result<u64> {
        std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino())
    }

    /// Why the container is gone, or `None` while it is not. Transient errors (a sandbox
    /// being rewritten, a permission error) never count as gone. `seen` is the sandbox
    /// file's device and inode at the last check: a file not rewritten since (every save renames a
    /// new file into place) is not read again.
    pub fn gone(&self, seen: &mut Option<(u64, u64)>) -> Option<String> {
        match std::fs::metadata(&self.netns) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!("netns {} was deleted", self.netns))
            }
            Ok(m) if m.ino() != self.netns_inode => {
                return Some(format!("netns {} now names another namespace", self.netns))
            }
            _ => {}
        }
        let file = self.paths.sandbox_file(&self.container_id);
        let now = std::fs::metadata(&file).ok().map(|m| (m.dev(), m.ino()));
        if now.is_some() && now == *seen {
            return None;
        }
        let verdict = match sandbox::load(&self.paths, &self.container_id) {
            Ok(None) => Some("the sandbox was removed".into()),
            Ok(Some(sb)) if sb.netns != self.netns => {
                Some(format!("the sandbox now serves {}", sb.netns))
            }
            Ok(Some(sb)) => match sb.resolver {
                Some(r) if [std::process::id(), self.supervisor].contains(&(r.pid as u32)) => None,
                Some(r) => Some(format!(
                    "the sandbox records another resolver (pid {})",
                    r.pid
                )),
                None => Some("the sandbox records no resolver".into()),
            },
            Err(_) => None,
        };
        if verdict.is_none() {
            *seen = now;
        }
        verdict
    }

    /// Resolves once the container is gone, checking every `every`.
    pub async fn until_gone(&self, every: Duration) -> String {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = None;
        loop {
            tick.tick().await;
            if let Some(why) = self.gone(&mut seen) {
                return why;
            }
        }
    }
}

/// The check period: [`CHECK_EVERY`], or `EMBEDNS_RESOLVER_CHECK_SECS`.
pub fn period() -> Duration {
    std::env::var("EMBEDNS_RESOLVER_CHECK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(CHECK_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedns_conf::sandbox::{ResolverInfo, Sandbox};

    #[test]
    fn a_resolver_whose_supervisor_the_sandbox_records_is_not_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(tmp.path());
        let netns = "/proc/self/ns/net".to_string();
        let served = |supervisor| Served {
            paths: paths.clone(),
            container_id: "c1".into(),
            netns: netns.clone(),
            netns_inode: Served::current_netns_inode().unwrap(),
            supervisor,
        };
        let lock = sandbox::lock(&paths, "c1").unwrap();
        let recorded = |pid| Sandbox {
            container_id: "c1".into(),
            netns: netns.clone(),
            resolver: Some(ResolverInfo {
                pid,
                start_time: 1,
                udp_port: 1,
                tcp_port: 2,
                udp6_port: None,
                tcp6_port: None,
            }),
            ..Sandbox::default()
        };
        // The sandbox records the supervisor, as the plugin does: the forked resolver serves.
        sandbox::save(&paths, &lock, &recorded(4242)).unwrap();
        assert_eq!(served(4242).gone(&mut None), None);
        // Another supervisor recorded in its place: gone.
        assert!(served(1)
            .gone(&mut None)
            .unwrap()
            .contains("another resolver"));
        // A resolver of an earlier release, recorded itself.
        sandbox::save(&paths, &lock, &recorded(std::process::id() as i32)).unwrap();
        assert_eq!(served(1).gone(&mut None), None);
    }
}

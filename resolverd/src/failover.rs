//! R19's order of upstreams, pure: they are asked in their order, but one that did not
//! answer [`DEMOTE_AFTER`] queries in a row (timeout, unreachable, unusable reply) is tried
//! last for the next [`PENALTY`] (★ over Docker). One lost datagram, or a SERVFAIL for one
//! broken domain (an answer: the upstream is alive), does not move it, so split-horizon
//! setups keep asking their first resolver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::state::Upstream;

/// How long a demoted upstream stays at the end of the list.
pub const PENALTY: Duration = Duration::from_secs(30);
/// Consecutive queries an upstream must have failed to answer before it is demoted.
pub const DEMOTE_AFTER: u32 = 3;

/// What is remembered of an upstream that failed lately.
#[derive(Debug, Default, Clone, Copy)]
struct Health {
    /// Queries in a row it did not answer at all.
    silent: u32,
    /// When it was demoted, if it is.
    demoted_at: Option<Instant>,
    /// Whether its demotion was said (once until it answers again).
    warned: bool,
}

/// The upstreams' recent failures.
#[derive(Debug, Default)]
pub struct Failover {
    health: HashMap<SocketAddr, Health>,
}

impl Failover {
    /// `addr` answered (whatever it said): it is alive, and its failures are forgotten.
    pub fn answered(&mut self, addr: SocketAddr) {
        self.health.remove(&addr);
    }

    /// `addr` did not answer a query at `now`. `true` when that demotes it and it is the
    /// first demotion since it last answered: the one time to say so.
    pub fn silent(&mut self, addr: SocketAddr, now: Instant) -> bool {
        let h = self.health.entry(addr).or_default();
        h.silent += 1;
        if h.silent < DEMOTE_AFTER {
            return false;
        }
        h.demoted_at = Some(now);
        !std::mem::replace(&mut h.warned, true)
    }

    /// `list` in the order to ask them at `now`: those demoted in the last [`PENALTY`] moved
    /// to the end, each part in its configured order.
    pub fn ordered(&self, list: &[Upstream], now: Instant) -> Vec<Upstream> {
        let recent = |u: &Upstream| {
            (self.health.get(&u.addr))
                .and_then(|h| h.demoted_at)
                .is_some_and(|t| now.saturating_duration_since(t) < PENALTY)
        };
        let mut out: Vec<Upstream> = list.iter().filter(|u| !recent(u)).copied().collect();
        out.extend(list.iter().filter(|u| recent(u)).copied());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups() -> Vec<Upstream> {
        ["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"]
            .iter()
            .map(|a| Upstream {
                addr: a.parse().unwrap(),
                from_host: false,
            })
            .collect()
    }

    fn addrs(list: &[Upstream]) -> Vec<String> {
        list.iter().map(|u| u.addr.to_string()).collect()
    }

    #[test]
    fn r19_an_upstream_silent_three_times_in_a_row_is_asked_last_for_30_s() {
        let (mut f, list, t0) = (Failover::default(), ups(), Instant::now());
        let first = list[0].addr;
        assert!(!f.silent(first, t0));
        assert!(!f.silent(first, t0));
        assert_eq!(addrs(&f.ordered(&list, t0)), addrs(&list), "not yet");
        assert!(f.silent(first, t0), "the third demotes it, said once");
        let order = f.ordered(&list, t0 + Duration::from_secs(29));
        assert_eq!(addrs(&order), ["10.0.0.2:53", "10.0.0.3:53", "10.0.0.1:53"]);
        assert_eq!(addrs(&f.ordered(&list, t0 + PENALTY)), addrs(&list));
    }

    #[test]
    fn r19_an_answer_forgets_the_failures_and_a_new_demotion_is_said_again() {
        let (mut f, list, t0) = (Failover::default(), ups(), Instant::now());
        let first = list[0].addr;
        f.silent(first, t0);
        f.silent(first, t0);
        f.answered(first);
        f.silent(first, t0);
        f.silent(first, t0);
        assert_eq!(
            addrs(&f.ordered(&list, t0)),
            addrs(&list),
            "one lost query in between"
        );
        assert!(f.silent(first, t0));
        assert!(!f.silent(first, t0), "said once while it stays silent");
        f.answered(first);
        assert_eq!(
            addrs(&f.ordered(&list, t0)),
            addrs(&list),
            "back in its place"
        );
        for _ in 0..2 {
            assert!(!f.silent(first, t0));
        }
        assert!(f.silent(first, t0), "a new demotion is said again");
    }

    #[test]
    fn r19_several_demoted_upstreams_keep_their_order_at_the_end() {
        let (mut f, list, t0) = (Failover::default(), ups(), Instant::now());
        for addr in [list[1].addr, list[0].addr] {
            for _ in 0..DEMOTE_AFTER {
                f.silent(addr, t0);
            }
        }
        let order = f.ordered(&list, t0);
        assert_eq!(addrs(&order), ["10.0.0.3:53", "10.0.0.1:53", "10.0.0.2:53"]);
    }
}

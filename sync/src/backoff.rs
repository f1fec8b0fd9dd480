//! The pause between two sessions with etcd, pure: 100 ms doubling to 2 s while sessions
//! fail, back to 100 ms after one that got in step, and 100 ms without doubling while the
//! cluster elects a leader (a member without one refuses requests; a member whose leader died
//! ends a request with [`EtcdError::LeaderChanged`] once it follows a new one), for at most
//! [`ELECTION_WINDOW`]: an election takes etcd's election timeout (1 s by default) and a
//! round or two more, and a backoff grown on its errors would leave the host asleep when the
//! new leader is there. Each pause is jittered (half to the whole of it), so the hosts of a
//! network do not all come back in step after an etcd hiccup.

use std::time::{Duration, Instant};

use crate::etcd::EtcdError;

pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long sessions that meet an election are retried after the shortest pause.
pub(crate) const ELECTION_WINDOW: Duration = Duration::from_secs(5);

/// Whether a session that ended with `e` met an election: its member had no leader, or got a
/// new one.
pub(crate) fn election(e: &anyhow::Error) -> bool {
    matches!(
        EtcdError::of(e),
        Some(EtcdError::LeaderChanged(_) | EtcdError::NoLeader(_))
    )
}

/// What comes after a failed session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    /// The pause before the next session, before jitter.
    pub pause: Duration,
    /// The next session asks the same member (it follows a new leader), not the next one.
    pub same_endpoint: bool,
    /// Sessions failed in a row, this one included.
    pub failed_in_a_row: u32,
}

/// The backoff's state across sessions.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    failed_in_a_row: u32,
    electing_since: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: MIN_BACKOFF,
            failed_in_a_row: 0,
            electing_since: None,
        }
    }
}

impl Backoff {
    /// A session ended with `e` at `now`; `in_step` if it had got in step with etcd first.
    pub(crate) fn failed(&mut self, e: &anyhow::Error, in_step: bool, now: Instant) -> Retry {
        if in_step {
            *self = Backoff::default();
        }
        self.failed_in_a_row += 1;
        let electing = election(e) && {
            let since = *self.electing_since.get_or_insert(now);
            now.duration_since(since) < ELECTION_WINDOW
        };
        if !election(e) {
            self.electing_since = None;
        }
        let pause = if electing { MIN_BACKOFF } else { self.next };
        if !electing {
            self.next = (self.next * 2).min(MAX_BACKOFF);
        }
        Retry {
            pause,
            same_endpoint: electing
                && matches!(EtcdError::of(e), Some(EtcdError::LeaderChanged(_))),
            failed_in_a_row: self.failed_in_a_row,
        }
    }
}

/// A pause of `pause` scaled by a random factor in [0.5, 1].
pub(crate) fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> anyhow::Error {
        anyhow::anyhow!("tcp connect error: connection refused")
    }

    fn no_leader() -> anyhow::Error {
        EtcdError::NoLeader("status: Unavailable, message: \"etcdserver: no leader\"".into()).into()
    }

    #[test]
    fn failures_double_the_pause_up_to_two_seconds_and_a_session_in_step_resets_it() {
        let mut b = Backoff::default();
        let now = Instant::now();
        let pauses: Vec<u128> = (0..7)
            .map(|_| b.failed(&refused(), false, now).pause.as_millis())
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 2000, 2000]);
        let after_in_step = b.failed(&refused(), true, now);
        assert_eq!(after_in_step.pause, MIN_BACKOFF);
        assert_eq!(after_in_step.failed_in_a_row, 1);
    }

    #[test]
    fn an_election_is_retried_after_the_shortest_pause_for_its_window_only() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        for i in 0..20 {
            let at = t0 + Duration::from_millis(200 * i);
            let r = b.failed(&no_leader(), false, at);
            assert_eq!(r.pause, MIN_BACKOFF, "try {i}");
            assert!(!r.same_endpoint);
        }
        // Past the window the errors back off as any others (a member cut off for good).
        let late = b.failed(&no_leader(), false, t0 + ELECTION_WINDOW);
        assert_eq!(late.pause, MIN_BACKOFF);
        let later = b.failed(&no_leader(), false, t0 + ELECTION_WINDOW);
        assert_eq!(later.pause, MIN_BACKOFF * 2);
        assert_eq!(later.failed_in_a_row, 22);
    }

    #[test]
    fn a_new_leader_is_asked_again_on_the_same_member_at_once() {
        let mut b = Backoff::default();
        let now = Instant::now();
        b.failed(&refused(), false, now);
        b.failed(&refused(), false, now);
        let e = anyhow::Error::from(EtcdError::LeaderChanged(7)).context("taking the claim");
        assert!(election(&e));
        let r = b.failed(&e, false, now);
        assert_eq!(r.pause, MIN_BACKOFF);
        assert!(r.same_endpoint);
        // The election's errors did not grow the backoff of other failures.
        assert_eq!(b.failed(&refused(), false, now).pause, MIN_BACKOFF * 4);
    }

    #[test]
    fn a_new_election_after_a_session_in_step_has_a_window_of_its_own() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        b.failed(&no_leader(), false, t0);
        let much_later = t0 + ELECTION_WINDOW * 3;
        assert_eq!(b.failed(&no_leader(), true, much_later).pause, MIN_BACKOFF);
        assert_eq!(
            b.failed(&no_leader(), false, much_later + Duration::from_secs(1))
                .pause,
            MIN_BACKOFF
        );
    }

    #[test]
    fn the_pause_is_jittered_between_half_and_whole() {
        let b = Duration::from_secs(2);
        let pauses: Vec<Duration> = (0..200).map(|_| jittered(b)).collect();
        assert!(pauses.iter().all(|p| *p >= b / 2 && *p <= b), "{pauses:?}");
        let (min, max) = (pauses.iter().min().unwrap(), pauses.iter().max().unwrap());
        assert!(
            *max - *min > Duration::from_millis(200),
            "spread {min:?}..{max:?}"
        );
    }
}

//! The resolver's log: a file rotated by size while the resolver runs, and a limiter for
//! messages that a query can cause, so that no client and no outage can grow the log without
//! bound on the tmpfs that also holds the store (a full `/run` fails every ADD).
//!
//! The rotating file itself is `embedns_conf::logfile`'s, shared with the sync processes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use embedns_conf::logfile::RotatingLog;

/// Lets a message through at most once per period; counts the ones held back.
pub struct Limiter {
    every: Duration,
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl Limiter {
    /// At most one message per `every`.
    pub const fn new(every: Duration) -> Limiter {
        Limiter {
            every,
            last: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a message may be logged now (`n` were held back since the last one).
    pub fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap();
        if last.is_none_or(|t| t.elapsed() >= self.every) {
            *last = Some(Instant::now());
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_holds_back_and_counts() {
        let l = Limiter::new(Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        let l = Limiter::new(Duration::ZERO);
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
    }
}

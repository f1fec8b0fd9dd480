//! Waiting on a condition with a deadline (tests never sleep to synchronise).

use std::time::{Duration, Instant};

/// Polls `cond` until it returns `Some`, or panics with `what` when `timeout` passes.
pub fn wait_until<T>(timeout: Duration, what: &str, cond: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, cond)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `cond` until it returns `Some`, or `None` when `timeout` passes.
pub fn poll_until<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(pause.min(deadline - now)); // bounded by the deadline
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

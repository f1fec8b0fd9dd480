//! How much `make bench` measures: `BENCH_QUICK=1` (`make bench-quick`) for fewer and
//! shorter runs, `BENCH_SCALE` for the number of containers of the scale phases.

/// The run's sizes, read once from the environment.
pub struct Settings {
    pub quick: bool,
    pub scale: usize,
    /// dnsperf's -l, seconds.
    pub perf_secs: u64,
    /// dnsperf runs per server, interleaved; the median counts.
    pub perf_rounds: usize,
    /// ADD/DEL repetitions.
    pub runs: usize,
}

impl Settings {
    pub fn from_env() -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
        Settings {
            quick,
            scale: std::env::var("BENCH_SCALE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if quick { 150 } else { 1000 }),
            perf_secs: if quick { 3 } else { 8 },
            perf_rounds: if quick { 1 } else { 3 },
            runs: if quick { 20 } else { 50 },
        }
    }
}

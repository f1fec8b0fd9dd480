//! Logs go to stderr (the runtime shows them with a failure) or to the conf's `logFile`;
//! stdout carries only the result.

use std::sync::Mutex;

use embedns_conf::netconf::NetConf;
use tracing_subscriber::EnvFilter;

/// Logs to the conf's `logFile` or stderr at its `logLevel` (default warn).
pub fn init(conf: &NetConf) {
    let level = conf.log_level.clone().unwrap_or_else(|| "warn".into());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // Not through a link planted at its path, never a FIFO, a new one 0600 (as the
    // resolvers' logs are opened); one that cannot be opened so leaves the log on stderr.
    let file =
        (conf.log_file.as_ref()).and_then(|p| embedns_conf::fsutil::open_append_nofollow(p).ok());
    let _ = match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(Mutex::new(f))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

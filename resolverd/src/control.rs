//! The plugin's channel to a running resolver: a root-only unix socket in the sandbox
//! directory, one JSON request per line, one JSON reply per line (the types are
//! `embedns_conf::protocol::control`'s, shared with the plugin).

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use embedns_conf::protocol::control::{
    Ack, CacheUsage, Counters, NetworkCount, ReloadReply, Request, StatusReply, UpstreamStatus,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::timeout;

use embedns_conf::paths::StatePaths;

use crate::state::Resolver;

/// Binds the control socket in the sandbox directory, root only.
pub fn bind(st: &Resolver) -> anyhow::Result<UnixListener> {
    let path = st.paths.control_socket(&st.container_id);
    let _ = std::fs::remove_file(&path);
    let dir = std::fs::File::open(st.paths.sandbox(&st.container_id))?;
    let listener = UnixListener::bind(StatePaths::control_socket_via(&dir))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the plugin's requests, one session each, 5 s at most.
pub async fn serve(listener: UnixListener, st: Arc<Resolver>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let st = st.clone();
        tokio::spawn(async move {
            let _ = timeout(Duration::from_secs(5), session(stream, &st)).await;
        });
    }
}

async fn session(stream: UnixStream, st: &Resolver) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Reload) => match st.reload() {
            Ok(networks) => to_line(&ReloadReply { ok: true, networks }),
            Err(e) => to_line(&Ack::refused(format!("{e:#}"))),
        },
        Ok(Request::Status) => to_line(&status(st)),
        Err(e) => to_line(&Ack::refused(format!(
            "unknown request {:?}: {e}",
            line.trim()
        ))),
    };
    w.write_all(format!("{reply}\n").as_bytes()).await
}

fn to_line(reply: &impl serde::Serialize) -> String {
    serde_json::to_string(reply).expect("a reply always serializes")
}

fn status(st: &Resolver) -> StatusReply {
    let c = &st.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let forwarded = load(&c.forwarded);
    let answered_upstream = forwarded.saturating_sub(load(&c.failed));
    let (udp_port, tcp_port) = st.ports.get().copied().unwrap_or((0, 0));
    let ups = st.upstreams();
    let (entries, bytes) = st.cache.lock().unwrap().usage();
    let nets = st.networks.read().unwrap();
    StatusReply {
        ok: true,
        pid: std::process::id(),
        udp_port,
        tcp_port,
        uptime_seconds: st.started.elapsed().as_secs(),
        networks: nets
            .iter()
            .map(|n| NetworkCount {
                name: n.network.clone(),
                records: n.len(),
            })
            .collect(),
        upstreams: ups
            .list
            .iter()
            .map(|u| UpstreamStatus {
                address: u.addr.to_string(),
                from_host: u.from_host,
            })
            .collect(),
        seccomp_denied: crate::confine::denied(),
        host_netns: st.host_netns.get().copied().unwrap_or(true),
        cache: CacheUsage {
            entries,
            bytes,
            size: ups.cache.size,
        },
        counters: Counters {
            local: load(&c.local),
            forwarded,
            failed: load(&c.failed),
            refused: load(&c.refused),
            upstream_mean_micros: load(&c.upstream_micros)
                .checked_div(answered_upstream)
                .unwrap_or(0),
            cached: load(&c.cached),
            coalesced: load(&c.coalesced),
        },
    }
}

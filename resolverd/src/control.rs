//! The plugin's channel to a running resolver: a root-only unix socket in the sandbox
//! directory, one JSON request per line (`reload`, `status`), one JSON reply per line.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::timeout;

use embedns_conf::paths::StatePaths;

use crate::state::Resolver;

pub fn bind(st: &Resolver) -> anyhow::Result<UnixListener> {
    let path = st.paths.control_socket(&st.container_id);
    let _ = std::fs::remove_file(&path);
    let dir = std::fs::File::open(st.paths.sandbox(&st.container_id))?;
    let listener = UnixListener::bind(StatePaths::control_socket_via(&dir))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

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
    let reply = match serde_json::from_str::<Value>(&line)
        .ok()
        .and_then(|v| v.get("cmd")?.as_str().map(str::to_string))
        .as_deref()
    {
        Some("reload") => match st.reload() {
            Ok(nets) => json!({"ok": true, "networks": nets}),
            Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
        },
        Some("status") => status(st),
        other => json!({"ok": false, "error": format!("unknown command {other:?}")}),
    };
    w.write_all(format!("{reply}\n").as_bytes()).await
}

fn status(st: &Resolver) -> Value {
    let c = &st.counters;
    let forwarded = c.forwarded.load(Ordering::Relaxed);
    let answered_upstream = forwarded.saturating_sub(c.failed.load(Ordering::Relaxed));
    let (udp, tcp) = st.ports.get().copied().unwrap_or((0, 0));
    let ups = st.upstreams();
    let nets = st.networks.read().unwrap();
    json!({
        "ok": true,
        "pid": std::process::id(),
        "udpPort": udp,
        "tcpPort": tcp,
        "uptimeSeconds": st.started.elapsed().as_secs(),
        "networks": nets.iter().map(|n| json!({"name": n.network, "records": n.len()})).collect::<Vec<_>>(),
        "upstreams": ups.list.iter().map(|u| json!({"address": u.addr.to_string(), "fromHost": u.from_host})).collect::<Vec<_>>(),
        "counters": {
            "local": c.local.load(Ordering::Relaxed),
            "forwarded": forwarded,
            "failed": c.failed.load(Ordering::Relaxed),
            "refused": c.refused.load(Ordering::Relaxed),
            "upstreamMeanMicros": c.upstream_micros.load(Ordering::Relaxed).checked_div(answered_upstream).unwrap_or(0),
        }
    })
}

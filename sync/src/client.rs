//! The etcd side of a session: the config the plugin left, connecting to one endpoint (TLS, an etcd user, keep-alive
//! pings, require-leader), requests bounded in time, and listings in pages.

use std::time::Duration;

use anyhow::{bail, Context};
use embedns_conf::shared::EtcdConf;
use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KeyValue, TlsOptions,
};

/// How long a connection to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one request may take before the session is given up.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on an idle connection: a member cut off by a firewall (no RST) is noticed
/// within interval + timeout.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Every key under `prefix` at one revision, in pages of [`PAGE`] (a gRPC message holds at
/// most 4 MiB; a network of thousands of containers would not fit in one).
pub(crate) async fn list(
    client: &mut Client,
    prefix: &str,
) -> anyhow::Result<(i64, Vec<KeyValue>)> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix is not empty") += 1; // '/' + 1: just past the prefix
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut out = Vec::new();
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(page_size());
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut page = timed(client.get(from.clone(), Some(options))).await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        let more = page.more();
        let kvs = page.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0); // the next key after it
        }
        out.extend(kvs);
        if !more {
            return Ok((revision, out));
        }
    }
}

/// Whether `lease` is still alive (a session after an endpoint switch keeps it); an error if
/// the member cannot tell.
pub(crate) async fn lease_alive(client: &mut Client, lease: i64) -> anyhow::Result<bool> {
    Ok(quick(client.lease_time_to_live(lease, None)).await?.ttl() > 0)
}

/// How long a request that needs the cluster's leader may take (a lease's, the claim's, a
/// write). A member whose leader died holds such a request until a new leader is elected and
/// then drops it unanswered: the session ends sooner and the next, on another member or
/// the same one once it has a leader, asks again (the lease and the watch kept).
pub(crate) const LEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// A request that needs the leader, with [`LEADER_TIMEOUT`].
pub(crate) async fn quick<T, E: Into<anyhow::Error>>(
    request: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(LEADER_TIMEOUT, request).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => bail!("no answer within {LEADER_TIMEOUT:?} (no leader?)"),
    }
}

/// Keys per page of a listing.
const PAGE: i64 = 500;

/// [`PAGE`], or `EMBEDNS_SYNC_PAGE` (for the tests: a page of one key makes any listing take
/// several pages).
fn page_size() -> i64 {
    std::env::var("EMBEDNS_SYNC_PAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(PAGE)
}

/// A client of one endpoint (with the config's TLS), made lazily: the first request connects.
pub(crate) async fn connect(conf: &EtcdConf, endpoint: &str) -> anyhow::Result<Client> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
        .with_keep_alive_while_idle(true)
        // A member without a leader (cut off from the majority) refuses requests and ends
        // watches instead of leaving them silent.
        .with_require_leader(true);
    if let Some(tls) = &conf.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(t);
    }
    if let Some(auth) = &conf.auth {
        let password = std::fs::read_to_string(&auth.password_file)
            .with_context(|| format!("reading {}", auth.password_file.display()))?;
        options = options.with_user(&auth.user, password.trim_end_matches(['\n', '\r']));
    }
    Ok(Client::connect([endpoint], Some(options)).await?)
}

/// A request with [`REQUEST_TIMEOUT`].
pub(crate) async fn timed<T, E: Into<anyhow::Error>>(
    request: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => bail!("no answer within {REQUEST_TIMEOUT:?}"),
    }
}

/// A pause of `backoff` scaled by a random factor in [0.5, 1].
pub(crate) fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// The config the plugin left in the network's directory, validated.
pub fn read_conf(path: &std::path::Path) -> anyhow::Result<EtcdConf> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let conf: EtcdConf =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(conf.settle()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_is_jittered_between_half_and_whole() {
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

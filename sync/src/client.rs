//! The real etcd of a session (`etcd::Etcd` over etcd's gRPC API): the config the plugin
//! left, connecting to one endpoint (TLS, an etcd user, keep-alive pings, require-leader),
//! requests bounded in time (those that need the leader ended early when it changes),
//! listings in pages, and the transactions of the claim and of fenced writes.

use std::time::Duration;

use anyhow::{bail, Context};
use embedns_conf::multihost::shared::EtcdConf;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KeyValue, KvClient, LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};

use crate::etcd::{self, Cancelled, Connect, Created, EtcdError, Event, Fence, Kv, WatchBatch};
use crate::mirror::MAX_VALUE_BYTES;

/// How long a connection to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one request may take before the session is given up.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on an idle connection: a member cut off by a firewall (no RST) is noticed
/// within interval + timeout.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest gRPC message taken from etcd (tonic's default is 4 MiB): room for a listing
/// page or a watch message of values under etcd's 1.5 MiB request limit. A message over it
/// is met by smaller pages (a listing) or a listing (a watch): [`too_large`].
pub(crate) const DECODE_LIMIT: usize = 16 << 20;

/// Every key under `prefix` at one revision, in pages of [`PAGE`] keys at most; a page over
/// [`DECODE_LIMIT`] is asked again half as long, and a single value over it is skipped (its
/// key kept, with a value R31 refuses, so it is counted and any held value goes). Values are
/// kept up to R31's cap, so a listing holds at most that much per key whatever etcd holds.
async fn list(client: &mut Client, prefix: &str) -> anyhow::Result<(i64, Vec<Kv>)> {
    let mut kv_client = client.kv_client().max_decoding_message_size(DECODE_LIMIT);
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix is not empty") += 1; // '/' + 1: just past the prefix
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut out = Vec::new();
    let mut limit = page_size();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut page = match timed(kv_client.get(from.clone(), Some(options.clone()))).await {
            Ok(page) => page,
            Err(e) if too_large(&e) && limit > 1 => {
                limit = (limit / 2).max(1);
                continue;
            }
            Err(e) if too_large(&e) => {
                // One value alone: its key only, and on past it.
                let mut key =
                    timed(kv_client.get(from.clone(), Some(options.with_keys_only()))).await?;
                let Some(kv) = key.take_kvs().into_iter().next() else {
                    return Err(e);
                };
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "a value over {DECODE_LIMIT} bytes");
                out.push(Kv {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: vec![0; MAX_VALUE_BYTES + 1],
                    mod_revision: kv.mod_revision(),
                    lease: kv.lease(),
                });
                from = kv.key().to_vec();
                from.push(0);
                continue;
            }
            Err(e) => return Err(e),
        };
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        let more = page.more();
        let kvs = page.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0); // the next key after it
        }
        out.extend(kvs.iter().map(kv));
        limit = page_size();
        if !more {
            return Ok((revision, out));
        }
    }
}

/// Whether `e` is a gRPC message over [`DECODE_LIMIT`] (tonic's OutOfRange on decoding).
pub(crate) fn too_large(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<etcd_client::Error>(),
            Some(etcd_client::Error::GRpcStatus(s)) if s.message().contains("message length too large")
        )
    })
}

/// How long a request that needs the cluster's leader may take (a lease's, the claim's, a
/// write).
pub(crate) const LEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// A request that needs the leader and has no answer after this long may have been lost
/// with a dead leader: the member is asked for its raft term every [`LEADER_POLL`].
const LEADER_SLOW: Duration = Duration::from_millis(100);
const LEADER_POLL: Duration = Duration::from_millis(50);

/// An error of etcd's, typed where its text says the member has no leader
/// ([`EtcdError::NoLeader`]):
/// etcd reports that only as a status message.
fn from_etcd(e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    if e.chain().any(|c| c.to_string().contains("no leader")) {
        return EtcdError::NoLeader(format!("{e:#}")).into();
    }
    e
}

/// The raft term a session's member was in when the session began, and a way to ask it
/// again. A member whose leader died holds the requests that need one (forwarded to the dead
/// leader) and, once a new leader is elected, never answers them: such a request ends with
/// [`EtcdError::LeaderChanged`] as soon as the member answers in a newer term, not at its
/// timeout.
/// The term comes in the header of a serializable read of one key, which the member answers
/// from its own state, under require-leader only while it has a leader, and which an etcd
/// user allowed to read the network's prefix may make (the Status call needs the root role
/// under etcd 3.5's RBAC).
#[derive(Clone)]
pub(crate) struct Leader {
    kv: KvClient,
    key: String,
    term: u64,
}

impl Leader {
    /// The term `client`'s member is in now, read with `key` (one the session may read); an
    /// error if it has no leader (an election, or a member cut off from the majority).
    pub(crate) async fn of(client: &Client, key: &str) -> anyhow::Result<Leader> {
        let kv = client.kv_client();
        let term = term(kv.clone(), key, LEADER_TIMEOUT).await?;
        Ok(Leader {
            kv,
            key: key.to_string(),
            term,
        })
    }

    /// A request that needs the leader, with [`LEADER_TIMEOUT`], ended early when a new
    /// leader is elected meanwhile.
    pub(crate) async fn quick<T, E: Into<anyhow::Error>>(
        &self,
        request: impl std::future::Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T> {
        tokio::pin!(request);
        let deadline = tokio::time::Instant::now() + LEADER_TIMEOUT;
        if let Ok(r) = tokio::time::timeout(LEADER_SLOW, &mut request).await {
            return r.map_err(from_etcd);
        }
        let mut poll = tokio::time::interval(LEADER_POLL);
        loop {
            tokio::select! {
                r = &mut request => return r.map_err(from_etcd),
                _ = tokio::time::sleep_until(deadline) => {
                    let why = format!("no answer within {LEADER_TIMEOUT:?} (no leader?)");
                    return Err(EtcdError::NoLeader(why).into());
                }
                _ = poll.tick() => {
                    // An error is a member without a leader (it refuses with require-leader):
                    // the election is under way.
                    if let Ok(now) = term(self.kv.clone(), &self.key, LEADER_POLL).await {
                        if now > self.term {
                            return Err(EtcdError::LeaderChanged(now).into());
                        }
                    }
                }
            }
        }
    }
}

/// The raft term of the member `kv` talks to, from a serializable count of `key`.
async fn term(mut kv: KvClient, key: &str, within: Duration) -> anyhow::Result<u64> {
    let local = GetOptions::new().with_serializable().with_count_only();
    let resp = tokio::time::timeout(within, kv.get(key, Some(local)))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {within:?}"))?
        .map_err(from_etcd)?;
    Ok(resp.header().map_or(0, |h| h.raft_term()))
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
async fn connect(conf: &EtcdConf, endpoint: &str) -> anyhow::Result<Client> {
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
async fn timed<T, E: Into<anyhow::Error>>(
    request: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(r) => r.map_err(from_etcd),
        Err(_) => bail!("no answer within {REQUEST_TIMEOUT:?}"),
    }
}

/// The config the plugin left in the network's directory, validated.
pub fn read_conf(path: &std::path::Path) -> anyhow::Result<EtcdConf> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let conf: EtcdConf =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(conf.settle()?)
}

/// Sessions over etcd's gRPC API.
pub struct Grpc;

/// One session's endpoint: its client, and the leader its member followed at the start.
pub struct Member {
    client: Client,
    leader: Leader,
}

impl Connect for Grpc {
    type Etcd = Member;

    async fn connect(
        &self,
        conf: &EtcdConf,
        endpoint: &str,
        claim: &str,
    ) -> anyhow::Result<Member> {
        let client = timed(connect(conf, endpoint)).await?;
        let leader = Leader::of(&client, claim).await?;
        Ok(Member { client, leader })
    }
}

/// A key and its value, cut one byte past R31's cap (R31 refuses it whole; nothing larger
/// is held).
fn kv(kv: &KeyValue) -> Kv {
    let value = kv.value();
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: value[..value.len().min(MAX_VALUE_BYTES + 1)].to_vec(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

/// `fence` as a transaction's condition.
fn holding(fence: Fence<'_>) -> Compare {
    Compare::value(fence.claim, CompareOp::Equal, fence.claimant)
}

impl etcd::Etcd for Member {
    type Renew = LeaseKeeper;
    type Renewals = LeaseKeepAliveStream;
    type Watch = WatchStream;

    async fn lease_alive(&mut self, lease: i64) -> anyhow::Result<bool> {
        let ttl = self
            .leader
            .quick(self.client.lease_time_to_live(lease, None));
        Ok(ttl.await?.ttl() > 0)
    }

    async fn grant(&mut self, ttl: u64) -> anyhow::Result<i64> {
        let granted = self.leader.quick(self.client.lease_grant(ttl as i64, None));
        Ok(granted.await?.id())
    }

    async fn keep_alive(
        &mut self,
        lease: i64,
    ) -> anyhow::Result<(LeaseKeeper, LeaseKeepAliveStream)> {
        timed(self.client.lease_keep_alive(lease)).await
    }

    async fn revoke(&mut self, lease: i64) -> anyhow::Result<()> {
        timed(self.client.lease_revoke(lease)).await?;
        Ok(())
    }

    async fn create(&mut self, key: &str, value: &str, lease: i64) -> anyhow::Result<Created> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.leader.quick(self.client.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(Created::Created);
        }
        let held = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| Created::Held {
                value: kv.value().to_vec(),
                lease: kv.lease(),
            }),
            _ => None,
        });
        Ok(held.unwrap_or(Created::Gone))
    }

    async fn renew_claim(&mut self, key: &str, value: &str, lease: i64) -> anyhow::Result<bool> {
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::Equal, value)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        Ok(self.leader.quick(self.client.txn(txn)).await?.succeeded())
    }

    async fn put_fenced(
        &mut self,
        fence: Fence<'_>,
        puts: &[(String, Vec<u8>)],
        lease: i64,
    ) -> anyhow::Result<Option<i64>> {
        let ops: Vec<TxnOp> = puts
            .iter()
            .map(|(key, body)| {
                TxnOp::put(
                    key.as_str(),
                    body.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )
            })
            .collect();
        let txn = Txn::new().when([holding(fence)]).and_then(ops);
        let resp = self.leader.quick(self.client.txn(txn)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(resp.succeeded().then_some(revision))
    }

    async fn delete_fenced(
        &mut self,
        fence: Fence<'_>,
        key: &str,
        mod_revision: i64,
    ) -> anyhow::Result<()> {
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key, CompareOp::Equal, mod_revision),
                holding(fence),
            ])
            .and_then([TxnOp::delete(key, None)]);
        self.leader.quick(self.client.txn(txn)).await?;
        Ok(())
    }

    async fn list(&mut self, prefix: &str) -> anyhow::Result<(i64, Vec<Kv>)> {
        list(&mut self.client, prefix).await
    }

    async fn watch(&mut self, prefix: &str, from: i64) -> anyhow::Result<WatchStream> {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut watch = self
            .client
            .watch_client()
            .max_decoding_message_size(DECODE_LIMIT);
        timed(watch.watch(prefix, Some(options))).await
    }
}

impl etcd::Renew for LeaseKeeper {
    async fn renew(&mut self) -> anyhow::Result<()> {
        timed(self.keep_alive()).await
    }
}

impl etcd::Renewals for LeaseKeepAliveStream {
    async fn next(&mut self) -> anyhow::Result<Option<i64>> {
        Ok(self.message().await.map_err(from_etcd)?.map(|r| r.ttl()))
    }
}

impl etcd::Watch for WatchStream {
    async fn next(&mut self) -> anyhow::Result<Option<WatchBatch>> {
        let message = self.message().await.map_err(from_etcd);
        let message = message.map_err(|e| match too_large(&e) {
            true => anyhow::Error::new(EtcdError::TooLarge(DECODE_LIMIT)),
            false => e,
        });
        let Some(resp) = message? else {
            return Ok(None);
        };
        let cancelled = resp.canceled().then(|| Cancelled {
            reason: resp.cancel_reason().to_string(),
            compact_revision: resp.compact_revision(),
        });
        let events = resp
            .events()
            .iter()
            .filter_map(|e| {
                Some(Event {
                    deleted: e.event_type() == EventType::Delete,
                    kv: kv(e.kv()?),
                })
            })
            .collect();
        Ok(Some(WatchBatch {
            events,
            revision: resp.header().map_or(0, |h| h.revision()),
            cancelled,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_no_leader_status_is_typed_and_other_errors_are_left_as_they_are() {
        let e = from_etcd(anyhow::anyhow!(
            "grpc request error: status: Unavailable, message: \"etcdserver: no leader\""
        ));
        assert!(matches!(EtcdError::of(&e), Some(EtcdError::NoLeader(_))));
        let refused = from_etcd(anyhow::anyhow!("tcp connect error: connection refused"));
        assert!(EtcdError::of(&refused).is_none());
        assert!(crate::backoff::election(&e) && !crate::backoff::election(&refused));
    }
}

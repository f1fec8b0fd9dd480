//! Forwarding what is not answered locally (R15, R17–R21): the query goes upstream unchanged
//! but for a fresh random ID, over the client's transport; the answer comes back with the
//! client's ID. Each upstream gets a timeout; on timeout, error, SERVFAIL or REFUSED the next
//! is tried, and the client gets SERVFAIL within 5 s when all fail (R19); the order they are
//! tried in is `failover.rs`'s (one silent on several queries in a row is tried last for a
//! while). At most `maxInflight`
//! queries are in flight; beyond that the answer is REFUSED at once. What comes back may be
//! kept in the resolver's cache (R34, `cache/`), which answers the same question until
//! its TTL runs out or the upstreams change.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::cache::{Asked, Question};
use crate::channel::{Channel, Channels};
use crate::coalesce::{self, InFlight, Turn};
use crate::failover::Failover;
use crate::hostns::HostSockets;
use crate::log::Limiter;
use crate::state::{QueryCounters, Resolver, Upstream};
use crate::wire::{error_for_raw, Query};

/// When every upstream fails, the client has its SERVFAIL within this time (glibc waits 5 s
/// before it resends).
const ALL_FAIL_WITHIN: Duration = Duration::from_millis(4500);

/// Docker logs upstream failures at most this often.
const LOG_EVERY: Duration = Duration::from_secs(2);

/// Takes queries upstream (R15, R17-R20): order, failover, demotion, the in-flight cap.
pub struct Forwarder {
    state: Arc<Resolver>,
    host: HostSockets,
    /// Forwarded queries in flight now, against the current `maxInflight` (R20).
    inflight: AtomicUsize,
    failover: Mutex<Failover>,
    log_limit: Limiter,
    /// The UDP sockets to the upstreams, each carrying several queries.
    channels: Channels,
    /// The questions being forwarded now, and who waits for each (R34a).
    questions: InFlight,
}

/// The upstream set as one query sees it: read once per query, since reading it stats the
/// host's resolv.conf (R22).
pub struct Route {
    /// In the order to try them (R19).
    upstreams: Vec<Upstream>,
    timeout: Duration,
    max_inflight: usize,
    /// The upstream set's generation: a question asked of another set is another (R34a).
    generation: u64,
    /// R34: keep the answer, which is asked under this upstream set (its generation).
    keep: Option<u64>,
    /// The query as the cache reads it, read once here (`None`: a shape it never answers,
    /// which is neither kept nor coalesced).
    asked: Option<Asked>,
}

/// What a query about to be forwarded gets first.
pub enum Prepared {
    /// The cache's reply (R34).
    Hit(Vec<u8>),
    /// Ask upstream.
    Ask(Route),
}

impl Forwarder {
    /// A forwarder over the resolver's upstreams, with sockets in the host's netns (R18).
    pub fn new(state: Arc<Resolver>, host: HostSockets) -> Self {
        Forwarder {
            state,
            host,
            inflight: AtomicUsize::new(0),
            failover: Mutex::default(),
            log_limit: Limiter::new(LOG_EVERY),
            channels: Channels::default(),
            questions: InFlight::default(),
        }
    }

    /// The route of a query that is not answered locally (`read`: as the handler read it,
    /// `None` for a shape the cache never takes), or the cache's reply to it (R34)
    /// when `cacheable` (never for R16a's names: peers come first). This is also where a
    /// change of upstreams (R22, a reload) empties the cache.
    pub fn prepare(&self, read: Option<&Query>, tcp: bool, cacheable: bool) -> Prepared {
        let set = self.state.upstreams();
        let question = read.and_then(Question::of);
        let route = |keep, asked| Route {
            upstreams: self
                .failover
                .lock()
                .unwrap()
                .ordered(&set.list, Instant::now()),
            timeout: set.timeout,
            max_inflight: set.max_inflight,
            generation: set.generation,
            keep,
            asked,
        };
        let mut cache = self.state.cache.lock().unwrap();
        cache.sync(set.generation, set.cache);
        let Some(q) = question else {
            return Prepared::Ask(route(None, None));
        };
        if !cacheable || set.cache.size == 0 {
            return Prepared::Ask(route(None, Some(q.into_asked())));
        }
        match cache.get(&q, tcp, Instant::now()) {
            Some(reply) => {
                QueryCounters::bump(&self.state.counters.cached);
                Prepared::Hit(reply)
            }
            None => Prepared::Ask(route(Some(set.generation), Some(q.into_asked()))),
        }
    }

    /// R34: keeps the upstream's `reply` to the query `asked` (its TTLs capped) if it may be
    /// kept and the upstreams are still those it was asked of.
    fn remember(&self, asked: &Asked, reply: &mut [u8], generation: u64) {
        let mut cache = self.state.cache.lock().unwrap();
        if cache.generation() == generation {
            cache.put(asked, reply, Instant::now());
        }
    }

    /// R16a: forwards `query`, and returns `local` instead when the upstream says NXDOMAIN,
    /// when no upstream answers at all (the SERVFAIL `forward` makes when every one failed:
    /// then no real name can be found either), or when there is no upstream to ask.
    pub async fn forward_first(
        &self,
        query: &[u8],
        question_end: usize,
        tcp: bool,
        route: &Route,
        local: Vec<u8>,
    ) -> Vec<u8> {
        if !route.upstreams.is_empty() {
            let resp = self.forward(query, question_end, tcp, route).await;
            let rcode = resp.get(3).map(|b| b & 0x0f);
            let none_found =
                [ResponseCode::NXDomain, ResponseCode::ServFail].map(|c| Some(u16::from(c) as u8));
            if !none_found.contains(&rcode) {
                return resp;
            }
        }
        QueryCounters::bump(&self.state.counters.local);
        local
    }

    /// Forwards `query` along `route` and returns the bytes to send the client.
    pub async fn forward(
        &self,
        query: &[u8],
        question_end: usize,
        tcp: bool,
        route: &Route,
    ) -> Vec<u8> {
        let Some(_slot) = Slot::take(&self.inflight, route.max_inflight) else {
            QueryCounters::bump(&self.state.counters.refused);
            self.log_limited(format_args!(
                "more than the allowed forwarded queries in flight; refusing"
            ));
            return error_for_raw(query, question_end, ResponseCode::Refused);
        };
        // R34a: a question already in flight is not asked again.
        let key = (route.asked.as_ref()).map(|a| coalesce::key(a, tcp, route.generation));
        let turn = key.map_or(Turn::Alone, |k| self.questions.join(k));
        let leader = match turn {
            Turn::Wait(reply) => {
                QueryCounters::bump(&self.state.counters.coalesced);
                match tokio::time::timeout(ALL_FAIL_WITHIN, reply).await {
                    Ok(Ok(reply)) => match coalesce::reply_for(&reply, query, question_end) {
                        Some(mine) => return mine,
                        None => None,
                    },
                    // The leader's task ended without a reply: this one is asked on its own.
                    Ok(Err(_)) => None,
                    Err(_) => {
                        QueryCounters::bump(&self.state.counters.failed);
                        return error_for_raw(query, question_end, ResponseCode::ServFail);
                    }
                }
            }
            Turn::Lead(leader) => Some(leader),
            Turn::Alone => None,
        };
        let resp = self.ask(query, question_end, tcp, route).await;
        if let Some(leader) = leader {
            leader.finish(&resp);
        }
        resp
    }

    /// Asks the upstreams in `route`'s order (R19) and returns the bytes to send the client.
    async fn ask(&self, query: &[u8], question_end: usize, tcp: bool, route: &Route) -> Vec<u8> {
        QueryCounters::bump(&self.state.counters.forwarded);
        let client_id = [query[0], query[1]];
        let deadline = Instant::now() + ALL_FAIL_WITHIN;
        let timeout = route.timeout;
        for &up in &route.upstreams {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let started = Instant::now();
            // Boxed, as each task's allocation stays within glibc's per-thread cache (1 KiB)
            // only so: a larger one was split up for the cache's entries (R34) and the heap
            // grew by 1.3 KiB per answer kept (measured in `make bench`).
            let exchange = Box::pin(self.exchange(up, query, question_end, tcp));
            let result = tokio::time::timeout(timeout.min(left), exchange).await;
            let why = match result {
                Ok(Ok(mut resp)) => {
                    // It answered: whatever it said, it is alive.
                    self.failover.lock().unwrap().answered(up.addr);
                    let rcode = resp[3] & 0x0f;
                    if rcode == u16::from(ResponseCode::ServFail) as u8
                        || rcode == u16::from(ResponseCode::Refused) as u8
                    {
                        self.log_limited(format_args!(
                            "upstream {} answered rcode {rcode}; trying the next",
                            up.addr
                        ));
                        continue;
                    }
                    self.state
                        .counters
                        .upstream_micros
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    resp[..2].copy_from_slice(&client_id);
                    if let (Some(generation), Some(asked)) = (route.keep, &route.asked) {
                        self.remember(asked, &mut resp, generation);
                    }
                    return resp;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", timeout.min(left)),
            };
            self.silent(&up);
            self.log_limited(format_args!("upstream {} failed: {why}", up.addr));
        }
        QueryCounters::bump(&self.state.counters.failed);
        error_for_raw(query, question_end, ResponseCode::ServFail)
    }

    /// Notes a query an upstream did not answer; its demotion (R19) is said once (until it
    /// answers again), outside the rate limit, with where it was asked.
    fn silent(&self, up: &Upstream) {
        if !self
            .failover
            .lock()
            .unwrap()
            .silent(up.addr, Instant::now())
        {
            return;
        }
        if up.from_host {
            tracing::warn!(
                "upstream {} cannot be reached from the runtime's host network namespace, \
                 where a loopback nameserver of the host's resolv.conf is asked (R18); under \
                 rootless podman that namespace is podman's, not the machine's: name a \
                 reachable nameserver in the conf's dns.nameservers",
                up.addr
            );
        } else {
            tracing::warn!(
                "upstream {} cannot be reached from the container's network namespace",
                up.addr
            );
        }
    }

    async fn exchange(
        &self,
        up: Upstream,
        query: &[u8],
        question_end: usize,
        tcp: bool,
    ) -> std::io::Result<Vec<u8>> {
        let v6 = up.addr.is_ipv6();
        if tcp {
            return self.exchange_tcp(up, v6, query, question_end).await;
        }
        let sent = match self.channels.current(up.addr) {
            Some(chan) => chan.send(query, question_end).await,
            None => None,
        };
        let mut pending = match sent {
            Some(sent) => sent?,
            None => {
                let chan = Channel::open(self.udp_socket(up, v6).await?);
                self.channels.replace(up.addr, chan.clone());
                chan.send(query, question_end)
                    .await
                    .unwrap_or_else(|| Err(std::io::Error::other("a new channel took no query")))?
            }
        };
        (&mut pending.reply)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the upstream's socket closed")))
    }

    /// A new UDP socket connected to `up` (which binds a random port), from the host's netns
    /// for a host upstream (R18).
    async fn udp_socket(&self, up: Upstream, v6: bool) -> std::io::Result<UdpSocket> {
        let fd = if up.from_host {
            let fd = self.host.socket(v6, SockType::Datagram).await?;
            // The spare socket taken is replaced in the background.
            self.host.top_up();
            fd
        } else {
            let family = if v6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            };
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            socket(family, SockType::Datagram, flags, None)?
        };
        let sock = std::net::UdpSocket::from(fd);
        sock.connect(up.addr)?;
        UdpSocket::from_std(sock)
    }

    async fn exchange_tcp(
        &self,
        up: Upstream,
        v6: bool,
        query: &[u8],
        question_end: usize,
    ) -> std::io::Result<Vec<u8>> {
        let stream = if up.from_host {
            let fd = self.host.socket(v6, SockType::Stream).await?;
            TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
                .connect(up.addr)
                .await?
        } else {
            TcpStream::connect(up.addr).await?
        };
        exchange_tcp(stream, query, question_end).await
    }

    fn log_limited(&self, msg: std::fmt::Arguments<'_>) {
        if let Some(held) = self.log_limit.allow() {
            tracing::warn!(held_back = held, "{msg}");
        }
    }
}

/// One of the `maxInflight` places for a forwarded query, given back when dropped. The limit
/// is read for each query, so a reload that changes `maxInflight` applies at once.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(inflight: &'a AtomicUsize, max: usize) -> Option<Slot<'a>> {
        let before = inflight.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            inflight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(inflight))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One query over a new TCP connection, under a fresh random ID (a UDP query gets its ID
/// from its channel).
async fn exchange_tcp(
    mut stream: TcpStream,
    query: &[u8],
    question_end: usize,
) -> std::io::Result<Vec<u8>> {
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    let id: u16 = rand::random();
    framed[2..4].copy_from_slice(&id.to_be_bytes());
    let query = &framed[2..];
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    if !is_reply_to(&buf, query, question_end) {
        return Err(std::io::Error::other(
            "upstream answered another question or ID",
        ));
    }
    Ok(buf)
}

/// Same ID, QR set, and the same question (case-insensitively).
fn is_reply_to(resp: &[u8], query: &[u8], question_end: usize) -> bool {
    resp.len() >= question_end
        && resp[..2] == query[..2]
        && resp[2] & 0x80 != 0
        && resp[12..question_end].eq_ignore_ascii_case(&query[12..question_end])
}

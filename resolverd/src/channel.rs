//! One UDP socket to an upstream, carrying several forwarded queries: each gets an ID unique
//! among the socket's queries in flight, one task reads the replies and hands each to the
//! query whose ID and question it carries (anything else, spoofed or late, is dropped). A
//! socket carries at most [`USES`] queries, then the next query opens a new one, with a new
//! random port; the old one closes once its last query is answered or given up.
//!
//! A socket per query cost every forwarded query a socket, a connect, two epoll changes and a
//! close: the resolver's CPU per forwarded query went from 28.5 to 18.5 µs without them
//! (`make bench`). A socket opened every 32 queries keeps the port changing (an off-path
//! spoofer must still guess port and ID) for a thirty-second of that cost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::{oneshot, Notify};

/// Queries a socket carries before the next query opens another.
pub const USES: u32 = 32;

/// A query waiting for its reply: its question, to check the reply against, and where the
/// reply goes (an error if the socket fails).
struct Waiter {
    question: Vec<u8>,
    reply: oneshot::Sender<std::io::Result<Vec<u8>>>,
}

/// The socket and the queries it carries.
pub struct Channel {
    sock: UdpSocket,
    waiting: Mutex<HashMap<u16, Waiter>>,
    /// Queries given to it so far (a new one is opened at [`USES`]).
    uses: AtomicU32,
    /// No more queries go to it; it closes when none waits.
    retired: AtomicBool,
    /// Wakes the reader when the last query of a retired channel is gone.
    drained: Notify,
}

/// A query's place on a channel; dropping it (answered, timed out, cancelled) gives it back.
pub struct Pending {
    chan: Arc<Channel>,
    id: u16,
    pub reply: oneshot::Receiver<std::io::Result<Vec<u8>>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut waiting = self.chan.waiting.lock().unwrap();
        waiting.remove(&self.id);
        if waiting.is_empty() && self.chan.retired.load(Ordering::Acquire) {
            self.chan.drained.notify_one();
        }
    }
}

impl Channel {
    /// A channel over a connected UDP socket, and its reader task.
    pub fn open(sock: UdpSocket) -> Arc<Channel> {
        let chan = Arc::new(Channel {
            sock,
            waiting: Mutex::new(HashMap::new()),
            uses: AtomicU32::new(0),
            retired: AtomicBool::new(false),
            drained: Notify::new(),
        });
        tokio::spawn(read(chan.clone()));
        chan
    }

    /// Whether new queries may still go to it.
    pub fn open_for_more(&self) -> bool {
        !self.retired.load(Ordering::Acquire)
    }

    /// Sends `query` (whose ID it replaces with one of its own) and returns where its reply
    /// will come; `None` when it carries no more queries (open another).
    pub async fn send(
        self: &Arc<Self>,
        query: &[u8],
        question_end: usize,
    ) -> Option<std::io::Result<Pending>> {
        let used = self.uses.fetch_add(1, Ordering::AcqRel);
        if used >= USES || !self.open_for_more() {
            return None;
        }
        if used + 1 == USES {
            self.retired.store(true, Ordering::Release);
        }
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut waiting = self.waiting.lock().unwrap();
            let mut id: u16 = rand::random();
            while waiting.contains_key(&id) {
                id = rand::random();
            }
            let question = query[12..question_end].to_vec();
            waiting.insert(
                id,
                Waiter {
                    question,
                    reply: tx,
                },
            );
            id
        };
        let pending = Pending {
            chan: self.clone(),
            id,
            reply: rx,
        };
        let mut q = query.to_vec();
        q[..2].copy_from_slice(&id.to_be_bytes());
        // A UDP socket takes a datagram at once, unless its buffer is full or the runtime
        // has not yet seen a new socket writable; an error (a refusal reported on the
        // socket) retires it.
        let sent = match self.sock.try_send(&q) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.sock.send(&q).await,
            other => other,
        };
        Some(match sent {
            Ok(_) => Ok(pending),
            Err(e) => {
                self.retired.store(true, Ordering::Release);
                Err(e)
            }
        })
    }

    /// Hands a datagram to the query it answers, if any.
    fn deliver(&self, reply: &[u8]) {
        if reply.len() < 12 || reply[2] & 0x80 == 0 {
            return;
        }
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        let mut waiting = self.waiting.lock().unwrap();
        let ours = waiting.get(&id).is_some_and(|w| {
            let end = 12 + w.question.len();
            reply.len() >= end && reply[12..end].eq_ignore_ascii_case(&w.question)
        });
        if ours {
            if let Some(w) = waiting.remove(&id) {
                let _ = w.reply.send(Ok(reply.to_vec()));
            }
        }
    }

    /// The socket failed (an ICMP error on a connected socket: the upstream refused): every
    /// query on it fails with that error, and it takes no more.
    fn fail(&self, e: &std::io::Error) {
        self.retired.store(true, Ordering::Release);
        for (_, w) in self.waiting.lock().unwrap().drain() {
            let _ = w
                .reply
                .send(Err(std::io::Error::new(e.kind(), e.to_string())));
        }
    }

    fn done(&self) -> bool {
        self.retired.load(Ordering::Acquire) && self.waiting.lock().unwrap().is_empty()
    }
}

/// The reader: every datagram to its query, until the channel is retired and drained.
async fn read(chan: Arc<Channel>) {
    loop {
        if chan.done() {
            return;
        }
        tokio::select! {
            ready = chan.sock.readable() => {
                if let Err(e) = ready {
                    chan.fail(&e);
                    continue;
                }
            }
            _ = chan.drained.notified() => continue,
        }
        loop {
            // Waiting holds no buffer: a reply is read into the thread's one receive buffer
            // and copied out at its size.
            let got = RECV_BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                match chan.sock.try_recv(&mut buf) {
                    Ok(n) => {
                        chan.deliver(&buf[..n]);
                        Ok(true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
                    Err(e) => Err(e),
                }
            });
            match got {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    chan.fail(&e);
                    break;
                }
            }
        }
    }
}

thread_local! {
    /// Where UDP replies from upstreams land (the largest a datagram can be), one per thread.
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 65535]);
}

/// The channels of a resolver, one open per upstream at a time.
#[derive(Default)]
pub struct Channels {
    open: Mutex<HashMap<std::net::SocketAddr, Arc<Channel>>>,
}

impl Channels {
    /// The channel open to `addr`, if it takes more queries.
    pub fn current(&self, addr: std::net::SocketAddr) -> Option<Arc<Channel>> {
        let open = self.open.lock().unwrap();
        open.get(&addr).filter(|c| c.open_for_more()).cloned()
    }

    /// Makes `chan` the one open to `addr`.
    pub fn replace(&self, addr: std::net::SocketAddr, chan: Arc<Channel>) {
        self.open.lock().unwrap().insert(addr, chan);
    }
}

//! A fake upstream DNS server for tests, on UDP and TCP, inside a netns the test made (or
//! the current one). It serves a small zone, answers NXDOMAIN with the zone's SOA for other
//! names in it, and counts what it receives. Modes make it silent, SERVFAIL, send garbage or
//! reply with a wrong ID.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// How the fake upstream behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Answer,
    /// Receives and never answers (a dead upstream that times out).
    Silent,
    ServFail,
    Garbage,
    WrongId,
    /// Over TCP, a 65535-byte reply (right ID and question, then junk); over UDP, a
    /// 4000-byte one.
    Oversized,
    /// Over UDP, answers as `Answer` does but holds each reply until the mode changes (a slow
    /// upstream whose queries a test can see in flight).
    Held,
}

struct Shared {
    zone: String,
    a: HashMap<String, Vec<std::net::Ipv4Addr>>,
    txt: HashMap<String, String>,
    mode: Mutex<Mode>,
    queries: AtomicUsize,
    last_query: Mutex<Option<Vec<u8>>>,
    /// Where the last query came from.
    last_source: Mutex<Option<SocketAddr>>,
    /// UDP replies held while in [`Mode::Held`], and where they go.
    held: Mutex<Vec<(Vec<u8>, SocketAddr)>>,
    stop: AtomicBool,
}

/// A fake upstream DNS server on a test's address (UDP and TCP, in threads of its own).
pub struct FakeUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Starts a server on `addr` inside the netns at `netns` (`None`: the current one)
    /// serving `zone` with `records` (`name -> IPv4`, names relative to nothing: full names).
    pub fn start(
        netns: Option<&str>,
        addr: &str,
        zone: &str,
        records: &[(&str, &str)],
    ) -> FakeUpstream {
        Self::start_with_txt(netns, addr, zone, records, &[])
    }

    /// [`FakeUpstream::start`] with TXT records too (big ones test relayed truncation).
    pub fn start_with_txt(
        netns: Option<&str>,
        addr: &str,
        zone: &str,
        records: &[(&str, &str)],
        txt: &[(&str, &str)],
    ) -> FakeUpstream {
        let addr: SocketAddr = addr.parse().expect("upstream address");
        let mut a: HashMap<String, Vec<std::net::Ipv4Addr>> = HashMap::new();
        for (n, ip) in records {
            a.entry(n.to_ascii_lowercase())
                .or_default()
                .push(ip.parse().unwrap());
        }
        let shared = Arc::new(Shared {
            zone: zone.to_ascii_lowercase(),
            a,
            txt: txt
                .iter()
                .map(|(n, t)| (n.to_ascii_lowercase(), t.to_string()))
                .collect(),
            mode: Mutex::new(Mode::Answer),
            queries: AtomicUsize::new(0),
            last_query: Mutex::new(None),
            last_source: Mutex::new(None),
            held: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let netns = netns.map(str::to_string);
        let binder = std::thread::spawn(move || {
            if let Some(ns) = netns {
                let f = File::open(&ns).expect("open netns");
                nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            }
            let udp = UdpSocket::bind(addr).expect("bind fake upstream udp");
            let tcp = TcpListener::bind(addr).expect("bind fake upstream tcp");
            tx.send((udp, tcp)).unwrap();
        });
        let (udp, tcp) = rx.recv().expect("fake upstream did not bind");
        binder.join().unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let s1 = shared.clone();
        let t1 = std::thread::spawn(move || serve_udp(udp, s1));
        let s2 = shared.clone();
        let t2 = std::thread::spawn(move || serve_tcp(tcp, s2));
        FakeUpstream {
            addr,
            shared,
            threads: vec![t1, t2],
        }
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Queries received so far (UDP and TCP).
    pub fn queries(&self) -> usize {
        self.shared.queries.load(Ordering::SeqCst)
    }

    /// The source address of the last query received.
    pub fn last_source(&self) -> Option<SocketAddr> {
        *self.shared.last_source.lock().unwrap()
    }

    /// The last query received, parsed.
    pub fn last_query(&self) -> Option<Message> {
        let q = self.shared.last_query.lock().unwrap().clone()?;
        Message::from_vec(&q).ok()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_udp(sock: UdpSocket, sh: Arc<Shared>) {
    let mut buf = [0u8; 4096];
    while !sh.stop.load(Ordering::SeqCst) {
        let holding = *sh.mode.lock().unwrap() == Mode::Held;
        if !holding {
            for (resp, peer) in sh.held.lock().unwrap().drain(..) {
                let _ = sock.send_to(&resp, peer);
            }
        }
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        *sh.last_source.lock().unwrap() = Some(peer);
        if let Some(resp) = respond(&buf[..n], &sh, 512) {
            if *sh.mode.lock().unwrap() == Mode::Held {
                sh.held.lock().unwrap().push((resp, peer));
            } else {
                let _ = sock.send_to(&resp, peer);
            }
        }
    }
}

fn serve_tcp(listener: TcpListener, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::SeqCst) {
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u8)).unwrap_or(0) == 0 {
            continue;
        }
        let Ok((mut s, peer)) = listener.accept() else {
            continue;
        };
        *sh.last_source.lock().unwrap() = Some(peer);
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            continue;
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut msg).is_err() {
            continue;
        }
        if let Some(resp) = respond(&msg, &sh, 65535) {
            let mut framed = (resp.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&resp);
            let _ = s.write_all(&framed);
        }
    }
}

fn respond(bytes: &[u8], sh: &Shared, limit: usize) -> Option<Vec<u8>> {
    sh.queries.fetch_add(1, Ordering::SeqCst);
    *sh.last_query.lock().unwrap() = Some(bytes.to_vec());
    let mode = *sh.mode.lock().unwrap();
    let q = Message::from_vec(bytes).ok()?;
    match mode {
        Mode::Silent => return None,
        Mode::Garbage => return Some(vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3]),
        Mode::Oversized => {
            let size = if limit > 512 { 65535 } else { 4000 };
            let mut out = bytes.to_vec();
            out[2] |= 0x80;
            out.resize(size, 0xab);
            return Some(out);
        }
        _ => {}
    }
    let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
    if mode == Mode::WrongId {
        r.metadata.id = q.metadata.id.wrapping_add(1);
    }
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.authoritative = true;
    r.add_queries(q.queries.iter().cloned());
    if mode == Mode::ServFail {
        r.metadata.response_code = ResponseCode::ServFail;
        return r.to_vec().ok();
    }
    let query = q.queries.first()?;
    let name = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let qname = query.name().clone();
    let in_zone = name == sh.zone || name.ends_with(&format!(".{}", sh.zone));
    let mut known = false;
    if let Some(ips) = sh.a.get(&name) {
        known = true;
        if query.query_type() == RecordType::A {
            for ip in ips {
                r.add_answer(Record::from_rdata(qname.clone(), 60, RData::A(A(*ip))));
            }
        }
    }
    if let Some(text) = sh.txt.get(&name) {
        known = true;
        if query.query_type() == RecordType::TXT {
            let chunks: Vec<String> = text
                .as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            r.add_answer(Record::from_rdata(
                qname.clone(),
                60,
                RData::TXT(TXT::new(chunks)),
            ));
        }
    }
    if !known {
        if in_zone {
            r.metadata.response_code = ResponseCode::NXDomain;
            let zone = Name::from_ascii(format!("{}.", sh.zone)).unwrap();
            let soa = SOA::new(
                Name::from_ascii(format!("ns.{}.", sh.zone)).unwrap(),
                Name::from_ascii(format!("admin.{}.", sh.zone)).unwrap(),
                1,
                3600,
                600,
                86400,
                300,
            );
            r.add_authority(Record::from_rdata(zone, 300, RData::SOA(soa)));
        } else {
            r.metadata.response_code = ResponseCode::Refused;
        }
    }
    let mut out = r.to_vec().ok()?;
    if out.len() > limit {
        r.answers.clear();
        r.metadata.truncation = true;
        out = r.to_vec().ok()?;
    }
    Some(out)
}

//! The sockets behind 127.0.0.11 (R14): one UDP loop that sends local answers inline and
//! awaits forwarded ones in tasks of their own, and a TCP accept loop with a cap on connections and
//! deadlines per connection, so a client that connects and sends nothing (or half a
//! message) costs one slot for a bounded time and never blocks anyone else.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::answer::Decision;
use crate::handler::Handler;

/// Concurrent TCP clients per resolver.
pub const MAX_TCP_CONNECTIONS: usize = 128;
/// How long the accept loop rests after a failed accept (out of file descriptors, most
/// likely): the pending connection keeps the listener readable, so retrying at once spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// A TCP client idle this long between queries is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// A started TCP message must arrive whole within this time.
const TCP_MESSAGE: Duration = Duration::from_secs(3);

/// Datagrams taken from the socket per `recvmmsg`, and the room for each: queries are small
/// (a larger one is cut and answered FORMERR). Under load one call takes what queued up and
/// one `sendmmsg` returns the local answers: two syscalls per batch, not two per query.
const BATCH: usize = 8;
const SLOT: usize = 4096;

/// `panic.embedns.test` in wire form: the query that panics the UDP task when the crash point
/// `resolver:udp` is armed (`embedns_conf::crash`).
const PANIC_NAME: &[u8] = b"\x05panic\x07embedns\x04test\x00";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The UDP loop: batches in, local replies out in batches, forwarded ones from their tasks.
pub async fn serve_udp(sock: UdpSocket, handler: Handler) {
    let sock = Arc::new(sock);
    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut got: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    loop {
        got.clear();
        let received = sock
            .async_io(Interest::READABLE, || {
                recv_batch(sock.as_raw_fd(), &mut bufs, &mut got)
            })
            .await;
        if let Err(e) = received {
            tracing::debug!("udp recv: {e}");
            continue;
        }
        for (i, &(n, peer)) in got.iter().enumerate() {
            let query = &bufs[i * SLOT..i * SLOT + n];
            if embedns_conf::crash::armed("resolver:udp") && contains(query, PANIC_NAME) {
                panic!("test panic point resolver:udp");
            }
            match handler.handle(query, false) {
                Decision::Reply { bytes, .. } => replies.push((bytes, peer)),
                Decision::Forward(forwarding) => {
                    let sock = sock.clone();
                    tokio::spawn(async move {
                        let resp = forwarding.reply().await;
                        // The socket takes a reply at once unless its buffer is full.
                        if sock.try_send_to(&resp, peer).is_err() {
                            let _ = sock.send_to(&resp, peer).await;
                        }
                    });
                }
                Decision::Drop => {}
            }
        }
        let sent = send_batch(sock.as_raw_fd(), &replies).unwrap_or(0);
        // What the socket buffer could not take now is sent when it can.
        for (bytes, peer) in replies.drain(..).skip(sent) {
            let _ = sock.send_to(&bytes, peer).await;
        }
    }
}

/// One `recvmmsg`: up to BATCH datagrams into their slots, as (length, sender). A datagram
/// longer than its slot is cut (its tail is not a query we answer anyway). The socket is on
/// 127.0.0.11 or, for R26's IPv6 nameservers, on [::1]: each name has room for either.
fn recv_batch(
    fd: RawFd,
    bufs: &mut [u8],
    got: &mut Vec<(usize, SocketAddr)>,
) -> std::io::Result<()> {
    // SAFETY: all-zero is a valid value for these C structs.
    let mut names: [libc::sockaddr_in6; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..BATCH {
        let slot = bufs[i * SLOT..].as_mut_ptr();
        let name_len = std::mem::size_of::<libc::sockaddr_in6>();
        point(
            &mut hdrs[i],
            &mut iovs[i],
            &mut names[i],
            name_len,
            slot,
            SLOT,
        );
    }
    // SAFETY: every header points at live buffers of the lengths given; the kernel writes at
    // most that much.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            BATCH as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for i in 0..n as usize {
        let Some(peer) = peer_of(&names[i]) else {
            continue;
        };
        got.push(((hdrs[i].msg_len as usize).min(SLOT), peer));
    }
    Ok(())
}

/// The address the kernel wrote into `name` (an IPv4 one sits in its first bytes).
fn peer_of(name: &libc::sockaddr_in6) -> Option<SocketAddr> {
    match i32::from(name.sin6_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in there, which is smaller.
            let v4 = unsafe { &*(name as *const libc::sockaddr_in6).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(name.sin6_addr.s6_addr),
            u16::from_be(name.sin6_port),
            name.sin6_flowinfo,
            name.sin6_scope_id,
        ))),
        _ => None,
    }
}

/// `peer` written into `name`; returns the length of what was written.
fn write_peer(name: &mut libc::sockaddr_in6, peer: &SocketAddr) -> usize {
    match peer {
        SocketAddr::V4(p) => {
            // SAFETY: a sockaddr_in fits in a sockaddr_in6's room, both zeroed C structs.
            let v4 = unsafe { &mut *(name as *mut libc::sockaddr_in6).cast::<libc::sockaddr_in>() };
            v4.sin_family = libc::AF_INET as libc::sa_family_t;
            v4.sin_port = p.port().to_be();
            v4.sin_addr.s_addr = u32::from(*p.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(p) => {
            name.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            name.sin6_port = p.port().to_be();
            name.sin6_addr.s6_addr = p.ip().octets();
            name.sin6_flowinfo = p.flowinfo();
            name.sin6_scope_id = p.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    }
}

/// One `sendmmsg` of the replies; returns how many the socket took.
fn send_batch(fd: RawFd, replies: &[(Vec<u8>, SocketAddr)]) -> std::io::Result<usize> {
    if replies.is_empty() {
        return Ok(0);
    }
    let k = replies.len().min(BATCH);
    // SAFETY: all-zero is a valid value for these C structs.
    let mut names: [libc::sockaddr_in6; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, (bytes, peer)) in replies.iter().take(k).enumerate() {
        let name_len = write_peer(&mut names[i], peer);
        let data = bytes.as_ptr() as *mut u8; // only read by sendmmsg
        point(
            &mut hdrs[i],
            &mut iovs[i],
            &mut names[i],
            name_len,
            data,
            bytes.len(),
        );
    }
    // SAFETY: every header points at live buffers of the lengths given; the kernel only reads.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), k as u32, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Points a message header at one buffer and one address of `name_len` bytes.
fn point(
    hdr: &mut libc::mmsghdr,
    iov: &mut libc::iovec,
    name: &mut libc::sockaddr_in6,
    name_len: usize,
    data: *mut u8,
    len: usize,
) {
    iov.iov_base = data.cast();
    iov.iov_len = len;
    hdr.msg_hdr.msg_iov = iov;
    hdr.msg_hdr.msg_iovlen = 1;
    hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_in6).cast();
    hdr.msg_hdr.msg_namelen = name_len as u32;
}

/// Failed accepts, logged at most every 2 s.
static ACCEPT_FAILED: crate::log::Limiter = crate::log::Limiter::new(Duration::from_secs(2));

/// The TCP accept loop, at most MAX_TCP_CONNECTIONS clients, each with its deadlines.
pub async fn serve_tcp(listener: TcpListener, handler: Handler) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                if let Some(held) = ACCEPT_FAILED.allow() {
                    tracing::warn!(held, "tcp accept: {e}");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many TCP clients; closing a new one");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(stream, &handler).await {
                tracing::debug!("tcp client: {e}");
            }
        });
    }
}

async fn serve_connection(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    loop {
        let len = match timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            Ok(Err(_)) | Err(_) => return Ok(()), // closed or idle
        };
        let mut msg = vec![0u8; len];
        timeout(TCP_MESSAGE, stream.read_exact(&mut msg))
            .await
            .map_err(|_| std::io::Error::other("half a message"))??;
        let resp = match handler.handle(&msg, true) {
            Decision::Reply { bytes, .. } => bytes,
            Decision::Forward(forwarding) => forwarding.reply().await,
            Decision::Drop => return Ok(()),
        };
        let mut framed = Vec::with_capacity(resp.len() + 2);
        framed.extend_from_slice(&(resp.len() as u16).to_be_bytes());
        framed.extend_from_slice(&resp);
        timeout(TCP_MESSAGE, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::other("client does not read"))??;
    }
}

#[cfg(test)]
mod tests {
    //! The UDP loop on a real socket of the test's loopback: several queries in one batch,
    //! each answered to its sender, and a datagram that is no query dropped.

    use std::time::Duration;

    use hickory_proto::op::Message;

    use super::*;
    use crate::handler::tests::{handler, query};

    #[tokio::test]
    async fn a_batch_of_queries_gets_each_its_reply_and_a_response_none() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = handler(dir.path());
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let serving = tokio::spawn(serve_udp(server, h));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Sent first, so a reply to it would come first and take another's place below.
        let mut not_a_query = query("web.");
        not_a_query[..2].copy_from_slice(&999u16.to_be_bytes());
        not_a_query[2] |= 0x80;
        client.send_to(&not_a_query, addr).await.unwrap();
        for id in 1..=BATCH as u16 + 3 {
            let mut q = query(if id.is_multiple_of(2) {
                "web."
            } else {
                "nothere."
            });
            q[..2].copy_from_slice(&id.to_be_bytes());
            client.send_to(&q, addr).await.unwrap();
        }
        let mut ids = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 1..=BATCH + 3 {
            let got = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf));
            let n = got.await.expect("a reply within 5 s").unwrap();
            let reply = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(
                reply.answers.len(),
                usize::from(reply.metadata.id.is_multiple_of(2))
            );
            ids.push(reply.metadata.id);
        }
        ids.sort();
        assert_eq!(
            ids,
            (1..=BATCH as u16 + 3).collect::<Vec<_>>(),
            "one reply each, none to 999"
        );
        serving.abort();
    }
}

//! The sockets behind 127.0.0.11 (R14): one UDP loop that answers local names inline and
//! hands misses to forwarding tasks, and a TCP accept loop with a cap on connections and
//! deadlines per connection, so a client that connects and sends nothing (or half a
//! message) costs one slot for a bounded time and never blocks anyone else.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::answer::{handle, Handled};
use crate::forward::Forwarder;
use crate::state::Resolver;

/// Concurrent TCP clients per resolver.
const MAX_TCP_CONNECTIONS: usize = 128;
/// A TCP client idle this long between queries is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// A started TCP message must arrive whole within this time.
const TCP_MESSAGE: Duration = Duration::from_secs(3);

/// Queries are small; a larger datagram is cut and answered FORMERR.
const UDP_QUERY_MAX: usize = 16 * 1024;

pub async fn serve_udp(sock: UdpSocket, st: Arc<Resolver>, fwd: Arc<Forwarder>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; UDP_QUERY_MAX];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("udp recv: {e}");
                continue;
            }
        };
        match handle(&buf[..n], &st, false) {
            Handled::Reply(bytes) => {
                if sock.try_send_to(&bytes, peer).is_err() {
                    let _ = sock.send_to(&bytes, peer).await;
                }
            }
            Handled::Forward { question_end } => {
                let query = buf[..n].to_vec();
                let (sock, fwd) = (sock.clone(), fwd.clone());
                tokio::spawn(async move {
                    let resp = fwd.forward(&query, question_end, false).await;
                    let _ = sock.send_to(&resp, peer).await;
                });
            }
            Handled::Drop => {}
        }
    }
}

pub async fn serve_tcp(listener: TcpListener, st: Arc<Resolver>, fwd: Arc<Forwarder>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("tcp accept: {e}");
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many TCP clients; closing a new one");
            continue;
        };
        let (st, fwd) = (st.clone(), fwd.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(stream, &st, &fwd).await {
                tracing::debug!("tcp client: {e}");
            }
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    st: &Resolver,
    fwd: &Forwarder,
) -> std::io::Result<()> {
    loop {
        let len = match timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            Ok(Err(_)) | Err(_) => return Ok(()), // closed or idle
        };
        let mut msg = vec![0u8; len];
        timeout(TCP_MESSAGE, stream.read_exact(&mut msg))
            .await
            .map_err(|_| std::io::Error::other("half a message"))??;
        let resp = match handle(&msg, st, true) {
            Handled::Reply(bytes) => bytes,
            Handled::Forward { question_end } => fwd.forward(&msg, question_end, true).await,
            Handled::Drop => return Ok(()),
        };
        let mut framed = Vec::with_capacity(resp.len() + 2);
        framed.extend_from_slice(&(resp.len() as u16).to_be_bytes());
        framed.extend_from_slice(&resp);
        timeout(TCP_MESSAGE, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::other("client does not read"))??;
    }
}

//! Sockets in the host's network namespace, for upstreams taken from the host's resolv.conf
//! (R18: a host resolver on 127.0.0.53 works). A socket keeps the netns it was created in, so
//! one thread stays in the host netns (it is started before the main thread enters the
//! container's) and makes sockets on request; they are then used from the runtime like any
//! other.
//!
//! Asking that thread for a socket and waiting for it costs two thread wake-ups, so the
//! thread keeps a few IPv4 UDP sockets made ahead: a new upstream socket (`channel.rs`, one
//! every 32 queries) takes one, and the thread replaces it in the background.
//!
//! Only a resolver one of whose networks takes its upstreams from the host's resolv.conf has
//! that thread (R22 may bring a loopback nameserver there at any time): on an internal
//! network, or one with explicit upstreams only, the resolver has no presence in the host's
//! netns at all, so a resolver taken over there cannot reach the host's loopback services.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use embedns_conf::user::ResolverUser;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use tokio::sync::oneshot;

type Reply = oneshot::Sender<nix::Result<OwnedFd>>;

/// IPv4 UDP sockets kept made ahead (a new upstream socket takes one every 32 queries).
const SPARE: usize = 2;
/// The thread is asked for more when this many or fewer are left.
const LOW: usize = 1;

/// What the thread is asked for.
enum Ask {
    Socket(AddressFamily, SockType, Reply),
    /// Make spare sockets until there are [`SPARE`].
    TopUp,
}

/// Sockets made ahead, and whether the thread has been asked to make more.
#[derive(Default)]
struct Spare {
    sockets: Mutex<Vec<OwnedFd>>,
    asked: AtomicBool,
}

impl Spare {
    fn fill(&self) {
        self.asked.store(false, Ordering::Release);
        while self.sockets.lock().unwrap().len() < SPARE {
            match new_socket(AddressFamily::Inet, SockType::Datagram) {
                Ok(fd) => self.sockets.lock().unwrap().push(fd),
                Err(e) => {
                    tracing::debug!("host-netns socket: {e}");
                    return;
                }
            }
        }
    }
}

/// A handle to the host-netns socket maker.
#[derive(Clone)]
pub struct HostSockets {
    tx: Option<mpsc::Sender<Ask>>,
    spare: Arc<Spare>,
}

fn new_socket(family: AddressFamily, ty: SockType) -> nix::Result<OwnedFd> {
    socket(
        family,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

impl HostSockets {
    /// No host-netns thread: every request fails (no network of the resolver needs one).
    pub fn none() -> HostSockets {
        HostSockets {
            tx: None,
            spare: Arc::default(),
        }
    }

    /// Starts the maker thread in the calling thread's (the host's) netns; it runs as
    /// `user` without capabilities from its first instruction on, and may connect TCP to
    /// `tcp_ports` only (`sys::restrict_tcp`).
    pub fn start(user: ResolverUser, tcp_ports: Vec<u16>) -> std::io::Result<HostSockets> {
        let (tx, rx) = mpsc::channel::<Ask>();
        let (dropped_tx, dropped) = mpsc::channel::<Result<(), String>>();
        let spare = Arc::new(Spare::default());
        let made = spare.clone();
        std::thread::Builder::new()
            .name("host-netns".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // This thread needs no capability to make sockets (see sys::drop_privileges).
                let dropped = crate::confine::drop_privileges(user)
                    .and_then(|()| crate::confine::restrict_tcp(&tcp_ports).map(drop))
                    .map_err(|e| format!("{e:#}"));
                let failed = dropped.is_err();
                let _ = dropped_tx.send(dropped);
                if failed {
                    return;
                }
                made.fill();
                for ask in rx {
                    match ask {
                        Ask::Socket(family, ty, reply) => {
                            let _ = reply.send(new_socket(family, ty));
                        }
                        Ask::TopUp => made.fill(),
                    }
                }
            })?;
        // Readiness is reported only once this thread holds no capability.
        match dropped.recv() {
            Ok(Ok(())) => Ok(HostSockets {
                tx: Some(tx),
                spare,
            }),
            Ok(Err(e)) => Err(std::io::Error::other(format!(
                "the host-netns thread cannot drop its privileges: {e}"
            ))),
            Err(_) => Err(std::io::Error::other("the host-netns thread died")),
        }
    }

    /// Whether there is a host-netns thread.
    pub fn present(&self) -> bool {
        self.tx.is_some()
    }

    /// A new non-blocking socket of the host netns: a spare one if there is one (the caller
    /// then calls [`HostSockets::top_up`]).
    pub async fn socket(&self, v6: bool, ty: SockType) -> std::io::Result<OwnedFd> {
        if !v6 && ty == SockType::Datagram {
            if let Some(fd) = self.spare.sockets.lock().unwrap().pop() {
                return Ok(fd);
            }
        }
        let family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(|| {
            std::io::Error::other(
                "no host-netns thread: no network of this resolver takes the host's upstreams",
            )
        })?;
        tx.send(Ask::Socket(family, ty, reply))
            .map_err(|_| std::io::Error::other("host-netns thread is gone"))?;
        rx.await
            .map_err(|_| std::io::Error::other("host-netns thread is gone"))?
            .map_err(std::io::Error::from)
    }

    /// Asks the thread to replace the spare sockets taken, once [`LOW`] or fewer are left
    /// (once, however many were taken).
    pub fn top_up(&self) {
        if let Some(tx) = &self.tx {
            if self.spare.sockets.lock().unwrap().len() <= LOW
                && !self.spare.asked.swap(true, Ordering::AcqRel)
            {
                let _ = tx.send(Ask::TopUp);
            }
        }
    }
}

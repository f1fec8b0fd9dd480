//! The request-handler seam (hickory-server's `RequestHandler` is the model): one place
//! decides, for each message, between a local answer and forwarding, and carries the
//! forwarding out; the server's loops only receive and send.

use std::sync::Arc;

use crate::answer::{handle_read, Ask, Decision};
use crate::forward::{Forwarder, Prepared, Route};
use crate::lookup::View;
use crate::state::{QueryCounters, Resolver};
use crate::wire::Query;

/// What the loops hand every message to.
#[derive(Clone)]
pub struct Handler {
    st: Arc<Resolver>,
    fwd: Arc<Forwarder>,
}

/// What the loops do with one message: the answer path's decision, its forward carried out
/// here.
pub type Step = Decision<Forwarding>;

/// A query on its way upstream.
pub struct Forwarding {
    fwd: Arc<Forwarder>,
    query: Vec<u8>,
    question_end: usize,
    tcp: bool,
    /// R16a: the local answer, if the upstream says NXDOMAIN or nothing is forwarded.
    local: Option<Vec<u8>>,
    route: Route,
}

impl Handler {
    /// The handler of one resolver.
    pub fn new(st: Arc<Resolver>, fwd: Arc<Forwarder>) -> Handler {
        Handler { st, fwd }
    }

    /// Decides what `query` gets; `tcp` lifts the size limit (R13).
    pub fn handle(&self, query: &[u8], tcp: bool) -> Step {
        // Read once: the fast path, the cache and the coalescing all take this.
        let read = Query::parse(query);
        let decided = {
            let nets = self.st.networks.read().unwrap();
            handle_read(query, read.as_ref(), &View { networks: &nets }, tcp)
        };
        match decided {
            Decision::Reply { bytes, local } => {
                if local {
                    QueryCounters::bump(&self.st.counters.local);
                }
                Decision::Reply { bytes, local }
            }
            Decision::Forward(Ask {
                question_end,
                fallback,
            }) => {
                // Only what no peer answers is the cache's (R34: peers come first).
                match self.fwd.prepare(read.as_ref(), tcp, fallback.is_none()) {
                    Prepared::Hit(bytes) => Decision::Reply {
                        bytes,
                        local: false,
                    },
                    Prepared::Ask(route) => Decision::Forward(Forwarding {
                        fwd: self.fwd.clone(),
                        query: query.to_vec(),
                        question_end,
                        tcp,
                        local: fallback,
                        route,
                    }),
                }
            }
            Decision::Drop => Decision::Drop,
        }
    }
}

impl Forwarding {
    /// The reply: the upstream's (R15), or R16a's local one, or SERVFAIL/REFUSED.
    pub async fn reply(self) -> Vec<u8> {
        let Forwarding {
            fwd,
            query,
            question_end,
            tcp,
            local,
            route,
        } = self;
        match local {
            // Boxed: R16a's rarer path would otherwise size every forwarded query's task.
            Some(local) => {
                Box::pin(fwd.forward_first(&query, question_end, tcp, &route, local)).await
            }
            None => fwd.forward(&query, question_end, tcp, &route).await,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The decision carried out, on a resolver whose network is a real index in a temporary
    //! state directory and which has no upstream (what would be forwarded fails at once).

    use std::net::IpAddr;

    use embedns_conf::paths::StatePaths;
    use embedns_conf::record::Record;
    use embedns_conf::store::NetworkStore;
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::hostns::HostSockets;
    use crate::network_index::NetworkIndex;

    /// A resolver for container `cli` on network `n1`, whose peer `web` is 10.0.0.2, with
    /// `corp.example` as its search domain.
    pub(crate) fn handler(dir: &std::path::Path) -> (Handler, Arc<Resolver>) {
        let paths = StatePaths::new(dir);
        let store = NetworkStore::new(&paths, "n1");
        let lock = store.lock().unwrap();
        let ip = |s: &str| vec![s.parse::<IpAddr>().unwrap()];
        let mut me = Record::with_defaults("n1", "cli", Some("cli"), &[], ip("10.0.0.1"));
        me.search = vec!["corp.example".into()];
        for r in [
            me.clone(),
            Record::with_defaults("n1", "web", Some("web"), &[], ip("10.0.0.2")),
        ] {
            store.put(&lock, &r).unwrap();
        }
        let st = Arc::new(Resolver::new("cli", paths.clone()));
        st.networks
            .write()
            .unwrap()
            .push(NetworkIndex::new(&paths, "n1", vec![me]));
        let fwd = Arc::new(Forwarder::new(st.clone(), HostSockets::none()));
        (Handler::new(st.clone(), fwd), st)
    }

    pub(crate) fn query(name: &str) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn rcode(bytes: &[u8]) -> ResponseCode {
        Message::from_vec(bytes).unwrap().metadata.response_code
    }

    #[tokio::test]
    async fn a_peer_is_answered_here_and_counted_as_local() {
        let dir = tempfile::tempdir().unwrap();
        let (h, st) = handler(dir.path());
        let Decision::Reply { bytes, local } = h.handle(&query("web."), false) else {
            panic!("a peer's name is answered locally");
        };
        assert!(local);
        let reply = Message::from_vec(&bytes).unwrap();
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            st.counters.local.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // A response, not a query: no reply at all.
        let mut not_a_query = query("web.");
        not_a_query[2] |= 0x80;
        assert!(matches!(h.handle(&not_a_query, false), Decision::Drop));
    }

    #[tokio::test]
    async fn an_outside_name_is_forwarded_and_fails_without_an_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let (h, st) = handler(dir.path());
        let Decision::Forward(f) = h.handle(&query("example.org."), false) else {
            panic!("an outside name is forwarded (R15)");
        };
        let reply = f.reply().await;
        assert_eq!(rcode(&reply), ResponseCode::ServFail);
        assert_eq!(reply[..2], [0, 7], "the client's ID");
        assert_eq!(
            st.counters
                .failed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[tokio::test]
    async fn r16a_a_search_qualified_peer_is_forwarded_first_and_answered_locally_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let (h, st) = handler(dir.path());
        let Decision::Forward(f) = h.handle(&query("web.corp.example."), false) else {
            panic!("R16a: forwarded first");
        };
        let reply = Message::from_vec(&f.reply().await).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            reply.answers.len(),
            1,
            "the local answer, no upstream being there"
        );
        assert_eq!(
            st.counters.local.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}

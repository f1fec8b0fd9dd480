//! The request-handler seam (hickory-server's `RequestHandler` is the model): one place
//! decides, for each message, between a local answer and forwarding, and carries the
//! forwarding out; the server's loops only receive and send.

use std::sync::Arc;

use crate::answer::{handle, Ask, Decision};
use crate::forward::{Forwarder, Prepared, Route};
use crate::lookup::View;
use crate::state::{QueryCounters, Resolver};

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
        let decided = {
            let nets = self.st.networks.read().unwrap();
            handle(query, &View { networks: &nets }, tcp)
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
                match self.fwd.prepare(query, tcp, fallback.is_none()) {
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

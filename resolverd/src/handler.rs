//! The request-handler seam (hickory-server's `RequestHandler` is the model): one place
//! decides, for each message, between a local answer and forwarding, and carries the
//! forwarding out; the server's loops only receive and send.

use std::sync::Arc;

use crate::answer::{handle, Handled};
use crate::forward::{Forwarder, Prepared, Route};
use crate::state::Resolver;

/// What the loops hand every message to.
#[derive(Clone)]
pub struct Handler {
    st: Arc<Resolver>,
    fwd: Arc<Forwarder>,
}

/// What to do with one message.
pub enum Step {
    /// Send these bytes now.
    Reply(Vec<u8>),
    /// The reply comes from upstream: await [`Forwarding::reply`] (UDP in a task of its own,
    /// TCP in the connection's).
    Forward(Forwarding),
    /// Not a query: no reply.
    Drop,
}

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
        let forwarding = |question_end, local: Option<Vec<u8>>| {
            // Only what no peer answers is the cache's (R34: peers come first).
            match self.fwd.prepare(query, tcp, local.is_none()) {
                Prepared::Hit(bytes) => Step::Reply(bytes),
                Prepared::Ask(route) => Step::Forward(Forwarding {
                    fwd: self.fwd.clone(),
                    query: query.to_vec(),
                    question_end,
                    tcp,
                    local,
                    route,
                }),
            }
        };
        match handle(query, &self.st, tcp) {
            Handled::Reply(bytes) => Step::Reply(bytes),
            Handled::Forward { question_end } => forwarding(question_end, None),
            Handled::ForwardFirst {
                question_end,
                local,
            } => forwarding(question_end, Some(local)),
            Handled::Drop => Step::Drop,
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

//! R34a: identical questions in flight at once are forwarded once. The first query of a
//! question leads (it is forwarded as any other, R19's order, timeouts and failover
//! included); queries of the same question that arrive while it is in flight wait for its
//! reply, and each gets it with its own ID and its own question's case, and without the
//! options of the reply's OPT record (a COOKIE answered the leader's exchange; the cache takes
//! them out of what it keeps too). dnsmasq coalesces too; Docker and aardvark-dns forward
//! every query.
//!
//! "The same question" is the cache's key (R34: the question case-insensitively, RD, CD, DO
//! and whether EDNS is there) plus the EDNS payload size, the transport (a UDP reply may be
//! truncated, a TCP one not) and the upstream set it is asked of. Never coalesced: a query the
//! cache would not answer (another shape, EDNS options other than a cookie or padding), and
//! waiters past [`MAX_WAITERS`] for one question, which are forwarded on their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::cache::Asked;

/// Queries that may wait for one question's reply; more are forwarded on their own.
pub const MAX_WAITERS: usize = 64;

/// The key of a query the cache could answer (`asked`; one it never could is never
/// coalesced), asked over `tcp` of the upstream set `generation`.
pub fn key(asked: &Asked, tcp: bool, generation: u64) -> Vec<u8> {
    let mut key = asked.key().to_vec();
    key.extend_from_slice(&asked.edns_payload().unwrap_or(0).to_be_bytes());
    key.push(u8::from(tcp));
    key.extend_from_slice(&generation.to_be_bytes());
    key
}

/// Where a waiting query is handed the reply.
type Waiter = oneshot::Sender<Arc<Vec<u8>>>;

/// The questions being forwarded now, with the queries waiting for each.
#[derive(Default)]
pub struct InFlight {
    table: Mutex<HashMap<Vec<u8>, Vec<Waiter>>>,
}

/// A query's part in its question's forwarding.
pub enum Turn<'a> {
    /// Forward it, then hand the reply to the waiters ([`Leader::finish`]).
    Lead(Leader<'a>),
    /// Wait for the leader's reply (an error: the leader was dropped without one).
    Wait(oneshot::Receiver<Arc<Vec<u8>>>),
    /// Forward it on its own: too many wait already.
    Alone,
}

impl InFlight {
    /// Joins the forwarding of question `key`: leads it if none is in flight.
    pub fn join(&self, key: Vec<u8>) -> Turn<'_> {
        let mut table = self.table.lock().unwrap();
        match table.get_mut(&key) {
            Some(waiters) if waiters.len() < MAX_WAITERS => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Turn::Wait(rx)
            }
            Some(_) => Turn::Alone,
            None => {
                table.insert(key.clone(), Vec::new());
                Turn::Lead(Leader {
                    table: self,
                    key,
                    done: false,
                })
            }
        }
    }

    /// How many questions are in flight.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The query that forwards its question; dropped without [`Leader::finish`] (its task
/// cancelled), it leaves its waiters to forward on their own.
pub struct Leader<'a> {
    table: &'a InFlight,
    key: Vec<u8>,
    done: bool,
}

impl Leader<'_> {
    /// Hands `reply` to every query waiting for it; later ones lead anew.
    pub fn finish(mut self, reply: &[u8]) {
        self.done = true;
        let waiters = self.table.table.lock().unwrap().remove(&self.key);
        let shared = Arc::new(reply.to_vec());
        for w in waiters.into_iter().flatten() {
            let _ = w.send(shared.clone());
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.table.table.lock().unwrap().remove(&self.key);
        }
    }
}

/// The leader's `reply` as the waiter's `query` gets it: its ID, its question's bytes (the
/// same name but for case), no OPT options. `None` when the reply does not read to its end or
/// is not to this question: the waiter is then forwarded on its own.
pub fn reply_for(reply: &[u8], query: &[u8], question_end: usize) -> Option<Vec<u8>> {
    let mut out = crate::cache::for_another_client(reply, question_end)?;
    if query.len() < question_end
        || !out[12..question_end].eq_ignore_ascii_case(&query[12..question_end])
    {
        return None;
    }
    out[..2].copy_from_slice(&query[..2]);
    out[12..question_end].copy_from_slice(&query[12..question_end]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Question;

    /// [`key`] of a query's bytes, `None` for one the cache never answers.
    fn key_of(query: &[u8], tcp: bool, generation: u64) -> Option<Vec<u8>> {
        Question::parse(query).map(|q| key(&q, tcp, generation))
    }
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query(id: u16, name: &str, edns_payload: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if let Some(p) = edns_payload {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn the_same_question_in_any_case_waits_for_the_first_and_gets_its_own_id_and_case() {
        let t = InFlight::default();
        let first = query(1, "x.fwd.test.", None);
        let second = query(2, "X.Fwd.Test.", None);
        let (k1, k2) = (
            key_of(&first, false, 7).unwrap(),
            key_of(&second, false, 7).unwrap(),
        );
        assert_eq!(k1, k2);
        let Turn::Lead(leader) = t.join(k1) else {
            panic!("the first leads")
        };
        let Turn::Wait(mut rx) = t.join(k2.clone()) else {
            panic!("the second waits")
        };
        let mut reply = first.clone();
        reply[2] |= 0x80;
        leader.finish(&reply);
        assert!(t.is_empty());
        let got = rx.try_recv().unwrap();
        let end = second.len();
        let mine = reply_for(&got, &second, end).unwrap();
        assert_eq!(&mine[..2], &2u16.to_be_bytes());
        assert_eq!(&mine[12..end], &second[12..end], "the waiter's case");
        // After the reply, the question leads anew.
        assert!(matches!(t.join(k2), Turn::Lead(_)));
    }

    #[test]
    fn a_waiter_never_gets_the_leaders_cookie() {
        let leader = query(1, "x.fwd.test.", Some(1232));
        let waiter = query(2, "x.fwd.test.", Some(1232));
        // The upstream's reply: the leader's question, an OPT record carrying a COOKIE option.
        let mut reply = leader.clone();
        reply[2] |= 0x80;
        let rdlen_at = reply.len() - 2;
        reply[rdlen_at..].copy_from_slice(&12u16.to_be_bytes());
        reply.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        let end = waiter.len() - 11;
        let mine = reply_for(&reply, &waiter, end).unwrap();
        assert_eq!(
            mine.len(),
            waiter.len(),
            "the OPT record without its option"
        );
        assert_eq!(&mine[mine.len() - 2..], &[0, 0]);
        assert_eq!(&mine[..2], &2u16.to_be_bytes());
        // A reply that does not read to its end is not shared.
        assert_eq!(reply_for(&reply[..reply.len() - 3], &waiter, end), None);
    }

    #[test]
    fn what_is_never_coalesced() {
        let plain = query(1, "x.fwd.test.", None);
        let k = key_of(&plain, false, 1).unwrap();
        // Another transport, upstream set or EDNS payload is another question.
        assert_ne!(key_of(&plain, true, 1).unwrap(), k);
        assert_ne!(key_of(&plain, false, 2).unwrap(), k);
        assert_ne!(
            key_of(&query(1, "x.fwd.test.", Some(1232)), false, 1).unwrap(),
            k
        );
        // Not a query the cache would answer: no key.
        assert_eq!(key_of(&plain[..5], false, 1), None);
    }

    #[test]
    fn waiters_are_bounded_and_a_dropped_leader_frees_them() {
        let t = InFlight::default();
        let k = key_of(&query(1, "a.test.", None), false, 1).unwrap();
        let leader = t.join(k.clone());
        let mut waiting = Vec::new();
        for _ in 0..MAX_WAITERS {
            match t.join(k.clone()) {
                Turn::Wait(rx) => waiting.push(rx),
                _ => panic!("room for {MAX_WAITERS} waiters"),
            }
        }
        assert!(matches!(t.join(k.clone()), Turn::Alone));
        drop(leader);
        assert!(t.is_empty());
        for mut rx in waiting {
            assert!(
                rx.try_recv().is_err(),
                "no reply: they forward on their own"
            );
        }
    }
}

//! From query bytes to a local reply or a decision to forward (R9–R13, R16), over the
//! asking container's view of its networks (any [`Peers`]: the mapped index in production,
//! `MemoryNetwork` in tests and fuzzing): header flags as Docker sets them, and truncation to
//! the client's size that never cuts a record. Pure: no I/O, no counters.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::fast::Simple;
use crate::lookup::{Outcome, View};
use crate::peers::Peers;
use crate::wire::{header_only, question_end, reply_limit, Query, OUR_EDNS_PAYLOAD};

/// What becomes of one datagram or TCP message: the one decision of the answer path and of
/// the server's loops. `F` is what a forward carries: an [`Ask`] here, the handler's
/// `Forwarding` (which also asks the cache, R34) in the loops.
pub enum Decision<F> {
    /// Send these bytes now: a local answer (`local`, counted as one) or a reply the resolver
    /// makes itself (FORMERR, NOTIMP, BADVERS; a cached answer in the loops).
    Reply { bytes: Vec<u8>, local: bool },
    /// The reply comes from upstream (R15).
    Forward(F),
    /// Not a query (a response, or less than a header): no reply.
    Drop,
}

/// A query to forward unchanged (R15) and, for R16a, the local answer to give instead if the
/// upstream says NXDOMAIN or there is no upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub question_end: usize,
    pub fallback: Option<Vec<u8>>,
}

impl<F> Decision<F> {
    fn error(bytes: Vec<u8>) -> Self {
        Decision::Reply {
            bytes,
            local: false,
        }
    }

    fn answer(bytes: Vec<u8>) -> Self {
        Decision::Reply { bytes, local: true }
    }
}

/// Handles one query asked by the container whose view is `view`. `tcp` lifts the size limit
/// to 65535 (R13).
pub fn handle<P: Peers>(bytes: &[u8], view: &View<P>, tcp: bool) -> Decision<Ask> {
    handle_read(bytes, Query::parse(bytes).as_ref(), view, tcp)
}

/// [`handle`] of a query the caller read already (`read`: [`Query::parse`] of `bytes`).
pub fn handle_read<P: Peers>(
    bytes: &[u8],
    read: Option<&Query>,
    view: &View<P>,
    tcp: bool,
) -> Decision<Ask> {
    // What is too short or not a query is never of the simple shape; the general path drops it.
    if let Some(q) = read.and_then(Simple::of) {
        let outcome = view.lookup(q.name(), q.qtype);
        if outcome == Outcome::Forward {
            return Decision::Forward(Ask {
                question_end: q.question_end,
                fallback: None,
            });
        }
        if let Outcome::ForwardFirst(local) = &outcome {
            if let Some(local) = q.reply(local, q.size_limit(tcp)) {
                return Decision::Forward(Ask {
                    question_end: q.question_end,
                    fallback: Some(local),
                });
            }
        }
        if let Some(reply) = q.reply(&outcome, q.size_limit(tcp)) {
            return Decision::answer(reply);
        }
    }
    handle_general(bytes, view, tcp)
}

/// Any query, through hickory-proto's `Message`: what the fast path (`fast.rs`) does not
/// take, and the reference it is tested against.
pub fn handle_general<P: Peers>(bytes: &[u8], view: &View<P>, tcp: bool) -> Decision<Ask> {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return Decision::Drop;
    }
    let (msg, name) = match read_query(bytes) {
        Ok(q) => q,
        Err(decided) => return decided,
    };
    if let Some(reply) = badvers(&msg) {
        return Decision::error(reply);
    }
    let outcome = view.lookup(&name, msg.queries[0].query_type());
    if outcome == Outcome::Forward {
        return forward(bytes);
    }
    if let Outcome::ForwardFirst(local) = &outcome {
        let local = local_reply(&msg, local, size_limit(&msg, tcp));
        return match forward(bytes) {
            Decision::Forward(ask) => Decision::Forward(Ask {
                fallback: Some(local),
                ..ask
            }),
            other => other,
        };
    }
    Decision::answer(local_reply(&msg, &outcome, size_limit(&msg, tcp)))
}

/// The general path's reading of `query` (the name it looks up, the type) and its reply
/// for `outcome`: what the fast path must equal, byte for byte (unit tests, fuzzing).
pub fn general_reply(
    query: &[u8],
    outcome: &Outcome,
    tcp: bool,
) -> Option<(String, RecordType, Vec<u8>)> {
    let (msg, name) = read_query(query).ok()?;
    let qtype = msg.queries[0].query_type();
    Some((
        name,
        qtype,
        local_reply(&msg, outcome, size_limit(&msg, tcp)),
    ))
}

/// R14: a query whose OPT record has a version above 0 gets BADVERS (RFC 6891 6.1.3), with
/// our own version-0 OPT record; nothing is looked up or forwarded.
fn badvers(msg: &Message) -> Option<Vec<u8>> {
    msg.edns.as_ref().filter(|e| e.version() > 0)?;
    Some(encode_within(reply_to(msg, ResponseCode::BADVERS), 512))
}

/// A query with one question of class IN or ANY, and its name normalized for the lookup;
/// anything else is answered (FORMERR, NOTIMP) or forwarded as it is.
fn read_query(bytes: &[u8]) -> Result<(Message, String), Decision<Ask>> {
    let msg = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => return Err(Decision::error(header_only(bytes, ResponseCode::FormErr))),
    };
    if msg.metadata.op_code != OpCode::Query {
        return Err(Decision::error(header_only(bytes, ResponseCode::NotImp)));
    }
    if msg.queries.len() != 1 {
        return Err(Decision::error(header_only(bytes, ResponseCode::FormErr)));
    }
    let q = &msg.queries[0];
    if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Err(forward(bytes));
    }
    // R6: lower case, no trailing dot (in place: one allocation per query).
    let mut name = q.name().to_ascii();
    name.make_ascii_lowercase();
    if name.ends_with('.') {
        name.pop();
    }
    Ok((msg, name))
}

fn forward(bytes: &[u8]) -> Decision<Ask> {
    match question_end(bytes) {
        Some(question_end) => Decision::Forward(Ask {
            question_end,
            fallback: None,
        }),
        None => Decision::error(header_only(bytes, ResponseCode::FormErr)),
    }
}

fn size_limit(msg: &Message, tcp: bool) -> usize {
    reply_limit(msg.edns.as_ref().map(Edns::max_payload), tcp)
}

/// A reply skeleton for `query`: ID and question echoed, RD copied, RA=1, AA=0 (R12).
pub fn reply_to(query: &Message, rcode: ResponseCode) -> Message {
    let mut resp = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = false;
    resp.metadata.checking_disabled = query.metadata.checking_disabled;
    resp.metadata.response_code = rcode;
    resp.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_EDNS_PAYLOAD).set_version(0);
        resp.set_edns(edns);
    }
    resp
}

fn local_reply(query: &Message, outcome: &Outcome, limit: usize) -> Vec<u8> {
    let mut resp = reply_to(query, ResponseCode::NoError);
    let qname: Name = query.queries[0].name().clone();
    match outcome {
        Outcome::Addresses(ips, ttl) => {
            for ip in ips {
                let rdata = match ip {
                    std::net::IpAddr::V4(v4) => RData::A(A(*v4)),
                    std::net::IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                resp.add_answer(Record::from_rdata(qname.clone(), *ttl, rdata));
            }
        }
        Outcome::Pointer(target, ttl) => match Name::from_ascii(target) {
            Ok(n) => {
                resp.add_answer(Record::from_rdata(qname, *ttl, RData::PTR(PTR(n))));
            }
            Err(_) => resp.metadata.response_code = ResponseCode::ServFail,
        },
        Outcome::Unavailable => resp.metadata.response_code = ResponseCode::ServFail,
        Outcome::NoData(_) | Outcome::Forward | Outcome::ForwardFirst(_) => {}
    }
    encode_within(resp, limit)
}

/// Encodes, dropping whole answers and setting TC until the message fits `limit`.
pub fn encode_within(mut resp: Message, limit: usize) -> Vec<u8> {
    let full = match resp.to_vec() {
        Ok(b) => b,
        Err(_) => return servfail_bytes(&resp),
    };
    if full.len() <= limit {
        return full;
    }
    resp.metadata.truncation = true;
    // Start from a proportional guess, then step down until it fits.
    let n = resp.answers.len();
    let mut keep = (n * limit / full.len()).min(n);
    loop {
        resp.answers.truncate(keep);
        if let Ok(b) = resp.to_vec() {
            if b.len() <= limit || keep == 0 {
                return b;
            }
        }
        if keep == 0 {
            return servfail_bytes(&resp);
        }
        keep -= 1;
    }
}

fn servfail_bytes(resp: &Message) -> Vec<u8> {
    let mut bytes = vec![0u8; 12];
    bytes[..2].copy_from_slice(&resp.metadata.id.to_be_bytes());
    header_only(&bytes, ResponseCode::ServFail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::error_for_raw;
    use hickory_proto::op::Query;
    use hickory_proto::rr::RecordType;

    fn query(name: &str, t: RecordType, edns: Option<u16>) -> Message {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.metadata.recursion_desired = true;
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m
    }

    #[test]
    fn flags_and_truncation() {
        // R12, R13: 40 AAAA answers exceed 512 bytes; whole records are dropped, TC set.
        let q = query("Many.", RecordType::AAAA, None);
        let ips: Vec<std::net::IpAddr> = (0..40u16)
            .map(|i| std::net::IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i]))
            .collect();
        let bytes = local_reply(&q, &Outcome::Addresses(ips.clone(), 600), 512);
        assert!(bytes.len() <= 512);
        let r = Message::from_vec(&bytes).unwrap();
        assert!(r.metadata.truncation);
        assert!(r.metadata.recursion_available && !r.metadata.authoritative);
        assert!(r.metadata.recursion_desired);
        assert_eq!(r.metadata.id, q.metadata.id);
        assert_eq!(r.queries[0].name().to_ascii(), "Many.");
        assert!(!r.answers.is_empty() && r.answers.len() < 40);
        let full =
            Message::from_vec(&local_reply(&q, &Outcome::Addresses(ips, 600), 65535)).unwrap();
        assert_eq!(full.answers.len(), 40);
        assert!(!full.metadata.truncation);
    }

    #[test]
    fn r13_truncation_compresses_names_so_30_a_records_fit_as_in_docker_28() {
        let q = query("web.", RecordType::A, None);
        let ips: Vec<std::net::IpAddr> = (0..40u8)
            .map(|i| std::net::IpAddr::from([10, 0, 0, i]))
            .collect();
        let bytes = local_reply(&q, &Outcome::Addresses(ips, 600), 512);
        let r = Message::from_vec(&bytes).unwrap();
        assert!(bytes.len() <= 512 && r.metadata.truncation);
        // Docker 28.5: 30 (names compressed); Docker 20.10: 24 (uncompressed).
        assert_eq!(r.answers.len(), 30);
    }

    #[test]
    fn r14_edns_version_above_0_gets_badvers_and_two_opt_records_formerr() {
        let nets = [crate::peers::MemoryNetwork::new("n", "c", &[])];
        let view = View { networks: &nets };
        let mut q = query("web.", RecordType::A, Some(1232));
        q.edns.as_mut().unwrap().set_version(1);
        let Decision::Reply { bytes, .. } = handle(&q.to_vec().unwrap(), &view, false) else {
            panic!("EDNS version 1 must be answered at once");
        };
        let r = Message::from_vec(&bytes).unwrap();
        // 16: BADVERS, which shares its number with BADSIG (hickory reads it back as that).
        assert_eq!(u16::from(r.metadata.response_code), 16);
        assert_eq!(
            bytes[3] & 0x0f,
            0,
            "the low bits in the header, the high in the OPT"
        );
        assert_eq!(r.edns.as_ref().map(|e| e.version()), Some(0));
        assert_eq!(r.metadata.id, q.metadata.id);

        // The same query with its OPT record twice.
        let mut two = query("web.", RecordType::A, Some(1232)).to_vec().unwrap();
        let opt = two[two.len() - 11..].to_vec();
        two.extend_from_slice(&opt);
        two[11] = 2; // ARCOUNT
        let Decision::Reply { bytes, .. } = handle(&two, &view, false) else {
            panic!("two OPT records must be answered at once");
        };
        assert_eq!(bytes[3] & 0x0f, u16::from(ResponseCode::FormErr) as u8);
    }

    #[test]
    fn question_bounds() {
        let q = query("web.", RecordType::A, None).to_vec().unwrap();
        assert_eq!(question_end(&q), Some(12 + 5 + 4));
        let err = error_for_raw(&q, 21, ResponseCode::ServFail);
        let m = Message::from_vec(&err).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries.len(), 1);
    }
}

//! The common query answered straight from its bytes: one question of class IN and type A or
//! AAAA, a name of plain labels, and no other record than an EDNS OPT without options. That
//! is what libc resolvers, busybox and dnsperf send, and under load decoding it into a
//! hickory `Message` and encoding the reply cost a fifth of the resolver's CPU (perf, at
//! 220k q/s): allocations for every name, record and section.
//!
//! Anything else goes the general way (`answer.rs`, hickory-proto), which stays the
//! reference: for every query this module takes, the reply is byte for byte the general
//! path's (unit tests here, and the `dns` fuzz target compares the two on every input).

use std::net::IpAddr;

use hickory_proto::rr::RecordType;

use crate::lookup::Outcome;
use crate::wire::{
    reply_limit, Options, Query, CLASS_IN, MAX_WIRE_NAME, OPT_LEN, OUR_EDNS_PAYLOAD,
    RCODE_SERVFAIL as SERVFAIL, TYPE_A, TYPE_AAAA, TYPE_OPT,
};

/// A query of the simple shape, parsed in place.
pub struct Simple<'a> {
    bytes: &'a [u8],
    /// Where the question ends (and, without EDNS, the message).
    pub question_end: usize,
    pub qtype: RecordType,
    /// The client's EDNS payload size, if it sent an OPT record.
    edns_payload: Option<u16>,
    /// The name as the lookup wants it: lower case, dot-separated, no trailing dot (R6).
    name: [u8; MAX_WIRE_NAME],
    name_len: usize,
}

impl<'a> Simple<'a> {
    /// `None` when the query is not of the simple shape (the general path then decides).
    pub fn parse(bytes: &'a [u8]) -> Option<Simple<'a>> {
        Simple::of(&Query::parse(bytes)?)
    }

    /// The query `q`, read once already, if it is of the simple shape: a plain name of type
    /// A or AAAA and class IN, and no OPT record but one of version 0 without options (a
    /// version above 0 is the general path's BADVERS, R14).
    pub fn of(q: &Query<'a>) -> Option<Simple<'a>> {
        let qtype = match q.qtype {
            TYPE_A => RecordType::A,
            TYPE_AAAA => RecordType::AAAA,
            _ => return None,
        };
        if q.qclass != CLASS_IN {
            return None;
        }
        let edns_payload = match q.opt {
            None => None,
            Some(o) if o.version == 0 && o.options == Options::None => Some(o.payload),
            Some(_) => return None,
        };
        let plain = q.plain_name()?;
        let mut name = [0u8; MAX_WIRE_NAME];
        name[..plain.len()].copy_from_slice(plain);
        Some(Simple {
            bytes: q.bytes,
            question_end: q.question_end,
            qtype,
            edns_payload,
            name,
            name_len: plain.len(),
        })
    }

    /// The question's name, normalized.
    pub fn name(&self) -> &str {
        // Only ASCII bytes were copied in.
        std::str::from_utf8(&self.name[..self.name_len]).unwrap_or_default()
    }

    /// The reply's size limit (R13), by the same rule as the general path's.
    pub fn size_limit(&self, tcp: bool) -> usize {
        reply_limit(self.edns_payload, tcp)
    }

    /// The reply for a local outcome (R9, R11–R13): the question echoed with the client's ID
    /// and RD/CD, RA=1, AA=0; answers pointing at the question's name; whole answers dropped
    /// and TC set beyond `limit`. `None` for an outcome that is not a local A/AAAA answer.
    pub fn reply(&self, outcome: &Outcome, limit: usize) -> Option<Vec<u8>> {
        let (ips, ttl, rcode): (&[IpAddr], u32, u8) = match outcome {
            Outcome::Addresses(ips, ttl) => (ips, *ttl, 0),
            Outcome::NoData(_) => (&[], 0, 0),
            Outcome::Unavailable => (&[], 0, SERVFAIL),
            Outcome::Pointer(..) | Outcome::Forward | Outcome::ForwardFirst(_) => return None,
        };
        let q = self.bytes;
        let edns_len = if self.edns_payload.is_some() {
            OPT_LEN
        } else {
            0
        };
        let mut room = limit.checked_sub(self.question_end + edns_len)?;
        let mut out = Vec::with_capacity(self.question_end + edns_len + 28 * ips.len().min(64));
        out.extend_from_slice(&q[..self.question_end]);
        let mut answers: u16 = 0;
        let mut truncated = false;
        for ip in ips {
            let (rtype, rdata): (u16, &[u8]) = match ip {
                IpAddr::V4(v4) => (TYPE_A, &v4.octets()),
                IpAddr::V6(v6) => (TYPE_AAAA, &v6.octets()),
            };
            let len = 12 + rdata.len();
            if len > room {
                truncated = true;
                break;
            }
            room -= len;
            out.extend_from_slice(&[0xc0, 0x0c]); // the question's name
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(rdata);
            answers += 1;
        }
        if self.edns_payload.is_some() {
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&OUR_EDNS_PAYLOAD.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // rcode, version, flags; no options
        }
        out[2] = 0x80 | (q[2] & 0x01) | if truncated { 0x02 } else { 0 };
        out[3] = 0x80 | (q[3] & 0x10) | rcode;
        out[6..8].copy_from_slice(&answers.to_be_bytes());
        out[10..12].copy_from_slice(&u16::from(self.edns_payload.is_some()).to_be_bytes());
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::general_reply;
    use hickory_proto::op::{Edns, Message, OpCode, Query};
    use hickory_proto::rr::rdata::opt::EdnsOption;
    use hickory_proto::rr::{DNSClass, Name};

    fn query(name: Name, t: RecordType, rd: bool, cd: bool, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(name, t));
        m.metadata.recursion_desired = rd;
        m.metadata.checking_disabled = cd;
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn outcomes() -> Vec<Outcome> {
        let many: Vec<IpAddr> = (1..=60u16)
            .map(|i| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i]))
            .collect();
        let mixed = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        vec![
            Outcome::Addresses(vec!["10.0.0.2".parse().unwrap()], 600),
            Outcome::Addresses(many, 30),
            Outcome::Addresses(mixed, 600),
            Outcome::NoData(600),
            Outcome::Unavailable,
        ]
    }

    #[test]
    fn same_reply_as_the_general_path() {
        let long = format!(
            "{}.{}.{}.x.",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63)
        );
        let names = [
            "web.",
            "WeB.Demo.",
            "a-b.c_d.example.",
            "_srv9.x",
            "0",
            long.as_str(),
        ];
        let mut compared = 0;
        for name in names {
            for t in [RecordType::A, RecordType::AAAA] {
                for (rd, cd) in [(true, false), (false, true)] {
                    for edns in [None, Some(0), Some(512), Some(1232), Some(4096)] {
                        let q = query(Name::from_ascii(name).unwrap(), t, rd, cd, edns);
                        let fast = Simple::parse(&q).unwrap_or_else(|| panic!("{name} {edns:?}"));
                        for outcome in outcomes() {
                            for tcp in [false, true] {
                                let (gname, gtype, want) =
                                    general_reply(&q, &outcome, tcp).unwrap();
                                assert_eq!(fast.name(), gname);
                                assert_eq!(fast.qtype, gtype);
                                let got = fast.reply(&outcome, fast.size_limit(tcp)).unwrap();
                                assert_eq!(got, want, "{name} {t} {edns:?} tcp {tcp} {outcome:?}");
                                compared += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(compared, names.len() * 2 * 2 * 5 * 5 * 2);
        // R13: the 60 AAAA answers were cut to whole records within 512 bytes, TC set.
        let q = query(
            Name::from_ascii("many.").unwrap(),
            RecordType::AAAA,
            true,
            false,
            None,
        );
        let cut = Simple::parse(&q)
            .unwrap()
            .reply(&outcomes()[1], 512)
            .unwrap();
        let m = Message::from_vec(&cut).unwrap();
        assert!(cut.len() <= 512 && m.metadata.truncation);
        assert_eq!(m.answers.len(), (512 - q.len()) / 28);
    }

    #[test]
    fn other_shapes_go_the_general_way() {
        let plain = |t| query(Name::from_ascii("web.").unwrap(), t, true, false, None);
        assert!(Simple::parse(&plain(RecordType::A)).is_some());
        let mut others: Vec<(&str, Vec<u8>)> = vec![
            ("MX", plain(RecordType::MX)),
            ("PTR", plain(RecordType::PTR)),
            (
                "root",
                query(Name::root(), RecordType::A, true, false, None),
            ),
            (
                "leading dash",
                query(
                    Name::from_labels(vec![b"-a".as_ref()]).unwrap(),
                    RecordType::A,
                    true,
                    false,
                    None,
                ),
            ),
            (
                "escaped byte",
                query(
                    Name::from_labels(vec![b"a b".as_ref()]).unwrap(),
                    RecordType::A,
                    true,
                    false,
                    None,
                ),
            ),
        ];
        let mut chaos = Message::query();
        let mut q = Query::query(Name::from_ascii("web.").unwrap(), RecordType::A);
        q.set_query_class(DNSClass::CH);
        chaos.add_query(q);
        others.push(("class CH", chaos.to_vec().unwrap()));
        let mut two = Message::query();
        two.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
        two.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        others.push(("two questions", two.to_vec().unwrap()));
        let mut cookie = Message::query();
        cookie.add_query(Query::query(
            Name::from_ascii("web.").unwrap(),
            RecordType::A,
        ));
        let mut e = Edns::new();
        e.options_mut().insert(EdnsOption::Unknown(10, vec![1; 8]));
        cookie.set_edns(e);
        others.push(("EDNS option", cookie.to_vec().unwrap()));
        let mut notify = Message::query();
        notify.metadata.op_code = OpCode::Notify;
        notify.add_query(Query::query(
            Name::from_ascii("web.").unwrap(),
            RecordType::A,
        ));
        others.push(("opcode", notify.to_vec().unwrap()));
        let mut trailing = plain(RecordType::A);
        trailing.push(0);
        others.push(("trailing byte", trailing));
        let mut pointer = plain(RecordType::A);
        pointer.splice(12..17, [0xc0, 0x0c]);
        others.push(("compression pointer", pointer));
        let mut response = plain(RecordType::A);
        response[2] |= 0x80;
        others.push(("response", response));
        for (what, bytes) in others {
            assert!(Simple::parse(&bytes).is_none(), "{what}");
        }
    }
}

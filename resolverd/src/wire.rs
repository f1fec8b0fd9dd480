//! What both ways of answering (the general path in `answer`, the byte-level one in `fast`),
//! the cache and the forwarder share about DNS on the wire, in one place: the numbers they
//! read, the query header they accept, the size a reply may take (R13), our EDNS payload,
//! and replies made from a request's raw bytes.

use hickory_proto::op::ResponseCode;

pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
/// The type of EDNS's OPT record (RFC 6891).
pub const TYPE_OPT: u16 = 41;
pub const CLASS_IN: u16 = 1;
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
/// An OPT record's length without options: root name, type, class, TTL, RDLENGTH.
pub const OPT_LEN: usize = 11;
/// EDNS options a query may carry and still be answered from the cache (RFC 7873, 7830).
pub const OPTION_COOKIE: u16 = 10;
pub const OPTION_PADDING: u16 = 12;

/// The header of a query both the fast path and the cache read: a query (QR=0) of opcode
/// QUERY with one question, nothing in answer or authority, and at most one more record (an
/// OPT); its additional count, `None` for any other message.
fn simple_query_header(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < 12 || bytes[2] & 0xf8 != 0 {
        return None;
    }
    let additional = u16_at(bytes, 10)?;
    let one_question = u16_at(bytes, 4)? == 1 && u16_at(bytes, 6)? == 0 && u16_at(bytes, 8)? == 0;
    (one_question && additional <= 1).then_some(additional)
}

/// The longest name on the wire (RFC 1035 §3.1).
pub const MAX_WIRE_NAME: usize = 255;

/// A query's EDNS OPT record, as read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    /// The client's payload size.
    pub payload: u16,
    pub version: u8,
    /// The DO bit.
    pub dnssec_ok: bool,
    /// Its options, by kind.
    pub options: Options,
}

/// What a query's OPT record carries besides its fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Options {
    None,
    /// Only a COOKIE and/or padding (what dig and stub resolvers send; the cache answers).
    CookieOrPadding,
    /// Another option (client subnet, NSID, ...).
    Other,
}

/// A query read once, in place: what the fast path (`fast.rs`), the cache and R34a's
/// coalescing (`cache/`) take of it, each by its own shape.
pub struct Query<'a> {
    pub bytes: &'a [u8],
    /// Where the question ends (and, without an OPT record, the message).
    pub question_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    /// The name as the lookup wants it (lower case, dot-separated, no trailing dot, R6), when
    /// every label is plain, the name not the root and within [`MAX_WIRE_NAME`].
    name: [u8; MAX_WIRE_NAME],
    name_len: Option<usize>,
    pub opt: Option<Opt>,
}

impl<'a> Query<'a> {
    /// `None` for a message of another shape than [`simple_query_header`]'s, a question that
    /// does not parse (compression, a label past 63 bytes, cut short), or records that do not
    /// end the message exactly (an OPT record whose length or options overrun or fall short).
    pub fn parse(bytes: &'a [u8]) -> Option<Query<'a>> {
        let additional = simple_query_header(bytes)?;
        let mut name = [0u8; MAX_WIRE_NAME];
        let mut name_len = Some(0usize);
        let mut i = 12;
        loop {
            let len = *bytes.get(i)? as usize;
            if len == 0 {
                break;
            }
            if len & 0xc0 != 0 {
                return None;
            }
            let label = bytes.get(i + 1..i + 1 + len)?;
            // Exactly the bytes hickory prints as themselves (`Name::to_ascii`): anything it
            // would escape, and names longer on the wire (closing zero included) than
            // allowed, leave the name to the general path.
            let plain = |(k, b): (usize, &u8)| {
                b.is_ascii_alphanumeric() || *b == b'_' || (*b == b'-' && k > 0)
            };
            // The label, its length byte and the closing zero.
            let fits = (i - 12) + len + 2 <= MAX_WIRE_NAME;
            name_len = name_len.filter(|_| fits && label.iter().enumerate().all(plain));
            if let Some(n) = &mut name_len {
                if *n > 0 {
                    name[*n] = b'.';
                    *n += 1;
                }
                for b in label {
                    name[*n] = b.to_ascii_lowercase();
                    *n += 1;
                }
            }
            i += 1 + len;
        }
        let name_len = name_len.filter(|n| *n > 0);
        let qtype = u16_at(bytes, i + 1)?;
        let qclass = u16_at(bytes, i + 3)?;
        let question_end = i + 5;
        let opt = if additional == 1 {
            Some(read_opt(bytes, question_end)?)
        } else {
            if bytes.len() != question_end {
                return None;
            }
            None
        };
        Some(Query {
            bytes,
            question_end,
            qtype,
            qclass,
            name,
            name_len,
            opt,
        })
    }

    /// The name as the lookup wants it, if it is plain: every label printable as itself,
    /// not the root, within [`MAX_WIRE_NAME`] on the wire.
    pub fn plain_name(&self) -> Option<&[u8]> {
        self.name_len.map(|n| &self.name[..n])
    }
}

/// The OPT record that ends a query at `at`: root name, type OPT, payload, extended rcode,
/// version, flags, RDLENGTH, then options filling the rest of the message exactly.
fn read_opt(bytes: &[u8], at: usize) -> Option<Opt> {
    let opt = bytes.get(at..)?;
    if opt.len() < OPT_LEN || opt[0] != 0 || u16_at(bytes, at + 1)? != TYPE_OPT {
        return None;
    }
    if usize::from(u16_at(bytes, at + 9)?) != opt.len() - OPT_LEN {
        return None;
    }
    let mut options = Options::None;
    let mut i = at + OPT_LEN;
    while i < bytes.len() {
        let code = u16_at(bytes, i)?;
        options = match (options, [OPTION_COOKIE, OPTION_PADDING].contains(&code)) {
            (Options::Other, _) | (_, false) => Options::Other,
            _ => Options::CookieOrPadding,
        };
        i += 4 + usize::from(u16_at(bytes, i + 2)?);
    }
    if i != bytes.len() {
        return None;
    }
    Some(Opt {
        payload: u16_at(bytes, at + 3)?,
        version: opt[6],
        dnssec_ok: opt[7] & 0x80 != 0,
        options,
    })
}

/// The big-endian 16-bit number at `i`, if the bytes reach that far.
pub fn u16_at(bytes: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]))
}

/// The payload size we advertise in our EDNS replies.
pub const OUR_EDNS_PAYLOAD: u16 = 1232;

/// R13: 512 bytes over UDP, or the client's EDNS payload size if larger; 65535 over TCP.
pub fn reply_limit(edns_payload: Option<u16>, tcp: bool) -> usize {
    if tcp {
        return u16::MAX as usize;
    }
    edns_payload.map_or(512, |p| p.max(512)) as usize
}

/// A bare reply built from the request's raw header, for what does not parse.
pub fn header_only(request: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&request[..2]);
    let opcode_rd = request.get(2).copied().unwrap_or(0) & 0x79; // opcode and RD
    out[2] = 0x80 | opcode_rd;
    out[3] = 0x80 | (u16::from(rcode) as u8 & 0x0f);
    out
}

/// A SERVFAIL/REFUSED reply echoing the raw question of a forwarded query.
pub fn error_for_raw(request: &[u8], question_end: usize, rcode: ResponseCode) -> Vec<u8> {
    let mut out = header_only(request, rcode);
    out[4..6].copy_from_slice(&1u16.to_be_bytes()); // one question
    out.extend_from_slice(&request[12..question_end]);
    out
}

/// End offset of the first question (uncompressed, as clients send it), or `None`.
pub fn question_end(bytes: &[u8]) -> Option<usize> {
    if u16::from_be_bytes([bytes[4], bytes[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = *bytes.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    (i + 4 <= bytes.len()).then_some(i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (labels) of type A, class IN, then `tail` as its additional record.
    fn query(labels: &[&[u8]], tail: &[u8]) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(!tail.is_empty()),
        ];
        for l in labels {
            q.push(l.len() as u8);
            q.extend_from_slice(l);
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q.extend_from_slice(tail);
        q
    }

    /// An OPT record of version `version` with `options` (code, data).
    fn opt(version: u8, options: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (code, data) in options {
            body.extend_from_slice(&code.to_be_bytes());
            body.extend_from_slice(&(data.len() as u16).to_be_bytes());
            body.extend_from_slice(data);
        }
        let mut o = vec![0, 0, 41, 0x04, 0xd0, 0, version, 0x80, 0];
        o.extend_from_slice(&(body.len() as u16).to_be_bytes());
        o.extend_from_slice(&body);
        o
    }

    #[test]
    fn a_query_is_read_once_with_its_name_its_question_and_its_opt_record() {
        let q = query(&[b"Web", b"corp"], &opt(0, &[(OPTION_COOKIE, &[7; 8])]));
        let r = Query::parse(&q).unwrap();
        assert_eq!((r.qtype, r.qclass, r.question_end), (TYPE_A, CLASS_IN, 26));
        assert_eq!(r.plain_name(), Some(&b"web.corp"[..]));
        let o = r.opt.unwrap();
        assert_eq!((o.payload, o.version, o.dnssec_ok), (1232, 0, true));
        assert_eq!(o.options, Options::CookieOrPadding);
        let other = query(
            &[b"web"],
            &opt(0, &[(OPTION_COOKIE, &[7; 8]), (8, &[0; 4])]),
        );
        assert_eq!(
            Query::parse(&other).unwrap().opt.unwrap().options,
            Options::Other
        );
        // A name hickory would escape is read, but not as a plain name.
        let odd = query(&[b"a b"], &[]);
        assert_eq!(Query::parse(&odd).unwrap().plain_name(), None);
    }

    #[test]
    fn what_does_not_end_the_message_exactly_is_not_read() {
        let mut long = opt(0, &[(OPTION_COOKIE, &[7; 8])]);
        long.push(0); // one byte past its options
        for bad in [
            query(&[b"web"], &long),
            [query(&[b"web"], &[]), vec![0]].concat(), // a byte past the question
            query(&[b"web"], &opt(0, &[]))[..30].to_vec(), // an OPT record cut short
            query(&[&[b'x'; 64][..]], &[]),            // a label past 63 bytes
        ] {
            assert!(Query::parse(&bad).is_none(), "{bad:?}");
        }
    }
}

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
pub fn simple_query_header(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < 12 || bytes[2] & 0xf8 != 0 {
        return None;
    }
    let additional = u16_at(bytes, 10)?;
    let one_question = u16_at(bytes, 4)? == 1 && u16_at(bytes, 6)? == 0 && u16_at(bytes, 8)? == 0;
    (one_question && additional <= 1).then_some(additional)
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

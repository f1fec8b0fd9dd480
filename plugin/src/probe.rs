//! Asking `127.0.0.11:53` a question from the current netns, to know the resolver answers
//! through the redirect (ADD returns only then, R25; CHECK asks the same).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Where probes send from. Each probe is a conntrack flow that outlives it (30 s for UDP), so
/// it must never share a tuple with a client's flow, which come from 127.0.0.1: a shared
/// tuple would send that client's queries where the probe's went (un-DNATed after a DEL, or
/// to the port of a resolver since stopped).
pub const PROBE_SOURCE: &str = "127.255.0.11";

/// Waits until `127.0.0.11:53` answers over UDP, or `timeout` passes. Each attempt comes from
/// a fresh port: a new flow, judged by the rules as they are now.
pub fn wait_answers(timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let id = rand::random::<u16>();
    let bytes = query(id, &format!("embedns-probe-{:08x}", rand::random::<u32>()));
    let mut buf = [0u8; 512];
    let mut last_err = String::from("no answer");
    while Instant::now() < deadline {
        let sock = UdpSocket::bind((PROBE_SOURCE, 0))?;
        sock.connect((embedns_conf::sandbox::EMBEDDED_RESOLVER, 53))?;
        // ECONNREFUSED until the redirect is in place: the recv below reports it.
        let _ = sock.send(&bytes);
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(20))
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait))?;
        match sock.recv(&mut buf) {
            Ok(n) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => return Ok(()),
            Ok(_) => last_err = "a reply with a wrong ID".into(),
            Err(e) => last_err = e.to_string(),
        }
    }
    anyhow::bail!("127.0.0.11:53 did not answer within {timeout:?} ({last_err})")
}

/// The wire form of a recursion-desired A query for the single label `label` (R16: an
/// unknown single label is answered locally, never forwarded). Built by hand: the plugin
/// needs no DNS library for one fixed question.
fn query(id: u16, label: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + label.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    q.push(label.len() as u8);
    q.extend_from_slice(label.as_bytes());
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    q
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_query_is_what_a_dns_library_builds() {
        use hickory_proto::op::Message;
        let m = Message::from_vec(&super::query(0x1234, "embedns-probe-0000abcd")).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.recursion_desired);
        let q = &m.queries[0];
        assert_eq!(q.name().to_ascii(), "embedns-probe-0000abcd.");
        assert_eq!(q.query_type(), hickory_proto::rr::RecordType::A);
    }
}

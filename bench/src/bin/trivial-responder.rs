//! The limit of this box: one UDP socket answering every query with a canned A record (the
//! query's ID and question echoed). No parsing beyond the question's end.

use std::net::UdpSocket;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.4:5535".into());
    let sock = UdpSocket::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let mut buf = [0u8; 1500];
    let answer = [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 2, 0x58, 0, 4, 10, 88, 1, 2];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if n < 17 {
            continue;
        }
        let mut end = 12;
        while end < n && buf[end] != 0 {
            end += 1 + buf[end] as usize;
        }
        let qend = end + 5;
        if qend > n {
            continue;
        }
        let mut out = Vec::with_capacity(qend + answer.len());
        out.extend_from_slice(&buf[..qend]);
        out[2] = 0x81 | (buf[2] & 0x01);
        out[3] = 0x80;
        out[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
        out.extend_from_slice(&answer);
        let _ = sock.send_to(&out, peer);
    }
}

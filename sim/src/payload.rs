//! What requests carry on the wire: the request marker, framed as the destination port's
//! well-known protocol where it has one, so a capture opens cleanly in tshark/Wireshark.
//!
//! - UDP to port 53: a DNS query (`pnrq<16 hex>.podnet. A IN`, the marker in hex as the
//!   first label, padded to the request size with an EDNS(0) Padding option), answered
//!   by the same message as a response (QR, RA set; no answer records: NODATA).
//! - TCP to port 80 or 8080: an HTTP/1.1 `POST /` whose `X-Podnet-Request` header holds
//!   the marker in hex, answered by `HTTP/1.1 200 OK` echoing the body.
//! - Anything else: the marker followed by a fixed pattern, echoed as it is
//!   ([`RequestId::payload`]).
//!
//! The servers answer in kind whatever their port: they recognise a podnet DNS query or
//! HTTP request by its bytes. So the client's choice alone decides the framing, and a
//! service that maps port 80 to 9000 still works.

use std::fmt::Write as _;

use crate::marker::{self, RequestId};
use crate::scenario::TrafficKind;

/// How a request's bytes are framed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// The marker and a pattern, echoed.
    #[default]
    Raw,
    /// A DNS query and its response.
    Dns,
    /// An HTTP/1.1 request and its response.
    Http,
}

/// The framing a request of `kind` gets when it goes to these ports (the port on the
/// wire and the endpoint's port after DNAT): DNS when either is 53 (udp), HTTP when
/// either is 80 or 8080 (tcp, bulk).
pub fn framing(kind: TrafficKind, ports: &[u16]) -> Framing {
    match kind {
        TrafficKind::Udp if ports.contains(&53) => Framing::Dns,
        TrafficKind::Tcp | TrafficKind::Bulk if ports.iter().any(|p| [80, 8080].contains(p)) => {
            Framing::Http
        }
        _ => Framing::Raw,
    }
}

/// The marker as 16 hex digits: traffic index, request index.
fn hex(id: RequestId) -> String {
    let mut s = String::with_capacity(16);
    for word in [id.traffic, id.index] {
        for shift in (0..8).rev() {
            let digit = (word >> (4 * shift)) & 0xf;
            s.push(char::from_digit(digit, 16).expect("a hex digit"));
        }
    }
    s
}

/// The marker in 16 hex digits, as `u32::from_str_radix(half, 16)` reads each half of
/// eight: either case, and a leading `+` allowed.
fn parse_hex(text: &[u8]) -> Option<RequestId> {
    let half = |t: &[u8]| -> Option<u32> {
        let digits = t.strip_prefix(b"+").unwrap_or(t);
        digits.iter().try_fold(0u32, |n, &c| {
            let d = (c as char).to_digit(16)?;
            Some(n << 4 | d)
        })
    };
    let text = text.get(..16)?;
    Some(RequestId {
        traffic: half(&text[..8])?,
        index: half(&text[8..])?,
    })
}

// ---- DNS ------------------------------------------------------------------------------

const DNS_HEADER: usize = 12;
/// The first label: `pnrq` and 16 hex digits.
const DNS_LABEL: &[u8] = b"pnrq";
const DNS_LABEL_LEN: usize = 20;
/// Header, `pnrq<hex>.podnet.`, type and class.
const DNS_QUERY_LEN: usize = DNS_HEADER + 1 + DNS_LABEL_LEN + 1 + 6 + 1 + 4;
/// An OPT record with a Padding option and no padding.
const DNS_OPT_LEN: usize = 11 + 4;
/// EDNS(0) option code of Padding (RFC 7830).
const EDNS_PADDING: u16 = 12;

/// A DNS query carrying `id`, `len` bytes long (at least [`DNS_QUERY_LEN`]).
pub fn dns_query(id: RequestId, len: usize) -> Vec<u8> {
    let padded = len >= DNS_QUERY_LEN + DNS_OPT_LEN;
    let mut q = Vec::with_capacity(len.max(DNS_QUERY_LEN));
    q.extend_from_slice(&(id.index as u16).to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // a standard query, recursion desired
    q.extend_from_slice(&1u16.to_be_bytes()); // one question
    q.extend_from_slice(&[0, 0, 0, 0]); // no answers, no authority
    q.extend_from_slice(&u16::from(padded).to_be_bytes()); // the OPT record
    q.push(DNS_LABEL_LEN as u8);
    q.extend_from_slice(DNS_LABEL);
    q.extend_from_slice(hex(id).as_bytes());
    q.push(6);
    q.extend_from_slice(b"podnet");
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    if padded {
        let padding = len - DNS_QUERY_LEN - DNS_OPT_LEN;
        q.push(0); // the root
        q.extend_from_slice(&41u16.to_be_bytes()); // OPT
        q.extend_from_slice(&1232u16.to_be_bytes()); // UDP payload size
        q.extend_from_slice(&[0, 0, 0, 0]); // extended rcode, version, flags
        q.extend_from_slice(&((4 + padding) as u16).to_be_bytes());
        q.extend_from_slice(&EDNS_PADDING.to_be_bytes());
        q.extend_from_slice(&(padding as u16).to_be_bytes());
        q.resize(len, 0);
    }
    q
}

/// The request a podnet DNS message (query or response) carries.
fn dns_marker(msg: &[u8]) -> Option<RequestId> {
    let label = msg.get(DNS_HEADER..DNS_HEADER + 1 + DNS_LABEL_LEN)?;
    if usize::from(label[0]) != DNS_LABEL_LEN || &label[1..5] != DNS_LABEL {
        return None;
    }
    parse_hex(&label[5..])
}

/// The response to a podnet DNS query: the same message with QR and RA set; `None` for
/// anything else.
fn dns_response(query: &[u8]) -> Option<Vec<u8>> {
    dns_marker(query)?;
    if query[2] & 0x80 != 0 {
        return None;
    }
    let mut r = query.to_vec();
    r[2] |= 0x80; // QR: a response
    r[3] |= 0x80; // RA: recursion available; rcode 0
    Some(r)
}

// ---- HTTP -----------------------------------------------------------------------------

const MARKER_HEADER: &str = "X-Podnet-Request: ";
const HEADER_END: &[u8] = b"\r\n\r\n";
/// A request header longer than this is not ours.
pub const MAX_HTTP_HEADER: usize = 1024;

fn http_request_header(id: RequestId, host: &str, body: u64) -> String {
    let mut h = String::from("POST / HTTP/1.1\r\n");
    let _ = write!(
        h,
        "Host: {host}\r\nUser-Agent: podnet\r\n{MARKER_HEADER}{}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {body}\r\n\r\n",
        hex(id)
    );
    h
}

fn http_response_header(marker: &str, body: u64) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nServer: podnet\r\n{MARKER_HEADER}{marker}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {body}\r\n\r\n"
    )
}

/// The request in an HTTP message's `X-Podnet-Request` header.
fn http_marker(msg: &[u8]) -> Option<RequestId> {
    if !(msg.starts_with(b"POST ") || msg.starts_with(b"HTTP/1.1 ")) {
        return None;
    }
    let head = &msg[..msg.len().min(MAX_HTTP_HEADER)];
    let at = head
        .windows(MARKER_HEADER.len())
        .position(|w| w == MARKER_HEADER.as_bytes())?;
    parse_hex(&head[at + MARKER_HEADER.len()..])
}

/// What a server sends first on reading a complete podnet HTTP request header (`head`,
/// ending in a blank line): the response header for the same body. `None` when `head`
/// is not one.
pub fn http_response_for(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    if !text.starts_with("POST ") || !text.ends_with("\r\n\r\n") {
        return None;
    }
    let mut marker = None;
    let mut length = None;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix(MARKER_HEADER) {
            marker = Some(value.trim());
        } else if let Some(value) = line.strip_prefix("Content-Length: ") {
            length = value.trim().parse::<u64>().ok();
        }
    }
    Some(http_response_header(marker?, length?).into_bytes())
}

/// Where a buffered request header ends (just past the blank line), if it has.
pub fn http_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(HEADER_END.len())
        .position(|w| w == HEADER_END)
        .map(|at| at + HEADER_END.len())
}

/// Whether the first bytes of a connection may still become a podnet HTTP request.
pub fn may_be_http(buf: &[u8]) -> bool {
    let n = buf.len().min(5);
    buf[..n] == b"POST "[..n]
}

// ---- the marker wherever it is --------------------------------------------------------

/// The request a TCP or UDP payload (or an echo's data) carries: the marker at its start,
/// or inside a podnet DNS or HTTP message.
pub fn marker(payload: &[u8]) -> Option<RequestId> {
    RequestId::read(payload)
        .or_else(|| dns_marker(payload))
        .or_else(|| http_marker(payload))
}

// ---- datagrams and streams ------------------------------------------------------------

/// A UDP request of `len` bytes.
pub fn datagram(framing: Framing, id: RequestId, len: usize) -> Vec<u8> {
    match framing {
        Framing::Dns => dns_query(id, len),
        Framing::Raw | Framing::Http => id.payload(len),
    }
}

/// What a UDP server sends back for `request`: a DNS response to a podnet DNS query,
/// else the same bytes.
pub fn datagram_reply(request: &[u8]) -> Vec<u8> {
    dns_response(request).unwrap_or_else(|| request.to_vec())
}

/// The period of a stream's body pattern.
const PERIOD: usize = 251;

/// Two periods of the body pattern (`j % 251`), so that any period's worth of it, from
/// any phase, is one slice.
const PATTERN: [u8; 2 * PERIOD] = {
    let mut p = [0u8; 2 * PERIOD];
    let mut j = 0;
    while j < 2 * PERIOD {
        p[j] = (j % PERIOD) as u8;
        j += 1;
    }
    p
};

/// One direction of a TCP request: a prefix (the marker, or an HTTP header), then a body
/// of the pattern `(phase + j) % 251` for body byte `j`, `len` bytes in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    prefix: Vec<u8>,
    phase: u64,
    len: u64,
}

impl Stream {
    /// What a client sends: `len` bytes (at least the prefix).
    pub fn request(framing: Framing, id: RequestId, host: &str, len: u64) -> Stream {
        match framing {
            Framing::Http => {
                // The header's length depends on the body's (Content-Length); take the
                // largest body that fits: `len` exactly, or one short where the body's
                // digit count changes just there.
                let header = |body: u64| http_request_header(id, host, body).len() as u64;
                let first = len.saturating_sub(header(len));
                let body = (first..=first + 2)
                    .rev()
                    .find(|&b| header(b) + b <= len)
                    .unwrap_or(0);
                let prefix = http_request_header(id, host, body).into_bytes();
                let phase = prefix.len() as u64;
                Stream {
                    len: phase + body,
                    prefix,
                    phase,
                }
            }
            Framing::Raw | Framing::Dns => {
                let mut prefix = vec![0; marker::LEN];
                id.write(&mut prefix);
                Stream {
                    prefix,
                    phase: marker::LEN as u64,
                    len: len.max(marker::LEN as u64),
                }
            }
        }
    }

    /// What the client expects back for this request.
    pub fn reply(&self) -> Stream {
        let body = self.len - self.prefix.len() as u64;
        match http_marker(&self.prefix).zip(http_response_for(&self.prefix)) {
            Some((_, header)) => Stream {
                len: header.len() as u64 + body,
                prefix: header,
                phase: self.phase,
            },
            None => self.clone(),
        }
    }

    /// Bytes in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty (never: a stream holds at least its prefix).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(test)]
    fn byte(&self, i: u64) -> u8 {
        match usize::try_from(i).ok().and_then(|i| self.prefix.get(i)) {
            Some(&b) => b,
            None => ((i - self.prefix.len() as u64 + self.phase) % 251) as u8,
        }
    }

    /// Splits bytes `offset..offset + len` into the part in the prefix and, for the rest,
    /// the pattern's value at its first byte.
    fn split(&self, offset: u64, len: usize) -> (&[u8], u8) {
        let p = self.prefix.len() as u64;
        let from = offset.min(p) as usize;
        let to = (offset + len as u64).min(p) as usize;
        let first = offset.max(p);
        (
            &self.prefix[from..to],
            ((first - p + self.phase) % PERIOD as u64) as u8,
        )
    }

    /// Writes bytes `offset..offset + buf.len()`.
    pub fn fill(&self, buf: &mut [u8], offset: u64) {
        let (head, mut v) = self.split(offset, buf.len());
        let (a, body) = buf.split_at_mut(head.len());
        a.copy_from_slice(head);
        // The pattern in pieces of whole periods, each a slice of `PATTERN`.
        for piece in body.chunks_mut(PERIOD) {
            piece.copy_from_slice(&PATTERN[v as usize..v as usize + piece.len()]);
            v = ((v as usize + piece.len()) % PERIOD) as u8;
        }
    }

    /// Whether `buf` is bytes `offset..` of the stream.
    pub fn holds(&self, buf: &[u8], offset: u64) -> bool {
        if offset + buf.len() as u64 > self.len {
            return false;
        }
        let (head, mut v) = self.split(offset, buf.len());
        let (a, body) = buf.split_at(head.len());
        a == head
            && body.chunks(PERIOD).all(|piece| {
                let ok = piece == &PATTERN[v as usize..v as usize + piece.len()];
                v = ((v as usize + piece.len()) % PERIOD) as u8;
                ok
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: RequestId = RequestId {
        traffic: 2,
        index: 70_000,
    };

    #[test]
    fn framing_by_port() {
        assert_eq!(framing(TrafficKind::Udp, &[53, 5353]), Framing::Dns);
        assert_eq!(framing(TrafficKind::Udp, &[5353, 53]), Framing::Dns);
        assert_eq!(framing(TrafficKind::Tcp, &[53]), Framing::Raw);
        assert_eq!(framing(TrafficKind::Tcp, &[80, 8080]), Framing::Http);
        assert_eq!(framing(TrafficKind::Bulk, &[30080, 8080]), Framing::Http);
        assert_eq!(framing(TrafficKind::Udp, &[8080]), Framing::Raw);
        assert_eq!(framing(TrafficKind::Ping, &[]), Framing::Raw);
    }

    #[test]
    fn dns_query_and_response() {
        for len in [0, 45, 59, 60, 64, 512] {
            let q = dns_query(ID, len);
            // Padding needs room for the OPT record: below that, the bare query.
            let want = if len >= DNS_QUERY_LEN + DNS_OPT_LEN {
                len
            } else {
                DNS_QUERY_LEN
            };
            assert_eq!(q.len(), want, "{len}");
            assert_eq!(marker(&q), Some(ID));
            assert_eq!(&q[4..6], &[0, 1], "one question");
            let r = datagram_reply(&q);
            assert_eq!(r.len(), q.len());
            assert_eq!(r[2] & 0x80, 0x80, "QR");
            assert_eq!(&r[..2], &q[..2], "same id");
            assert_eq!(marker(&r), Some(ID));
            // A response is not answered again.
            assert_eq!(datagram_reply(&r), r);
        }
        let q = dns_query(ID, 64);
        assert_eq!(
            &q[q.len() - 8..q.len() - 4],
            &[0, 12, 0, 4],
            "padding option"
        );
        // The raw pattern is no DNS query, whatever its bytes.
        let raw = ID.payload(64);
        assert_eq!(datagram_reply(&raw), raw);
    }

    #[test]
    fn http_request_and_response() {
        for len in [0, 100, 199, 200, 201, 1000, 2_000_000] {
            let req = Stream::request(Framing::Http, ID, "10.3.0.50:80", len);
            let mut bytes = vec![0; req.len() as usize];
            req.fill(&mut bytes, 0);
            assert_eq!(marker(&bytes), Some(ID));
            assert!(req.holds(&bytes, 0));
            let head_end = http_header_end(&bytes).unwrap();
            let text = std::str::from_utf8(&bytes[..head_end]).unwrap();
            let body = req.len() as usize - head_end;
            assert!(
                text.contains(&format!("Content-Length: {body}\r\n")),
                "{text}"
            );
            if len as usize > head_end + 2 {
                assert!(req.len() == len || req.len() + 1 == len, "{len}");
            }
            // The server's answer: its header, then the body echoed.
            let mut answer = http_response_for(&bytes[..head_end]).unwrap();
            answer.extend_from_slice(&bytes[head_end..]);
            let reply = req.reply();
            assert_eq!(reply.len() as usize, answer.len());
            assert!(reply.holds(&answer, 0));
            assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
            assert_eq!(marker(&answer), Some(ID));
        }
        assert!(may_be_http(b"PO"));
        assert!(!may_be_http(b"PNRQ"));
        assert_eq!(http_response_for(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn raw_stream_is_the_marker_and_the_pattern() {
        let s = Stream::request(Framing::Raw, ID, "x", 300);
        assert_eq!(s.len(), 300);
        let mut bytes = vec![0; 300];
        s.fill(&mut bytes, 0);
        assert_eq!(bytes, ID.payload(300));
        assert_eq!(s.reply(), s);
        assert!(!s.holds(&bytes[..10], 295), "past the end");
    }

    #[test]
    fn hex_round_trip_and_from_str_radix() {
        for id in [
            ID,
            RequestId {
                traffic: 0,
                index: 0,
            },
            RequestId {
                traffic: u32::MAX,
                index: 0xdead_beef,
            },
        ] {
            let h = hex(id);
            assert_eq!(h, format!("{:08x}{:08x}", id.traffic, id.index));
            assert_eq!(parse_hex(h.as_bytes()), Some(id));
        }
        let old = |text: &[u8]| -> Option<RequestId> {
            let text = std::str::from_utf8(text.get(..16)?).ok()?;
            Some(RequestId {
                traffic: u32::from_str_radix(&text[..8], 16).ok()?,
                index: u32::from_str_radix(&text[8..], 16).ok()?,
            })
        };
        let mut cases: Vec<Vec<u8>> = vec![
            b"0000000A0000000b".to_vec(),
            b"+000000a+000000b".to_vec(),
            b"++00000a0000000b".to_vec(),
            b"-000000a0000000b".to_vec(),
            b"0000000a0000000".to_vec(),
            b"0000000a0000000g".to_vec(),
            b"ffffffffFFFFFFFFxyz".to_vec(),
            vec![
                0xc3, 0xa9, b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'0',
                b'0', b'0',
            ],
        ];
        let mut rng = 9u32;
        for _ in 0..20_000 {
            let mut t = Vec::new();
            for _ in 0..16 {
                rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
                t.push(b"0123456789abcdefABCDEF+-g \xff"[(rng >> 16) as usize % 27]);
            }
            cases.push(t);
        }
        for c in cases {
            assert_eq!(parse_hex(&c), old(&c), "{c:?}");
        }
    }

    #[test]
    fn fill_and_holds_are_byte_by_byte() {
        for stream in [
            Stream::request(Framing::Raw, ID, "x", 5000),
            Stream::request(Framing::Http, ID, "10.3.0.1:80", 5000),
        ] {
            let all: Vec<u8> = (0..stream.len()).map(|i| stream.byte(i)).collect();
            for offset in (0..1200)
                .step_by(7)
                .chain([0, 1, 11, 12, 13, 250, 251, 252])
            {
                for len in [0, 1, 5, 12, 250, 251, 252, 600, 1460] {
                    let end = (offset + len).min(all.len());
                    let mut buf = vec![0xee; end - offset];
                    stream.fill(&mut buf, offset as u64);
                    assert_eq!(buf, all[offset..end], "fill at {offset} len {len}");
                    assert!(stream.holds(&buf, offset as u64));
                    if let Some(b) = buf.last_mut() {
                        *b ^= 1;
                        assert!(!stream.holds(&buf, offset as u64));
                    }
                }
            }
        }
    }
}

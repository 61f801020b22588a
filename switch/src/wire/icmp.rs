//! ICMP for IPv4 (RFC 792): the messages the gateway answers (echo) and sends (errors),
//! and the errors NAT translates.

pub use pnet_packet::icmp::{IcmpPacket, MutableIcmpPacket};

use super::{checksum, put16, Malformed};

/// Bytes of an ICMP header: type, code, checksum, four bytes that depend on the type.
pub const ICMP_LEN: usize = 8;

/// Offset of the checksum in the header.
pub const CHECKSUM_AT: usize = 2;

/// Code of "fragmentation needed and DF set" under [`DEST_UNREACHABLE`].
pub const FRAG_NEEDED: u8 = 4;

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const SOURCE_QUENCH: u8 = 4;
pub const REDIRECT: u8 = 5;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAMETER_PROBLEM: u8 = 12;

/// True for an error message, the kind that quotes the packet it is about (the set
/// Linux's conntrack treats as related to a flow).
pub fn is_error(ty: u8) -> bool {
    matches!(
        ty,
        DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
    )
}

/// True for a query (echo, timestamp, information, address mask, and their replies):
/// the messages RFC 1122 3.2.2 allows an error about.
pub fn is_query(ty: u8) -> bool {
    matches!(ty, ECHO_REQUEST | ECHO_REPLY | 13..=18)
}

/// An ICMP header (the repr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpHeader {
    pub ty: u8,
    pub code: u8,
    /// The four bytes after the checksum: identifier and sequence of an echo, the next
    /// hop MTU of fragmentation-needed, zero for most errors.
    pub rest: [u8; 4],
}

impl IcmpHeader {
    /// Reads the header at the start of `b`, the whole message, whose checksum must be
    /// correct.
    pub fn parse(b: &[u8]) -> Result<IcmpHeader, Malformed> {
        if b.len() < ICMP_LEN || checksum::of(b) != 0 {
            return Err(Malformed);
        }
        Ok(IcmpHeader {
            ty: b[0],
            code: b[1],
            rest: b[4..8].try_into().expect("4 bytes"),
        })
    }

    /// Writes the header at the start of `msg`, the whole message with its body in
    /// place, and the checksum over all of it.
    pub fn emit(&self, msg: &mut [u8]) {
        msg[0] = self.ty;
        msg[1] = self.code;
        put16(msg, CHECKSUM_AT, 0);
        msg[4..8].copy_from_slice(&self.rest);
        let c = checksum::of(msg);
        put16(msg, CHECKSUM_AT, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo request, identifier 0x1234, sequence 1, payload "hi".
    const ECHO: [u8; 10] = [8, 0, 0x7d, 0x61, 0x12, 0x34, 0, 1, b'h', b'i'];

    #[test]
    fn parses_literal_bytes_and_emits_them_back() {
        let h = IcmpHeader::parse(&ECHO).unwrap();
        assert_eq!(
            h,
            IcmpHeader {
                ty: ECHO_REQUEST,
                code: 0,
                rest: [0x12, 0x34, 0, 1]
            }
        );
        assert!(is_query(h.ty) && !is_error(h.ty));
        let mut out = ECHO;
        out[..ICMP_LEN].fill(0);
        h.emit(&mut out);
        assert_eq!(out, ECHO);
    }

    #[test]
    fn refuses_truncated_and_inconsistent_messages() {
        assert_eq!(IcmpHeader::parse(&ECHO[..7]), Err(Malformed));
        let mut bad_sum = ECHO;
        bad_sum[9] ^= 1;
        assert_eq!(IcmpHeader::parse(&bad_sum), Err(Malformed));
    }
}

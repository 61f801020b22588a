//! IPv4 (RFC 791): the header the router reads once at ingress and then updates in
//! place (TTL, addresses) with incremental checksum fixes.

use std::net::Ipv4Addr;
use std::num::NonZeroU8;

pub use pnet_packet::ipv4::{Ipv4Packet, MutableIpv4Packet};

use super::checksum::{self, Delta};
use super::{get16, put16, Malformed};

/// Bytes of an IPv4 header without options.
pub const IPV4_LEN: usize = 20;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Bit of the IPv4 flags field: don't fragment.
pub const FLAG_DF: u8 = 0b010;
/// Bit of the IPv4 flags field: more fragments.
pub const FLAG_MF: u8 = 0b001;

/// Offsets in the header of the fields the datapath rewrites.
const TTL_AT: usize = 8;
const CHECKSUM_AT: usize = 10;
const SRC_AT: usize = 12;
const DST_AT: usize = 16;

/// The fields of a validated IPv4 header (the repr the pipeline carries along with the
/// packet, kept in step with the bytes by the functions that rewrite them).
///
/// Sixteen bytes, the lengths as the wire has them: every stage takes it by value (and
/// `Result<Ipv4Header, _>` fits the same 16, the header length's zero being the niche),
/// so its size is paid at each stage's call; at 40 bytes (two `usize` lengths) it was
/// copied through memory at every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Total length in bytes, never more than the bytes present.
    total_len: u16,
    /// The flags (top 3 bits) and fragment offset (in 8-byte units) as on the wire.
    frag: u16,
    pub protocol: u8,
    pub ttl: u8,
    /// Header length in 32-bit words (IHL), at least 5.
    header_words: NonZeroU8,
    pub tos: u8,
}

impl Ipv4Header {
    /// Validates the IPv4 packet at the start of `b`: version 4, IHL at least 5, header
    /// and total length within the bytes present, header checksum correct.
    ///
    /// Every routed and bridged packet pays this once, at ingress, so it reads the fields
    /// with plain loads at their RFC 791 offsets (the layout [`Ipv4Packet`] reads) and
    /// sums a header without options as a fixed 20 bytes.
    #[inline(always)]
    pub fn parse(b: &[u8]) -> Result<Ipv4Header, Malformed> {
        let h: &[u8; IPV4_LEN] = b
            .get(..IPV4_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Malformed)?;
        let header_words = NonZeroU8::new(h[0] & 0x0f).ok_or(Malformed)?;
        let header_len = header_words.get() as usize * 4;
        let total_len = get16(h, 2) as usize;
        if h[0] >> 4 != 4
            || header_len < IPV4_LEN
            || header_len > b.len()
            || total_len < header_len
            || total_len > b.len()
        {
            return Err(Malformed);
        }
        let sum = if header_len == IPV4_LEN {
            checksum::add_header(0, h)
        } else {
            checksum::add(0, &b[..header_len])
        };
        if checksum::finish(sum) != 0 {
            return Err(Malformed);
        }
        // Each address as one 32-bit word, the one the checksum summed: built from its
        // bytes, the source was assembled on the stack a byte and a word at a time and
        // read back whole (a store-forwarding stall at every underlay packet's peer check).
        let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        Ok(Ipv4Header {
            src: Ipv4Addr::from_bits(word(12)),
            dst: Ipv4Addr::from_bits(word(16)),
            total_len: total_len as u16,
            frag: get16(h, 6),
            protocol: h[9],
            ttl: h[TTL_AT],
            header_words,
            tos: h[1],
        })
    }

    /// Header length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_words.get() as usize * 4
    }

    /// Total length in bytes, never more than the bytes present.
    #[inline]
    pub fn total_len(&self) -> usize {
        self.total_len as usize
    }

    /// The flags field (3 bits: reserved, DF, MF).
    pub fn flags(&self) -> u8 {
        (self.frag >> 13) as u8
    }

    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.frag & 0x1fff
    }

    pub fn dont_fragment(&self) -> bool {
        self.flags() & FLAG_DF != 0
    }

    /// True for the second and later fragments, which carry no transport header.
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset() != 0
    }

    /// The transport payload's range within the packet.
    pub fn payload(&self) -> std::ops::Range<usize> {
        self.header_len()..self.total_len()
    }

    /// The transport ports of a TCP or UDP packet `b` (whose header this is), when it
    /// carries its transport header (first fragment, long enough).
    pub fn ports(&self, b: &[u8]) -> Option<(u16, u16)> {
        if !matches!(self.protocol, PROTO_TCP | PROTO_UDP) || self.is_later_fragment() {
            return None;
        }
        let l4 = b.get(self.header_len()..self.header_len() + 4)?;
        Some((get16(l4, 0), get16(l4, 2)))
    }

    /// Decrements the TTL of `b` (whose header this is), fixing the header checksum
    /// incrementally (RFC 1624).
    #[inline]
    pub fn decrement_ttl(&mut self, b: &mut [u8]) {
        self.ttl = decrement_ttl(b);
    }

    /// Sets the source and destination addresses of `b` (whose header this is), fixing
    /// the header checksum incrementally. The transport checksum, whose pseudo-header
    /// covers them too, is the caller's: the change to apply to it is returned.
    pub fn set_addresses(&mut self, b: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Delta {
        self.src = src;
        self.dst = dst;
        set_addresses(b, src, dst)
    }
}

/// Sets the addresses of the IPv4 header at the start of `b` (checked before, or a
/// quote whose 20 fixed bytes are present), fixing its checksum incrementally. Returns
/// the change, for the transport checksum whose pseudo-header covers them.
pub(crate) fn set_addresses(b: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Delta {
    let h: &mut [u8; IPV4_LEN] = (&mut b[..IPV4_LEN]).try_into().expect("20 bytes");
    let old_src: [u8; 4] = h[SRC_AT..SRC_AT + 4].try_into().expect("4 bytes");
    let old_dst: [u8; 4] = h[DST_AT..DST_AT + 4].try_into().expect("4 bytes");
    let delta = Delta::default()
        .word32(old_src, src.octets())
        .word32(old_dst, dst.octets());
    let c = delta.apply(get16(h, CHECKSUM_AT));
    h[SRC_AT..SRC_AT + 4].copy_from_slice(&src.octets());
    h[DST_AT..DST_AT + 4].copy_from_slice(&dst.octets());
    put16(h, CHECKSUM_AT, c);
    delta
}

/// Validates the IPv4 packet at the start of `b` ([`Ipv4Header::parse`]).
#[inline(always)]
pub fn parse_ipv4(b: &[u8]) -> Result<Ipv4Header, Malformed> {
    Ipv4Header::parse(b)
}

/// The fields of an outer or generated IPv4 header (the repr to emit).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Fields {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub dont_fragment: bool,
    pub id: u16,
}

impl Ipv4Fields {
    /// Writes a 20-byte header (no options) for a packet of `total_len` bytes into the
    /// first 20 bytes of `b`, checksum included. Returns the header as the pipeline
    /// carries it, so that a packet the switch builds needs no parse.
    pub fn emit(&self, b: &mut [u8], total_len: usize) -> Ipv4Header {
        // Plain stores at RFC 791's offsets: the outer header of every encapsulated
        // packet is written here.
        let h = &mut b[..IPV4_LEN];
        let flags = if self.dont_fragment { FLAG_DF } else { 0 };
        h[0] = 0x45;
        h[1] = self.tos;
        put16(h, 2, total_len as u16);
        put16(h, 4, self.id);
        h[6] = flags << 5;
        h[7] = 0;
        h[TTL_AT] = self.ttl;
        h[9] = self.protocol;
        put16(h, CHECKSUM_AT, 0);
        h[SRC_AT..SRC_AT + 4].copy_from_slice(&self.src.octets());
        h[DST_AT..DST_AT + 4].copy_from_slice(&self.dst.octets());
        let c = checksum::of(h);
        put16(h, CHECKSUM_AT, c);
        Ipv4Header {
            src: self.src,
            dst: self.dst,
            total_len: total_len as u16,
            frag: (flags as u16) << 13,
            protocol: self.protocol,
            ttl: self.ttl,
            header_words: const { NonZeroU8::new(IPV4_LEN as u8 / 4).unwrap() },
            tos: self.tos,
        }
    }
}

/// Writes a 20-byte IPv4 header ([`Ipv4Fields::emit`]).
pub fn write_ipv4(b: &mut [u8], f: &Ipv4Fields, total_len: usize) {
    f.emit(b, total_len);
}

/// Decrements the TTL, above zero, of the valid IPv4 header at the start of `b`, fixing
/// the header checksum incrementally. Returns the new TTL. (Every caller has dropped a
/// packet whose TTL runs out before it gets here.)
///
/// The TTL is the high byte of its word, so the word drops by 0x100 and the checksum
/// rises by 0x100 with an end-around carry: Linux's `ip_decrease_ttl`, which gives the
/// same field as RFC 1624 eqn. 3 (`checksum::update16`) for every checksum, a zero
/// included, in a third of the instructions.
#[inline]
pub fn decrement_ttl(b: &mut [u8]) -> u8 {
    // The TTL and protocol word and the checksum after it, bounds-checked once.
    let h: &mut [u8; 4] = (&mut b[TTL_AT..CHECKSUM_AT + 2])
        .try_into()
        .expect("4 bytes");
    let c = u16::from_be_bytes([h[2], h[3]]) as u32 + 0x100;
    let c = (c + (c >= 0xffff) as u32) as u16;
    h[0] = h[0].wrapping_sub(1);
    [h[2], h[3]] = c.to_be_bytes();
    h[0]
}

/// The transport ports of a TCP or UDP packet ([`Ipv4Header::ports`]).
pub fn ports(b: &[u8], ip: &Ipv4Header) -> Option<(u16, u16)> {
    ip.ports(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.1.2:12345 -> 10.0.2.3:53 UDP, DF, ID 0x1234, TTL 64, checksum 0x1199.
    const PKT: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x11, 0x99, 10, 0, 1, 2, 10, 0,
        2, 3, 0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00,
    ];

    fn with_checksum(mut p: [u8; 28]) -> [u8; 28] {
        p[10..12].fill(0);
        let c = checksum::of(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn parses_literal_bytes_and_emits_them_back() {
        let h = Ipv4Header::parse(&PKT).unwrap();
        assert_eq!(h.src, Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(h.dst, Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(h.protocol, PROTO_UDP);
        assert_eq!((h.ttl, h.header_len(), h.total_len()), (64, 20, 28));
        assert!(h.dont_fragment());
        assert_eq!(h.ports(&PKT), Some((12345, 53)));
        let mut out = [0u8; IPV4_LEN];
        let fields = Ipv4Fields {
            src: h.src,
            dst: h.dst,
            protocol: h.protocol,
            ttl: h.ttl,
            tos: h.tos,
            dont_fragment: h.dont_fragment(),
            id: 0x1234,
        };
        assert_eq!(fields.emit(&mut out, h.total_len()), h);
        assert_eq!(out, PKT[..IPV4_LEN]);
    }

    #[test]
    fn refuses_truncated_and_inconsistent_headers() {
        let mut bad_ihl = PKT;
        bad_ihl[0] = 0x44;
        let mut too_long = PKT;
        too_long[3] = 0x40;
        let mut shorter_than_header = PKT;
        shorter_than_header[3] = 0x10;
        let mut v6 = PKT;
        v6[0] = 0x65;
        for p in [bad_ihl, too_long, shorter_than_header, v6] {
            assert_eq!(Ipv4Header::parse(&with_checksum(p)), Err(Malformed));
        }
        let mut bad_sum = PKT;
        bad_sum[11] ^= 1;
        assert_eq!(Ipv4Header::parse(&bad_sum), Err(Malformed));
        assert_eq!(Ipv4Header::parse(&PKT[..19]), Err(Malformed));
        assert_eq!(Ipv4Header::parse(&PKT[..27]), Err(Malformed));
    }

    #[test]
    fn ttl_decrement_and_address_rewrite_keep_checksum_valid() {
        let mut p = PKT;
        let mut h = Ipv4Header::parse(&p).unwrap();
        h.decrement_ttl(&mut p);
        assert_eq!(h.ttl, 63);
        let (a, b) = (Ipv4Addr::new(192, 168, 7, 9), Ipv4Addr::new(10, 3, 0, 50));
        h.set_addresses(&mut p, a, b);
        assert_eq!(checksum::of(&p[..20]), 0);
        assert_eq!(Ipv4Header::parse(&p), Ok(h));
    }

    /// The end-around-carry shortcut writes what RFC 1624 eqn. 3 writes, for every
    /// checksum field (0x0000 and 0xffff among them) and every TTL above 0.
    #[test]
    fn ttl_decrement_matches_rfc_1624_for_every_checksum() {
        for ttl in [1u8, 2, 64, 255] {
            for check in 0..=u16::MAX {
                let mut p = PKT;
                p[TTL_AT] = ttl;
                p[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&check.to_be_bytes());
                assert_eq!(decrement_ttl(&mut p), ttl - 1);
                let old = u16::from_be_bytes([ttl, p[TTL_AT + 1]]);
                let want = checksum::update16(check, old, old - 0x100);
                assert_eq!(
                    get16(&p, CHECKSUM_AT),
                    want,
                    "TTL {ttl}, checksum {check:#06x}"
                );
            }
        }
        for ttl in 1..=u8::MAX {
            let mut p = PKT;
            p[TTL_AT] = ttl;
            let p = with_checksum(p);
            let mut q = p;
            decrement_ttl(&mut q);
            assert_eq!(checksum::of(&q[..IPV4_LEN]), 0, "TTL {ttl}");
        }
    }
}

//! Address and port translation in place, with checksums fixed incrementally (RFC 1624),
//! and the packets a service without endpoints answers with (TCP RST).
//!
//! A rewrite changes the IPv4 addresses and the TCP/UDP ports of a packet and updates
//! the IPv4 header checksum and the transport checksum (whose pseudo-header covers the
//! addresses) by the difference only; a UDP checksum of 0 means "none" and stays 0. An
//! ICMP error about a translated packet gets its quoted header translated the same way
//! (its transport checksum too, when the quote reaches it) and its ICMP checksum
//! recomputed, since the quote is part of what it covers.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::buffer::{PacketBuf, Pool};
use crate::services::conntrack::Tuple;
use crate::wire::checksum;
use crate::wire::icmp::{self as icmpw, ICMP_LEN};
use crate::wire::tcp::{self, TcpHeader, TCP_ACK, TCP_FIN, TCP_LEN, TCP_RST, TCP_SYN};
use crate::wire::udp;
use crate::wire::{
    self, get16, put16, Ipv4Fields, Ipv4Header, IPV4_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};

/// The transport header of a TCP or UDP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4 {
    pub tuple: Tuple,
    /// TCP flags (0 for UDP).
    pub flags: u8,
}

/// Reads the transport header of a TCP or UDP packet that carries all of it: not a later
/// fragment, a TCP header of at least 20 bytes (data offset included), a UDP header of 8.
pub fn parse_l4(pkt: &[u8], ip: &Ipv4Header) -> Option<L4> {
    if ip.is_later_fragment() {
        return None;
    }
    let l4 = pkt.get(ip.header_len()..ip.total_len())?;
    let flags = match ip.protocol {
        PROTO_TCP => TcpHeader::parse(l4).ok()?.flags,
        PROTO_UDP if l4.len() >= wire::UDP_LEN => 0,
        _ => return None,
    };
    Some(L4 {
        tuple: Tuple::new(
            ip.protocol,
            ip.src,
            u16::from_be_bytes([l4[0], l4[1]]),
            ip.dst,
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        flags,
    })
}

/// Offset of the checksum in a transport header.
fn l4_checksum_at(proto: u8) -> Option<usize> {
    match proto {
        PROTO_TCP => Some(tcp::CHECKSUM_AT),
        PROTO_UDP => Some(udp::CHECKSUM_AT),
        _ => None,
    }
}

/// Rewrites the IPv4 packet whose header starts at `b[0]` (header length `hl`, protocol
/// `proto`) so its addresses and ports are `to`'s. Only the bytes present in `b` are
/// touched: a quoted packet in an ICMP error may end inside its transport header.
fn rewrite_at(b: &mut [u8], hl: usize, proto: u8, to: &Tuple) {
    // The addresses' change, summed once, fixes both checksums that cover them.
    let addresses = wire::ipv4::set_addresses(b, to.src, to.dst);
    let l4 = &mut b[hl..];
    if l4.len() < 4 {
        return;
    }
    let (old_sport, old_dport) = (get16(l4, 0), get16(l4, 2));
    put16(l4, 0, to.sport);
    put16(l4, 2, to.dport);
    let Some(at) = l4_checksum_at(proto) else {
        return;
    };
    if l4.len() < at + 2 {
        return;
    }
    let c = get16(l4, at);
    if proto == PROTO_UDP && c == 0 {
        // No checksum: stays none.
        return;
    }
    let mut c = addresses
        .word16(old_sport, to.sport)
        .word16(old_dport, to.dport)
        .apply(c);
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    put16(l4, at, c);
}

/// Rewrites a TCP or UDP packet (header `ip`, transport header present) to tuple `to`;
/// `ip` follows. `to` by value: a caller's reference into a larger value (a flow's
/// translation) made the compiler store all of that value for the call.
pub fn rewrite(pkt: &mut [u8], ip: &mut Ipv4Header, to: Tuple) {
    let end = ip.total_len();
    rewrite_at(&mut pkt[..end], ip.header_len(), ip.protocol, &to);
    ip.src = to.src;
    ip.dst = to.dst;
}

/// The transport checksum of a packet whose checksum is partial ([`crate::buffer::Offload`]:
/// the field holds the pseudo-header sum, the receiver completes it), held across the
/// service stage. The stage rewrites every packet as if its checksum were complete
/// ([`rewrite`]); for a partial one that is wrong twice over — an address change must
/// update the field as an uncomplemented sum, a port change must not touch it — so the
/// switch saves the field before the stage and [`PartialChecksum::restore`] writes it
/// afterwards from the saved value and the address changes alone, as Linux's
/// `inet_proto_csum_replace4(..., pseudohdr = true)` and `inet_proto_csum_replace2(...,
/// false)` treat a `CHECKSUM_PARTIAL` skb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialChecksum {
    /// Offset of the field in the packet.
    at: usize,
    field: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

impl PartialChecksum {
    /// The field of the TCP or UDP packet `pkt` (header `ip`), when it has one.
    pub fn save(pkt: &[u8], ip: &Ipv4Header) -> Option<PartialChecksum> {
        if ip.is_later_fragment() {
            return None;
        }
        let at = ip.header_len() + l4_checksum_at(ip.protocol)?;
        if at + 2 > ip.total_len() {
            return None;
        }
        Some(PartialChecksum {
            at,
            field: get16(pkt, at),
            src: ip.src,
            dst: ip.dst,
        })
    }

    /// Writes the field for the packet's addresses now (`ip`, kept in step by the stage).
    pub fn restore(&self, pkt: &mut [u8], ip: &Ipv4Header) {
        let mut c = self.field;
        if ip.src != self.src {
            c = checksum::update32_partial(c, self.src.octets(), ip.src.octets());
        }
        if ip.dst != self.dst {
            c = checksum::update32_partial(c, self.dst.octets(), ip.dst.octets());
        }
        put16(pkt, self.at, c);
    }
}

/// An ICMP error that quotes a TCP or UDP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    /// The quoted packet's tuple.
    pub quoted: Tuple,
    /// Offset of the quoted IPv4 header in the packet.
    inner_at: usize,
    inner_hl: usize,
}

/// Reads an ICMP destination-unreachable, time-exceeded or parameter-problem message
/// that quotes at least the ports of a TCP or UDP packet.
pub fn parse_icmp_error(pkt: &[u8], ip: &Ipv4Header) -> Option<IcmpError> {
    if ip.protocol != PROTO_ICMP || ip.is_later_fragment() {
        return None;
    }
    let icmp = pkt.get(ip.header_len()..ip.total_len())?;
    if !icmpw::is_error(*icmp.first()?) || icmp.len() < ICMP_LEN + IPV4_LEN + 4 {
        return None;
    }
    let inner = &icmp[ICMP_LEN..];
    let hl = (inner[0] & 0x0f) as usize * 4;
    if inner[0] >> 4 != 4 || hl < IPV4_LEN || inner.len() < hl + 4 {
        return None;
    }
    let proto = inner[9];
    if !matches!(proto, PROTO_TCP | PROTO_UDP) {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(inner[at], inner[at + 1], inner[at + 2], inner[at + 3]);
    Some(IcmpError {
        quoted: Tuple::new(
            proto,
            addr(12),
            get16(inner, hl),
            addr(16),
            get16(inner, hl + 2),
        ),
        inner_at: ip.header_len() + ICMP_LEN,
        inner_hl: hl,
    })
}

/// Translates an ICMP error: the quoted packet to `quoted`, the outer source and
/// destination to `src` and `dst`; fixes every checksum involved. `ip` follows.
pub fn rewrite_icmp_error(
    pkt: &mut [u8],
    ip: &mut Ipv4Header,
    e: &IcmpError,
    quoted: &Tuple,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) {
    let end = ip.total_len();
    rewrite_at(
        &mut pkt[e.inner_at..end],
        e.inner_hl,
        e.quoted.proto,
        quoted,
    );
    let icmp = &mut pkt[ip.header_len()..end];
    put16(icmp, icmpw::CHECKSUM_AT, 0);
    let c = checksum::of(icmp);
    put16(icmp, icmpw::CHECKSUM_AT, c);
    // The outer header: addresses only (ICMP has no pseudo-header).
    ip.set_addresses(pkt, src, dst);
}

/// The RST that refuses the TCP segment `pkt` (header `ip`), from its destination, as
/// Linux's `REJECT --reject-with tcp-reset` builds it: to a segment with ACK the reset
/// carries that acknowledgment as its sequence number; to one without, sequence 0 and an
/// ACK of everything the segment occupied. `None` for a RST (never answered) or an
/// empty pool. The header it wrote comes along.
pub fn tcp_reset(pool: &Arc<Pool>, pkt: &[u8], ip: &Ipv4Header) -> Option<(PacketBuf, Ipv4Header)> {
    let l4 = parse_l4(pkt, ip)?;
    if ip.protocol != PROTO_TCP || l4.flags & TCP_RST != 0 {
        return None;
    }
    let seg = &pkt[ip.header_len()..ip.total_len()];
    let tcp = TcpHeader::parse(seg).ok()?;
    let payload = (seg.len() - tcp.header_len) as u32;
    let (rseq, rack, rflags) = if l4.flags & TCP_ACK != 0 {
        (tcp.ack, 0, TCP_RST)
    } else {
        let used = payload + (l4.flags & TCP_SYN != 0) as u32 + (l4.flags & TCP_FIN != 0) as u32;
        (0, tcp.seq.wrapping_add(used), TCP_RST | TCP_ACK)
    };
    let mut buf = pool.alloc()?;
    let out = buf.append(IPV4_LEN + TCP_LEN)?;
    let rip = Ipv4Fields {
        src: ip.dst,
        dst: ip.src,
        protocol: PROTO_TCP,
        ttl: 64,
        tos: 0,
        dont_fragment: true,
        id: 0,
    }
    .emit(out, IPV4_LEN + TCP_LEN);
    let t = &mut out[IPV4_LEN..];
    TcpHeader {
        src_port: l4.tuple.dport,
        dst_port: l4.tuple.sport,
        seq: rseq,
        ack: rack,
        flags: rflags,
        header_len: TCP_LEN,
    }
    .emit(t);
    let sum = checksum::pseudo_header(ip.dst.octets(), ip.src.octets(), PROTO_TCP, TCP_LEN as u16);
    let c = checksum::finish(checksum::add(sum, t));
    put16(t, tcp::CHECKSUM_AT, c);
    Some((buf, rip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds an IPv4 packet with a TCP or UDP header and payload, checksums computed in
    /// full.
    fn packet(proto: u8, t: &Tuple, payload: &[u8], udp_checksum: bool) -> Vec<u8> {
        let l4_len = if proto == PROTO_TCP { TCP_LEN } else { 8 } + payload.len();
        let mut p = vec![0u8; IPV4_LEN + l4_len];
        wire::write_ipv4(
            &mut p,
            &Ipv4Fields {
                src: t.src,
                dst: t.dst,
                protocol: proto,
                ttl: 64,
                tos: 0,
                dont_fragment: true,
                id: 7,
            },
            IPV4_LEN + l4_len,
        );
        let l4 = &mut p[IPV4_LEN..];
        put16(l4, 0, t.sport);
        put16(l4, 2, t.dport);
        if proto == PROTO_TCP {
            l4[12] = 5 << 4;
            l4[13] = TCP_SYN;
        } else {
            put16(l4, 4, l4_len as u16);
        }
        let at = l4.len() - payload.len();
        l4[at..].copy_from_slice(payload);
        if proto == PROTO_TCP || udp_checksum {
            let sum = checksum::pseudo_header(t.src.octets(), t.dst.octets(), proto, l4_len as u16);
            let mut c = checksum::finish(checksum::add(sum, l4));
            if proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            put16(l4, l4_checksum_at(proto).unwrap(), c);
        }
        p
    }

    fn tuple() -> impl Strategy<Value = Tuple> {
        (any::<u32>(), any::<u16>(), any::<u32>(), any::<u16>())
            .prop_map(|(s, sp, d, dp)| Tuple::new(0, Ipv4Addr::from(s), sp, Ipv4Addr::from(d), dp))
    }

    /// One's-complement: 0x0000 and 0xffff are the same number.
    fn same(a: u16, b: u16) -> bool {
        a == b || (a | b == 0xffff && (a == 0 || b == 0))
    }

    proptest! {
        /// The incremental update gives what a full recomputation gives, for TCP and UDP,
        /// and a UDP checksum of 0 stays 0.
        #[test]
        fn incremental_checksums_match_full(
            from in tuple(), to in tuple(), tcp in any::<bool>(), udp_sum in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
            let from = Tuple { proto, ..from };
            let to = Tuple { proto, ..to };
            let mut p = packet(proto, &from, &payload, udp_sum);
            let mut ip = wire::parse_ipv4(&p).unwrap();
            rewrite(&mut p, &mut ip, to);
            prop_assert_eq!(Ok(ip), wire::parse_ipv4(&p));
            let want = packet(proto, &to, &payload, udp_sum);
            let at = IPV4_LEN + l4_checksum_at(proto).unwrap();
            prop_assert_eq!(&p[..at], &want[..at]);
            prop_assert_eq!(&p[at + 2..], &want[at + 2..]);
            let (got, exp) = (get16(&p, at), get16(&want, at));
            if proto == PROTO_UDP && !udp_sum {
                prop_assert_eq!(got, 0);
            } else if proto == PROTO_UDP {
                prop_assert!(got != 0 && same(got, exp));
            } else {
                prop_assert!(same(got, exp));
            }
            let ip = wire::parse_ipv4(&p).unwrap();
            prop_assert_eq!(parse_l4(&p, &ip).unwrap().tuple, to);
        }
    }

    /// `p` with its transport checksum partial, as an offloading sender leaves it.
    fn partial(p: &[u8], t: &Tuple) -> Vec<u8> {
        let mut q = p.to_vec();
        let l4_len = (p.len() - IPV4_LEN) as u16;
        let pseudo = checksum::pseudo_header(t.src.octets(), t.dst.octets(), t.proto, l4_len);
        let at = IPV4_LEN + l4_checksum_at(t.proto).unwrap();
        put16(&mut q, at, !checksum::finish(pseudo));
        q
    }

    /// Completes a partial checksum as the receiver's kernel (or a NIC) would.
    fn complete(p: &mut [u8], proto: u8) {
        let at = l4_checksum_at(proto).unwrap();
        let mut c = checksum::of(&p[IPV4_LEN..]);
        if proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        put16(&mut p[IPV4_LEN..], at, c);
    }

    proptest! {
        /// DNAT, SNAT and reverse NAT of a packet whose checksum is partial, with ports
        /// changing too: the service stage's rewrite, then the saved field restored for
        /// the new addresses, leaves the partial sum of the new packet, which completes
        /// to the checksum a sender of the translated packet would have computed.
        #[test]
        fn a_partial_checksum_survives_nat(
            from in tuple(), to in tuple(), tcp in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
            let from = Tuple { proto, ..from };
            let to = Tuple { proto, ..to };
            let mut p = partial(&packet(proto, &from, &payload, true), &from);
            let mut ip = wire::parse_ipv4(&p).unwrap();
            let saved = PartialChecksum::save(&p, &ip).unwrap();
            rewrite(&mut p, &mut ip, to);
            saved.restore(&mut p, &ip);
            let want = packet(proto, &to, &payload, true);
            prop_assert_eq!(&p, &partial(&want, &to));
            complete(&mut p, proto);
            let at = IPV4_LEN + l4_checksum_at(proto).unwrap();
            prop_assert!(same(get16(&p, at), get16(&want, at)));
            prop_assert_eq!(&p[..at], &want[..at]);
        }
    }

    #[test]
    fn a_port_change_leaves_a_partial_checksum_alone() {
        let a = Ipv4Addr::new(10, 0, 1, 11);
        let vip = Ipv4Addr::new(10, 3, 0, 50);
        let from = Tuple::new(PROTO_TCP, a, 40000, vip, 80);
        let to = Tuple::new(PROTO_TCP, a, 40000, vip, 8080);
        let before = partial(&packet(PROTO_TCP, &from, b"data", true), &from);
        let mut p = before.clone();
        let mut ip = wire::parse_ipv4(&p).unwrap();
        let saved = PartialChecksum::save(&p, &ip).unwrap();
        rewrite(&mut p, &mut ip, to);
        let at = IPV4_LEN + tcp::CHECKSUM_AT;
        assert_ne!(
            get16(&p, at),
            get16(&before, at),
            "the stage's own update moved it"
        );
        saved.restore(&mut p, &ip);
        assert_eq!(get16(&p, at), get16(&before, at));
    }

    #[test]
    fn reset_answers_syn_with_ack_of_it() {
        let t = Tuple::new(
            PROTO_TCP,
            Ipv4Addr::new(10, 0, 1, 33),
            40000,
            Ipv4Addr::new(10, 3, 0, 50),
            80,
        );
        let mut p = packet(PROTO_TCP, &t, b"", false);
        p[IPV4_LEN + 4..IPV4_LEN + 8].copy_from_slice(&1000u32.to_be_bytes());
        let ip = wire::parse_ipv4(&p).unwrap();
        let pool = Pool::new(1, 256);
        let (r, written) = tcp_reset(&pool, &p, &ip).unwrap();
        let r = r.data();
        let rip = wire::parse_ipv4(r).unwrap();
        assert_eq!(rip, written);
        assert_eq!((rip.src, rip.dst), (t.dst, t.src));
        let l4 = parse_l4(r, &rip).unwrap();
        assert_eq!(l4.tuple, t.reversed());
        assert_eq!(l4.flags, TCP_RST | TCP_ACK);
        assert_eq!(&r[IPV4_LEN + 8..IPV4_LEN + 12], &1001u32.to_be_bytes());
        let sum = checksum::pseudo_header(t.dst.octets(), t.src.octets(), PROTO_TCP, 20);
        assert_eq!(checksum::finish(checksum::add(sum, &r[IPV4_LEN..])), 0);
    }
}

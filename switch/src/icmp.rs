//! ICMP messages the gateway originates: errors about packets it cannot forward, and
//! echo replies for pings to its own addresses.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::buffer::{PacketBuf, Pool};
use crate::wire::checksum;
use crate::wire::icmp::{
    is_query, IcmpHeader, DEST_UNREACHABLE, ECHO_REPLY, ECHO_REQUEST, FRAG_NEEDED, ICMP_LEN,
    TIME_EXCEEDED,
};
use crate::wire::{self, Ipv4Fields, Ipv4Header, IPV4_LEN, PROTO_ICMP};

/// An error the gateway reports to a packet's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Type 3 code 0: no node owns the destination's subnet (flannel's UDP backend).
    NetUnreachable,
    /// Type 3 code 3: nothing listens on that port (a service without endpoints, UDP).
    PortUnreachable,
    /// Type 3 code 4: DF set and larger than the next hop's MTU, which is carried along.
    FragmentationNeeded { mtu: u16 },
    /// Type 11 code 0: TTL ran out in transit.
    TimeExceeded,
}

impl IcmpError {
    fn type_code(self) -> (u8, u8) {
        match self {
            IcmpError::NetUnreachable => (DEST_UNREACHABLE, 0),
            IcmpError::PortUnreachable => (DEST_UNREACHABLE, 3),
            IcmpError::FragmentationNeeded { .. } => (DEST_UNREACHABLE, FRAG_NEEDED),
            IcmpError::TimeExceeded => (TIME_EXCEEDED, 0),
        }
    }
}

/// Largest ICMP error datagram: RFC 1812 4.3.2.3 quotes as much of the offending
/// packet as fits in 576 bytes.
const MAX_ERROR_LEN: usize = 576;

/// True when RFC 1122 3.2.2 allows an error about this packet: not about an ICMP error,
/// not about a later fragment, not to a source that is no single host.
pub fn may_report(packet: &[u8], ip: &Ipv4Header) -> bool {
    if ip.is_later_fragment() {
        return false;
    }
    let src = ip.src;
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || src.is_loopback() {
        return false;
    }
    if ip.protocol == PROTO_ICMP {
        let Some(&ty) = packet.get(ip.header_len()) else {
            return false;
        };
        // Only queries (echo, timestamp, ...) may be answered with an error.
        return is_query(ty);
    }
    true
}

/// Builds the error `kind` about `offender` (an IPv4 packet whose header is `ip`), sent
/// from `from`, and the IPv4 header it wrote. `None` when the pool is empty.
pub fn error(
    pool: &Arc<Pool>,
    offender: &[u8],
    ip: &Ipv4Header,
    from: Ipv4Addr,
    kind: IcmpError,
) -> Option<(PacketBuf, Ipv4Header)> {
    let quoted = &offender[..ip.total_len().min(MAX_ERROR_LEN - IPV4_LEN - ICMP_LEN)];
    let icmp_len = ICMP_LEN + quoted.len();
    let mut buf = pool.alloc()?;
    let out = buf.append(IPV4_LEN + icmp_len)?;
    let eip = Ipv4Fields {
        src: from,
        dst: ip.src,
        protocol: PROTO_ICMP,
        ttl: 64,
        // Internetwork control, as Linux sends its ICMP errors.
        tos: 0xc0,
        dont_fragment: false,
        id: 0,
    }
    .emit(out, IPV4_LEN + icmp_len);
    let icmp = &mut out[IPV4_LEN..];
    let (ty, code) = kind.type_code();
    let mut rest = [0u8; 4];
    if let IcmpError::FragmentationNeeded { mtu } = kind {
        rest[2..].copy_from_slice(&mtu.to_be_bytes());
    }
    icmp[ICMP_LEN..].copy_from_slice(quoted);
    IcmpHeader { ty, code, rest }.emit(icmp);
    Some((buf, eip))
}

/// Turns an echo request (an IPv4 packet addressed to one of the gateway's addresses)
/// into the reply, in place; `ip` follows. `None` when it is not a well-formed echo
/// request.
pub fn echo_reply_in_place(packet: &mut [u8], ip: &mut Ipv4Header) -> Option<()> {
    if ip.protocol != PROTO_ICMP || ip.is_later_fragment() || ip.flags() & wire::FLAG_MF != 0 {
        return None;
    }
    let icmp = packet.get(ip.header_len()..ip.total_len())?;
    if icmp.len() < 8 || icmp[0] != ECHO_REQUEST || checksum::of(icmp) != 0 {
        return None;
    }
    let hl = ip.header_len();
    // ICMP: type 8 -> 0, checksum fixed incrementally.
    let old = u16::from_be_bytes([packet[hl], packet[hl + 1]]);
    packet[hl] = ECHO_REPLY;
    let new = u16::from_be_bytes([packet[hl], packet[hl + 1]]);
    let c = checksum::update16(
        u16::from_be_bytes([packet[hl + 2], packet[hl + 3]]),
        old,
        new,
    );
    packet[hl + 2..hl + 4].copy_from_slice(&c.to_be_bytes());
    // IP: swap the addresses, fresh TTL, new header checksum.
    let (src, dst) = (ip.src.octets(), ip.dst.octets());
    packet[12..16].copy_from_slice(&dst);
    packet[16..20].copy_from_slice(&src);
    packet[8] = 64;
    packet[10..12].fill(0);
    let c = checksum::of(&packet[..hl]);
    packet[10..12].copy_from_slice(&c.to_be_bytes());
    (ip.src, ip.dst, ip.ttl) = (ip.dst, ip.src, 64);
    Some(())
}

//! UDP (RFC 768): the outer header of both flannel encapsulations, and a transport NAT
//! rewrites.

use std::net::Ipv4Addr;

pub use pnet_packet::udp::{MutableUdpPacket, UdpPacket};

use super::{checksum, get16, put16, Malformed, PROTO_UDP};

/// Bytes of a UDP header.
pub const UDP_LEN: usize = 8;

/// Offset of the checksum in the header.
pub const CHECKSUM_AT: usize = 6;

/// flannel's VXLAN port, the Linux kernel's default (IANA's is 4789).
pub const VXLAN_PORT: u16 = 8472;
/// flannel's UDP backend port.
pub const FLANNEL_UDP_PORT: u16 = 8285;

/// A UDP header (the repr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    /// The length field: header and payload, in bytes.
    pub len: usize,
}

impl UdpHeader {
    /// Reads the UDP header at the start of `b`, the datagram's bytes as far as its IPv4
    /// packet goes: the length field must be at least the header and fit in `b`.
    pub fn parse(b: &[u8]) -> Result<UdpHeader, Malformed> {
        let h = b.get(..UDP_LEN).ok_or(Malformed)?;
        let len = get16(h, 4) as usize;
        if len < UDP_LEN || len > b.len() {
            return Err(Malformed);
        }
        Ok(UdpHeader {
            src_port: get16(h, 0),
            dst_port: get16(h, 2),
            len,
        })
    }

    /// The payload's range within the datagram.
    pub fn payload(&self) -> std::ops::Range<usize> {
        UDP_LEN..self.len
    }

    /// Writes the header into the first 8 bytes of `b`, checksum 0 ("none").
    pub fn emit(&self, b: &mut [u8]) {
        let mut udp = MutableUdpPacket::new(&mut b[..UDP_LEN]).expect("8 bytes");
        udp.set_source(self.src_port);
        udp.set_destination(self.dst_port);
        udp.set_length(self.len as u16);
        udp.set_checksum(0);
    }
}

/// Writes a UDP header for `payload_len` bytes of payload into the first 8 bytes of `b`.
/// The checksum is left 0 ("none", as VXLAN senders do) unless `checksum_over` gives the
/// IP addresses, in which case it is computed over the header and the payload that
/// follows it in `b`.
pub fn write_udp(
    b: &mut [u8],
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
    checksum_over: Option<(Ipv4Addr, Ipv4Addr)>,
) {
    let len = UDP_LEN + payload_len;
    UdpHeader {
        src_port,
        dst_port,
        len,
    }
    .emit(b);
    if let Some((src, dst)) = checksum_over {
        let sum = checksum::pseudo_header(src.octets(), dst.octets(), PROTO_UDP, len as u16);
        put16(
            b,
            CHECKSUM_AT,
            checksum_field(checksum::add(sum, &b[..len])),
        );
    }
}

/// The checksum field of a datagram whose pseudo header, header and payload sum to `sum`.
#[inline]
pub fn checksum_field(sum: u32) -> u16 {
    match checksum::finish(sum) {
        // RFC 768: a computed zero is sent as all ones; zero means "no checksum".
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 50000 -> 8472, 12 bytes, checksum over 10.1.0.1 -> 10.1.0.2 and "abcd".
    const DATAGRAM: [u8; 12] = [
        0xc3, 0x50, 0x21, 0x18, 0x00, 0x0c, 0x42, 0xa2, b'a', b'b', b'c', b'd',
    ];

    #[test]
    fn parses_literal_bytes_and_emits_them_back() {
        let h = UdpHeader::parse(&DATAGRAM).unwrap();
        assert_eq!(
            h,
            UdpHeader {
                src_port: 50000,
                dst_port: VXLAN_PORT,
                len: 12
            }
        );
        assert_eq!(&DATAGRAM[h.payload()], b"abcd");
        let mut out = DATAGRAM;
        out[..UDP_LEN].fill(0);
        let (src, dst) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2));
        write_udp(&mut out, 50000, VXLAN_PORT, 4, Some((src, dst)));
        assert_eq!(out, DATAGRAM);
        let mut bare = [0u8; UDP_LEN];
        h.emit(&mut bare);
        assert_eq!(bare[..6], DATAGRAM[..6]);
        assert_eq!(bare[6..], [0, 0]);
    }

    #[test]
    fn refuses_truncated_and_inconsistent_headers() {
        assert_eq!(UdpHeader::parse(&DATAGRAM[..7]), Err(Malformed));
        // The length field says more than the packet holds, or less than a header.
        assert_eq!(UdpHeader::parse(&DATAGRAM[..11]), Err(Malformed));
        let mut short = DATAGRAM;
        short[5] = 7;
        assert_eq!(UdpHeader::parse(&short), Err(Malformed));
    }
}

//! Ethernet II (IEEE 802.3 with an ethertype), without FCS: the frame as a TAP device
//! and a raw socket carry it.

use pnet_base::MacAddr;
pub use pnet_packet::ethernet::{EthernetPacket, MutableEthernetPacket};

use super::Malformed;
use crate::wire::mac::Mac;

/// Bytes of an Ethernet header: destination, source, ethertype.
pub const ETH_LEN: usize = 14;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;

impl From<Mac> for MacAddr {
    fn from(m: Mac) -> MacAddr {
        let b = m.0;
        MacAddr(b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl From<MacAddr> for Mac {
    fn from(m: MacAddr) -> Mac {
        Mac([m.0, m.1, m.2, m.3, m.4, m.5])
    }
}

/// The Ethernet header of a frame (the repr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthHeader {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

impl EthHeader {
    /// Reads the header; the frame must hold at least the header. Plain loads of the
    /// three fields (every frame pays this once, at ingress), in the layout
    /// [`EthernetPacket`] reads.
    #[inline(always)]
    pub fn parse(frame: &[u8]) -> Result<EthHeader, Malformed> {
        // One length check; the splits of a 14-byte array cannot fail (and compile to none).
        let h: &[u8; ETH_LEN] = frame
            .get(..ETH_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Malformed)?;
        let (dst, rest) = h.split_first_chunk::<6>().ok_or(Malformed)?;
        let (src, rest) = rest.split_first_chunk::<6>().ok_or(Malformed)?;
        let (ethertype, _) = rest.split_first_chunk::<2>().ok_or(Malformed)?;
        Ok(EthHeader {
            dst: Mac(*dst),
            src: Mac(*src),
            ethertype: u16::from_be_bytes(*ethertype),
        })
    }

    /// Writes the header into the first 14 bytes of `b` (three stores, the layout
    /// [`MutableEthernetPacket`] writes).
    pub fn emit(&self, b: &mut [u8]) {
        let h = &mut b[..ETH_LEN];
        h[..6].copy_from_slice(&self.dst.0);
        h[6..12].copy_from_slice(&self.src.0);
        h[12..].copy_from_slice(&self.ethertype.to_be_bytes());
    }
}

/// Reads the Ethernet header; the frame must hold at least the header.
#[inline(always)]
pub fn parse_eth(frame: &[u8]) -> Result<EthHeader, Malformed> {
    EthHeader::parse(frame)
}

/// Writes an Ethernet header into the first 14 bytes of `b`.
pub fn write_eth(b: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    EthHeader {
        dst,
        src,
        ethertype,
    }
    .emit(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        0x02, 0, 0, 0, 0, 0x02, 0x0a, 0x58, 0x0a, 0, 1, 2, 0x08, 0x00, 0x45, 0x00,
    ];

    #[test]
    fn parses_literal_bytes_and_emits_them_back() {
        let h = EthHeader::parse(&FRAME).unwrap();
        assert_eq!(h.dst, Mac([2, 0, 0, 0, 0, 2]));
        assert_eq!(h.src, Mac([0x0a, 0x58, 0x0a, 0, 1, 2]));
        assert_eq!(h.ethertype, ETHERTYPE_IPV4);
        let mut out = [0u8; ETH_LEN];
        h.emit(&mut out);
        assert_eq!(out, FRAME[..ETH_LEN]);
    }

    #[test]
    fn refuses_a_truncated_header() {
        assert_eq!(EthHeader::parse(&FRAME[..13]), Err(Malformed));
        assert_eq!(EthHeader::parse(&[]), Err(Malformed));
    }
}

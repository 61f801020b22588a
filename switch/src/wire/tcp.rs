//! TCP (RFC 9293): the header fields conntrack follows (ports, flags) and the RST a
//! service without endpoints answers with.

pub use pnet_packet::tcp::{MutableTcpPacket, TcpPacket};

use super::{get16, put16, Malformed};

/// Bytes of a TCP header without options.
pub const TCP_LEN: usize = 20;

/// Offset of the checksum in the header.
pub const CHECKSUM_AT: usize = 16;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_CWR: u8 = 0x80;

/// A TCP header (the repr; options are skipped, and the window and urgent pointer are
/// not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Data offset in bytes, options included.
    pub header_len: usize,
}

impl TcpHeader {
    /// Reads the TCP header at the start of `b`, the segment's bytes: at least 20 bytes,
    /// a data offset of at least 20 that fits in `b`.
    pub fn parse(b: &[u8]) -> Result<TcpHeader, Malformed> {
        if b.len() < TCP_LEN {
            return Err(Malformed);
        }
        let header_len = (b[12] >> 4) as usize * 4;
        if header_len < TCP_LEN || header_len > b.len() {
            return Err(Malformed);
        }
        Ok(TcpHeader {
            src_port: get16(b, 0),
            dst_port: get16(b, 2),
            seq: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
            ack: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
            flags: b[13],
            header_len,
        })
    }

    /// Writes a 20-byte header (no options, window 0, checksum 0) into `b`; the caller
    /// fills in the checksum once the segment is complete.
    pub fn emit(&self, b: &mut [u8]) {
        let t = &mut b[..TCP_LEN];
        put16(t, 0, self.src_port);
        put16(t, 2, self.dst_port);
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = (TCP_LEN as u8 / 4) << 4;
        t[13] = self.flags;
        t[14..20].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 80 -> 40000, seq 0, ack 1001, RST|ACK, no options, window 0, checksum 0.
    const RST: [u8; TCP_LEN] = [
        0, 80, 0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0x03, 0xe9, 0x50, 0x14, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn parses_literal_bytes_and_emits_them_back() {
        let h = TcpHeader::parse(&RST).unwrap();
        assert_eq!(
            h,
            TcpHeader {
                src_port: 80,
                dst_port: 40000,
                seq: 0,
                ack: 1001,
                flags: TCP_RST | TCP_ACK,
                header_len: TCP_LEN,
            }
        );
        let mut out = [0xffu8; TCP_LEN];
        h.emit(&mut out);
        assert_eq!(out, RST);
    }

    #[test]
    fn refuses_truncated_and_inconsistent_headers() {
        assert_eq!(TcpHeader::parse(&RST[..19]), Err(Malformed));
        let mut short_offset = RST;
        short_offset[12] = 0x40;
        assert_eq!(TcpHeader::parse(&short_offset), Err(Malformed));
        // Options announced that the segment does not hold.
        let mut long_offset = RST;
        long_offset[12] = 0x60;
        assert_eq!(TcpHeader::parse(&long_offset), Err(Malformed));
    }
}

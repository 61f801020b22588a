//! `IFF_VNET_HDR` offloads on pod TAP devices: the pod's kernel hands over TCP segments of
//! up to 64 KiB in one `read` (TSO) and leaves checksums to us (`NEEDS_CSUM`); they are
//! segmented here, in software, into MSS-sized frames before the switch sees them, since
//! every frame the switch forwards must fit the pod MTU (it leaves as one underlay packet
//! or reaches a pod as one frame). Frames written to a TAP get a zero header: no GSO, and
//! their checksums are complete.
//!
//! Offered to the kernel: `TUN_F_CSUM | TUN_F_TSO4` (IPv4 TCP only; no UFO/USO, no TSO6).

use std::sync::Arc;

use podnet_switch::buffer::{PacketBuf, Pool};
use podnet_switch::checksum;
use podnet_switch::wire::ipv4::{Ipv4Packet, MutableIpv4Packet};
use podnet_switch::wire::tcp::{MutableTcpPacket, TcpHeader, TCP_CWR, TCP_FIN, TCP_PSH};
use podnet_switch::wire::{
    udp, EthHeader, Packet, ETHERTYPE_IPV4, ETH_LEN, IPV4_LEN, PROTO_TCP, PROTO_UDP,
};

/// `struct virtio_net_hdr` (without `num_buffers`), as tun uses it by default.
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_ECN: u8 = 0x80;

const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
/// `TUNSETOFFLOAD`, `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;

/// Restricts a device opened with `IFF_VNET_HDR` to the offloads this module handles.
pub fn set_offloads(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes an unsigned int by value on a TUN/TAP descriptor.
    let r = unsafe { libc::ioctl(fd, TUNSETOFFLOAD as _, TUN_F_CSUM | TUN_F_TSO4) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A parsed `virtio_net_hdr` (little-endian fields, as on every host podnet runs on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }
}

/// Why a frame from an offloading TAP was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitError {
    Malformed,
    Unsupported,
    NoBuffer,
}

/// Turns one read from an offloading TAP (`raw`: the vnet header, then the frame) into
/// frames the switch takes, appended to `out` in buffers from `pool`: the checksum left
/// to offload filled in, a TCP/IPv4 super-segment split at `gso_size`. Returns true for a
/// super-segment.
pub fn split(raw: &[u8], pool: &Arc<Pool>, out: &mut Vec<PacketBuf>) -> Result<bool, SplitError> {
    let h = VnetHdr::parse(raw).ok_or(SplitError::Malformed)?;
    let frame = &raw[VNET_HDR_LEN..];
    match h.gso_type & !GSO_ECN {
        GSO_NONE => {
            let mut buf = pool.alloc_from(frame).ok_or(SplitError::NoBuffer)?;
            if h.flags & F_NEEDS_CSUM != 0 {
                fill_checksum(
                    buf.data_mut(),
                    h.csum_start as usize,
                    h.csum_offset as usize,
                )?;
            }
            out.push(buf);
            Ok(false)
        }
        GSO_TCPV4 => segment_tcp4(frame, h.gso_size as usize, pool, out).map(|()| true),
        _ => Err(SplitError::Unsupported),
    }
}

/// Completes a checksum the sender left partial: the field holds the pseudo-header sum,
/// the sum runs from `start` to the end of the frame.
fn fill_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), SplitError> {
    let at = start + offset;
    if at + 2 > frame.len() {
        return Err(SplitError::Malformed);
    }
    let mut c = checksum::of(&frame[start..]);
    // A UDP checksum computed as 0 is sent as all ones (RFC 768).
    let is_udp = offset == udp::CHECKSUM_AT
        && Ipv4Packet::new(&frame[ETH_LEN.min(frame.len())..])
            .is_some_and(|ip| ip.get_next_level_protocol().0 == PROTO_UDP);
    if c == 0 && is_udp {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Splits a TCP/IPv4 super-segment (an Ethernet frame) into segments of at most `mss` payload bytes, each
/// with its own IP ID, length and checksum, sequence number, flags and TCP checksum.
pub fn segment_tcp4(
    frame: &[u8],
    mss: usize,
    pool: &Arc<Pool>,
    out: &mut Vec<PacketBuf>,
) -> Result<(), SplitError> {
    let bad = SplitError::Malformed;
    if EthHeader::parse(frame).map_err(|_| bad)?.ethertype != ETHERTYPE_IPV4 {
        return Err(bad);
    }
    let ip_at = ETH_LEN;
    // Read through the views without the datapath's validation: the kernel's total length
    // and checksums of a super-segment are rewritten per segment anyway.
    let ip = Ipv4Packet::new(&frame[ip_at..]).ok_or(bad)?;
    let ihl = usize::from(ip.get_header_length()) * 4;
    if ihl < IPV4_LEN || ip.get_next_level_protocol().0 != PROTO_TCP {
        return Err(bad);
    }
    let tcp_at = ip_at + ihl;
    let tcp = TcpHeader::parse(frame.get(tcp_at..).ok_or(bad)?).map_err(|_| bad)?;
    let hdr_end = tcp_at + tcp.header_len;
    if mss == 0 {
        return Err(bad);
    }
    let headers = &frame[..hdr_end];
    let payload = &frame[hdr_end..];
    let (id0, src, dst) = (
        ip.get_identification(),
        ip.get_source(),
        ip.get_destination(),
    );
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let mut buf = pool.alloc().ok_or(SplitError::NoBuffer)?;
        let seg = buf
            .append(headers.len() + chunk.len())
            .ok_or(SplitError::NoBuffer)?;
        seg[..headers.len()].copy_from_slice(headers);
        seg[headers.len()..].copy_from_slice(chunk);
        let (ip_bytes, tcp_bytes) = seg[ip_at..].split_at_mut(ihl);
        let mut ipv = MutableIpv4Packet::new(ip_bytes).expect("a whole IPv4 header");
        ipv.set_total_length((ihl + tcp.header_len + chunk.len()) as u16);
        ipv.set_identification(id0.wrapping_add(i as u16));
        ipv.set_checksum(0);
        let ipc = checksum::of(ipv.packet());
        ipv.set_checksum(ipc);
        let mut flags = tcp.flags;
        if i + 1 < n {
            flags &= !(TCP_FIN | TCP_PSH); // only on the last segment
        }
        if i > 0 {
            flags &= !TCP_CWR; // only on the first
        }
        let mut tcpv = MutableTcpPacket::new(tcp_bytes).expect("a whole TCP header");
        tcpv.set_sequence(tcp.seq.wrapping_add((i * mss) as u32));
        tcpv.set_flags(flags);
        tcpv.set_checksum(0);
        let tcp_len = tcpv.packet().len() as u16;
        let sum = checksum::pseudo_header(src.octets(), dst.octets(), PROTO_TCP, tcp_len);
        let c = checksum::finish(checksum::add(sum, tcpv.packet()));
        tcpv.set_checksum(c);
        buf.mark_checksum_known_good();
        out.push(buf);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_switch::wire;

    /// An Ethernet + IPv4 + TCP frame with `payload`, its checksums valid.
    fn tcp_frame(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; ETH_LEN + 20 + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(payload);
        let fields = wire::Ipv4Fields {
            src: "10.0.1.10".parse().unwrap(),
            dst: "10.0.2.10".parse().unwrap(),
            protocol: PROTO_TCP,
            ttl: 64,
            tos: 0,
            dont_fragment: true,
            id: 100,
        };
        wire::write_ipv4(&mut f[ETH_LEN..], &fields, 40 + payload.len());
        let t = ETH_LEN + 20;
        f[t..t + 2].copy_from_slice(&1234u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&80u16.to_be_bytes());
        f[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        f[t + 12] = 5 << 4;
        f[t + 13] = flags;
        let sum = checksum::pseudo_header(
            [10, 0, 1, 10],
            [10, 0, 2, 10],
            PROTO_TCP,
            (20 + payload.len()) as u16,
        );
        let c = checksum::finish(checksum::add(sum, &f[t..]));
        f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn vnet(flags: u8, gso_type: u8, gso_size: u16, csum_start: u16, csum_offset: u16) -> Vec<u8> {
        let mut h = vec![flags, gso_type];
        for v in [54u16, gso_size, csum_start, csum_offset] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    #[test]
    fn a_super_segment_splits_into_the_segments_tcp_would_have_sent() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let big = tcp_frame(1000, 0x18 | 0x01, &payload); // PSH ACK FIN
        let mut raw = vnet(F_NEEDS_CSUM, GSO_TCPV4, 1400, 34, 16);
        raw.extend_from_slice(&big);
        let pool = Pool::new(8, 2048);
        let mut out = Vec::new();
        assert!(split(&raw, &pool, &mut out).unwrap());
        assert_eq!(out.len(), 3);
        for (i, (seg, len)) in out.iter().zip([1400, 1400, 200]).enumerate() {
            let want = tcp_frame(
                1000 + 1400 * i as u32,
                if i == 2 { 0x19 } else { 0x10 },
                &payload[1400 * i..1400 * i + len],
            );
            let mut want = want;
            // Only the IP ID (and so the IP checksum) differs from a plain send.
            want[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&(100 + i as u16).to_be_bytes());
            want[ETH_LEN + 10..ETH_LEN + 12].fill(0);
            let c = checksum::of(&want[ETH_LEN..ETH_LEN + 20]);
            want[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&c.to_be_bytes());
            assert_eq!(seg.data(), &want[..], "segment {i}");
        }
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let good = tcp_frame(7, 0x10, b"hello");
        let t = ETH_LEN + 20;
        let mut partial = good.clone();
        // What the kernel leaves: the pseudo-header sum, not complemented.
        let pseudo = checksum::pseudo_header([10, 0, 1, 10], [10, 0, 2, 10], PROTO_TCP, 25);
        let folded = !checksum::finish(pseudo);
        partial[t + 16..t + 18].copy_from_slice(&folded.to_be_bytes());
        let mut raw = vnet(F_NEEDS_CSUM, GSO_NONE, 0, t as u16, 16);
        raw.extend_from_slice(&partial);
        let pool = Pool::new(2, 2048);
        let mut out = Vec::new();
        split(&raw, &pool, &mut out).unwrap();
        assert_eq!(out[0].data(), &good[..]);
    }

    #[test]
    fn other_gso_types_are_refused() {
        let mut raw = vnet(0, 4, 1400, 0, 0);
        raw.extend_from_slice(&[0u8; 60]);
        let pool = Pool::new(2, 2048);
        assert_eq!(
            split(&raw, &pool, &mut Vec::new()),
            Err(SplitError::Unsupported)
        );
    }
}

//! `IFF_VNET_HDR` offloads on pod TAP devices: the `virtio_net_hdr` in front of every
//! frame, read and written, and the ioctl that says which offloads the pod's kernel may
//! use. The pod's kernel hands over TCP segments of up to 64 KiB in one `read` (TSO) and
//! leaves checksums to us (`NEEDS_CSUM`); [`receive`] passes such a read to the switch
//! whole, as one buffer with its [`Offload`] metadata, and the core cuts it only where it
//! must leave as MTU-sized packets ([`podnet_switch::gso`]). On the way out, a frame that
//! still carries metadata (a super-frame to an offloading pod, a partial checksum) is
//! written with the header that says so ([`VnetHdr::for_frame`]), any other with a zero
//! header: no GSO, its checksums complete.
//!
//! Offered to the kernel: `TUN_F_CSUM | TUN_F_TSO4` (IPv4 TCP only; no UFO/USO, no TSO6).

use std::sync::Arc;

use podnet_switch::buffer::{Gso, Offload, PacketBuf, Pool};
use podnet_switch::checksum;
use podnet_switch::gso;
use podnet_switch::wire::ipv4::Ipv4Packet;
use podnet_switch::wire::tcp::{self, TCP_CWR};
use podnet_switch::wire::{
    udp, EthHeader, ETHERTYPE_IPV4, ETH_LEN, IPV4_LEN, PROTO_TCP, PROTO_UDP,
};

/// `struct virtio_net_hdr` (without `num_buffers`), as tun uses it by default.
pub const VNET_HDR_LEN: usize = 10;

pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_ECN: u8 = 0x80;

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

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// The header that says of the Ethernet `frame` (IPv4, TCP or UDP, as the core left
    /// it) what its `offload` metadata says, as Linux's `virtio_net_hdr_from_skb` writes
    /// it: `NEEDS_CSUM` with the transport header's start and checksum offset for a
    /// partial checksum; for a super-frame `GSO_TCPV4` (with the ECN bit when the segment
    /// carries CWR, `SKB_GSO_TCP_ECN`), the header length and the segment size. `None`
    /// for a frame too short to be what the metadata says.
    pub fn for_frame(frame: &[u8], offload: Offload) -> Option<VnetHdr> {
        let ip = frame.get(ETH_LEN..ETH_LEN + IPV4_LEN)?;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let l4_at = ETH_LEN + ihl;
        let mut h = VnetHdr {
            flags: 0,
            gso_type: GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: 0,
            csum_offset: 0,
        };
        if offload.csum_partial {
            h.flags = F_NEEDS_CSUM;
            h.csum_start = l4_at as u16;
            h.csum_offset = match ip[9] {
                PROTO_TCP => tcp::CHECKSUM_AT,
                PROTO_UDP => udp::CHECKSUM_AT,
                _ => return None,
            } as u16;
        }
        if offload.gso == Gso::Tcp4 {
            let tcp = frame.get(l4_at..l4_at + tcp::TCP_LEN)?;
            let ecn = if tcp[13] & TCP_CWR != 0 { GSO_ECN } else { 0 };
            h.gso_type = GSO_TCPV4 | ecn;
            h.hdr_len = (l4_at + usize::from(tcp[12] >> 4) * 4) as u16;
            h.gso_size = offload.gso_size;
        }
        Some(h)
    }
}

/// Why a frame from an offloading TAP (or a super-frame from the underlay) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitError {
    Malformed,
    Unsupported,
    NoBuffer,
}

impl From<gso::Error> for SplitError {
    fn from(e: gso::Error) -> SplitError {
        match e {
            gso::Error::Malformed => SplitError::Malformed,
            gso::Error::NoBuffer => SplitError::NoBuffer,
        }
    }
}

/// Turns one read from an offloading TAP (`big`: the vnet header, then the frame, in a
/// 64 KiB buffer) into what the switch takes, appended to `out`:
///
/// - a TCP/IPv4 super-segment (`GSO_TCPV4`, `NEEDS_CSUM` at the TCP checksum) stays in
///   `big`, whole, with [`Gso::Tcp4`], its `gso_size` and a partial checksum;
/// - a plain frame is copied into a buffer from `pool` (its 64 KiB buffer goes back for
///   the next read); `NEEDS_CSUM` on an IPv4 TCP or UDP frame at the transport checksum
///   stays partial, anywhere else (an unusual layout) it is completed here;
/// - a super-segment with another layout is cut here, as before the core knew GSO.
///
/// Returns true for a super-segment.
pub fn receive(
    mut big: PacketBuf,
    pool: &Arc<Pool>,
    out: &mut Vec<PacketBuf>,
) -> Result<bool, SplitError> {
    let h = VnetHdr::parse(big.data()).ok_or(SplitError::Malformed)?;
    big.strip(VNET_HDR_LEN).ok_or(SplitError::Malformed)?;
    let partial = h.flags & F_NEEDS_CSUM != 0;
    let standard = partial && standard_checksum(big.data(), &h);
    match h.gso_type & !GSO_ECN {
        GSO_NONE => {
            let mut buf = pool.alloc_from(big.data()).ok_or(SplitError::NoBuffer)?;
            if standard {
                buf.set_offload(Offload {
                    csum_partial: true,
                    ..Offload::NONE
                });
            } else if partial {
                fill_checksum(
                    buf.data_mut(),
                    h.csum_start as usize,
                    h.csum_offset as usize,
                )?;
            }
            out.push(buf);
            Ok(false)
        }
        GSO_TCPV4 if standard && h.gso_size > 0 && is_tcp4(big.data()) => {
            big.set_offload(Offload {
                gso: Gso::Tcp4,
                gso_size: h.gso_size,
                csum_partial: true,
            });
            out.push(big);
            Ok(true)
        }
        GSO_TCPV4 => {
            gso::segment_tcp4(big.data(), ETH_LEN, h.gso_size as usize, pool, |b| {
                out.push(b)
            })?;
            Ok(true)
        }
        _ => Err(SplitError::Unsupported),
    }
}

/// True when `frame` is IPv4 carrying TCP.
fn is_tcp4(frame: &[u8]) -> bool {
    EthHeader::parse(frame).is_ok_and(|e| e.ethertype == ETHERTYPE_IPV4)
        && Ipv4Packet::new(&frame[ETH_LEN..])
            .is_some_and(|ip| ip.get_next_level_protocol().0 == PROTO_TCP)
}

/// True when `h`'s checksum start and offset are those of the TCP or UDP header right
/// after the IPv4 header of `frame`: the layout the core's partial checksums assume.
fn standard_checksum(frame: &[u8], h: &VnetHdr) -> bool {
    let Ok(eth) = EthHeader::parse(frame) else {
        return false;
    };
    let Some(ip) = frame.get(ETH_LEN..ETH_LEN + IPV4_LEN) else {
        return false;
    };
    let at = match ip[9] {
        PROTO_TCP => tcp::CHECKSUM_AT,
        PROTO_UDP => udp::CHECKSUM_AT,
        _ => return false,
    };
    // A fragment's checksum covers the whole datagram: not a frame to keep partial.
    let fragment = ip[6] & 0x3f != 0 || ip[7] != 0;
    eth.ethertype == ETHERTYPE_IPV4
        && !fragment
        && usize::from(h.csum_start) == ETH_LEN + usize::from(ip[0] & 0x0f) * 4
        && usize::from(h.csum_offset) == at
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

    /// `good` as the kernel leaves it with CHECKSUM_PARTIAL: the pseudo-header sum in the
    /// TCP checksum field.
    fn partial(good: &[u8]) -> Vec<u8> {
        let t = ETH_LEN + 20;
        let mut p = good.to_vec();
        let len = (good.len() - t) as u16;
        let pseudo = checksum::pseudo_header([10, 0, 1, 10], [10, 0, 2, 10], PROTO_TCP, len);
        p[t + 16..t + 18].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
        p
    }

    fn vnet(flags: u8, gso_type: u8, gso_size: u16, csum_start: u16, csum_offset: u16) -> Vec<u8> {
        let mut h = vec![0u8; VNET_HDR_LEN];
        VnetHdr {
            flags,
            gso_type,
            hdr_len: if gso_type == GSO_NONE { 0 } else { 54 },
            gso_size,
            csum_start,
            csum_offset,
        }
        .emit(&mut h);
        h
    }

    /// A read of `raw` from a TAP, in a buffer of the 64 KiB pool.
    fn read(big: &Arc<Pool>, raw: &[u8]) -> PacketBuf {
        big.alloc_from(raw).unwrap()
    }

    #[test]
    fn a_super_segment_reaches_the_switch_whole_and_leaves_with_the_same_header() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let big_frame = partial(&tcp_frame(1000, 0x18, &payload));
        let hdr = vnet(F_NEEDS_CSUM, GSO_TCPV4, 1400, 34, 16);
        let mut raw = hdr.clone();
        raw.extend_from_slice(&big_frame);
        let (big, pool) = (Pool::new(2, 65536), Pool::new(8, 2048));
        let mut out = Vec::new();
        assert_eq!(receive(read(&big, &raw), &pool, &mut out), Ok(true));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].data(),
            &big_frame[..],
            "the frame as the kernel wrote it"
        );
        let tso = Offload {
            gso: Gso::Tcp4,
            gso_size: 1400,
            csum_partial: true,
        };
        assert_eq!(out[0].offload(), tso);
        assert_eq!(pool.available(), 8, "no copy");
        // Written to an offloading pod: the header the kernel gave, byte for byte.
        let back = VnetHdr::for_frame(out[0].data(), out[0].offload()).unwrap();
        let mut emitted = vec![0u8; VNET_HDR_LEN];
        back.emit(&mut emitted);
        assert_eq!(emitted, hdr);
    }

    #[test]
    fn cwr_on_a_super_segment_sets_the_ecn_bit() {
        let f = partial(&tcp_frame(1, 0x10 | TCP_CWR, &[0; 3000]));
        let tso = Offload {
            gso: Gso::Tcp4,
            gso_size: 1400,
            csum_partial: true,
        };
        let h = VnetHdr::for_frame(&f, tso).unwrap();
        assert_eq!(h.gso_type, GSO_TCPV4 | GSO_ECN);
    }

    #[test]
    fn a_plain_partial_frame_stays_partial_and_is_copied_out_of_the_big_buffer() {
        let p = partial(&tcp_frame(7, 0x10, b"hello"));
        let mut raw = vnet(F_NEEDS_CSUM, GSO_NONE, 0, 34, 16);
        raw.extend_from_slice(&p);
        let (big, pool) = (Pool::new(1, 65536), Pool::new(2, 2048));
        let mut out = Vec::new();
        assert_eq!(receive(read(&big, &raw), &pool, &mut out), Ok(false));
        assert_eq!(out[0].data(), &p[..]);
        assert!(out[0].offload().csum_partial);
        assert_eq!(out[0].offload().gso, Gso::None);
        assert_eq!(big.available(), 1);
        let h = VnetHdr::for_frame(out[0].data(), out[0].offload()).unwrap();
        assert_eq!(
            (h.flags, h.gso_type, h.csum_start, h.csum_offset),
            (F_NEEDS_CSUM, GSO_NONE, 34, 16)
        );
    }

    #[test]
    fn a_partial_checksum_elsewhere_is_completed_here() {
        // The checksum of the whole TCP segment but with the start one word further on:
        // no layout the core knows, so it is filled in now.
        let good = tcp_frame(7, 0x10, b"hello");
        let mut odd = good.clone();
        let t = ETH_LEN + 20;
        odd[t + 16..t + 18].fill(0);
        let mut raw = vnet(F_NEEDS_CSUM, GSO_NONE, 0, (t + 2) as u16, 14);
        raw.extend_from_slice(&odd);
        let (big, pool) = (Pool::new(1, 65536), Pool::new(2, 2048));
        let mut out = Vec::new();
        receive(read(&big, &raw), &pool, &mut out).unwrap();
        assert!(out[0].offload().is_none());
        let c = checksum::of(&odd[t + 2..]);
        assert_eq!(&out[0].data()[t + 16..t + 18], &c.to_be_bytes());
    }

    #[test]
    fn a_super_segment_without_needs_csum_is_cut_here() {
        let payload = vec![3u8; 3000];
        let mut raw = vnet(0, GSO_TCPV4, 1400, 0, 0);
        raw.extend_from_slice(&tcp_frame(1, 0x10, &payload));
        let (big, pool) = (Pool::new(1, 65536), Pool::new(8, 2048));
        let mut out = Vec::new();
        assert_eq!(receive(read(&big, &raw), &pool, &mut out), Ok(true));
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|b| b.offload().is_none()));
    }

    #[test]
    fn other_gso_types_are_refused() {
        let mut raw = vnet(0, 4, 1400, 0, 0);
        raw.extend_from_slice(&[0u8; 60]);
        let (big, pool) = (Pool::new(1, 65536), Pool::new(2, 2048));
        assert_eq!(
            receive(read(&big, &raw), &pool, &mut Vec::new()),
            Err(SplitError::Unsupported)
        );
    }
}

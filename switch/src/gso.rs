//! Generic segmentation offload in software: what a NIC does to a super-frame on its way
//! out, done where a frame must leave as MTU-sized packets.
//!
//! A pod's kernel hands a TAP with offloads TCP segments of up to 64 KiB (TSO) with the
//! checksum left partial. The core forwards such a super-frame whole wherever the egress
//! takes it (another offloading pod TAP: one read, one write); where it does not — the
//! underlay (VXLAN, UDP, host-gw), the host port, a pod port without offloads — the frame
//! is cut here into segments of at most the sender's MSS ([`segment_tcp4`]), each with
//! its own IP ID, length and header checksum, sequence number, flags and a complete TCP
//! checksum, in buffers of the switch's normal pool; a plain frame with a partial
//! checksum is completed in place ([`complete_checksum`]). [`finish`] does whichever the
//! buffer's [`Offload`] metadata asks for.
//!
//! Nothing here is OS-specific: the `virtio_net_hdr` that carries the metadata in and out
//! is the TAP runtime's.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::Serialize;

use crate::buffer::{Gso, Offload, PacketBuf, Pool};
use crate::wire::checksum;
use crate::wire::ipv4::{Ipv4Packet, MutableIpv4Packet};
use crate::wire::tcp::{self, MutableTcpPacket, TcpHeader, TCP_CWR, TCP_FIN, TCP_PSH};
use crate::wire::{put16, udp, Ipv4Header, Packet, IPV4_LEN, PROTO_TCP, PROTO_UDP};

/// Why a frame could not be segmented or completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not the TCP/IPv4 (or, for a partial checksum, TCP or UDP over IPv4) packet its
    /// metadata says, or a segment size of 0.
    Malformed,
    /// The pool had no buffer for a segment (or a segment does not fit one).
    NoBuffer,
}

/// Splits a TCP/IPv4 super-segment (`frame`, its IPv4 header at `ip_at`: 0 for a bare
/// packet, the link header's length for a frame; whatever precedes it is copied into each
/// segment as it is) into segments of at most `mss` payload bytes, each with its own IP
/// ID, length and checksum, sequence number, flags and complete TCP checksum, in buffers
/// from `pool` marked [`PacketBuf::checksum_known_good`], handed to `emit` in order.
/// Returns how many it made; on an error the segments made before it were emitted.
///
/// The super-segment's own IP total length and checksums are not trusted (the kernel's
/// are rewritten per segment anyway): the payload is everything after the TCP header.
pub fn segment_tcp4(
    frame: &[u8],
    ip_at: usize,
    mss: usize,
    pool: &Arc<Pool>,
    mut emit: impl FnMut(PacketBuf),
) -> Result<usize, Error> {
    let bad = Error::Malformed;
    let ip = Ipv4Packet::new(frame.get(ip_at..).ok_or(bad)?).ok_or(bad)?;
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
        let mut buf = pool.alloc().ok_or(Error::NoBuffer)?;
        let seg = buf
            .append(headers.len() + chunk.len())
            .ok_or(Error::NoBuffer)?;
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
        emit(buf);
    }
    Ok(n)
}

/// Completes the partial transport checksum of the TCP or UDP packet whose IPv4 header
/// is at `frame[ip_at]` (checked already): sums the transport header and payload onto the
/// pseudo-header sum the field holds, as the NIC would have (RFC 1071). A UDP checksum
/// that comes out 0 is sent as all ones (RFC 768).
pub fn complete_checksum(frame: &mut [u8], ip_at: usize) -> Result<(), Error> {
    let bad = Error::Malformed;
    let ip = Ipv4Header::parse(frame.get(ip_at..).ok_or(bad)?).map_err(|_| bad)?;
    let at = match ip.protocol {
        PROTO_TCP => tcp::CHECKSUM_AT,
        PROTO_UDP => udp::CHECKSUM_AT,
        _ => return Err(bad),
    };
    let l4 = &mut frame[ip_at + ip.header_len()..ip_at + ip.total_len()];
    if l4.len() < at + 2 {
        return Err(bad);
    }
    let mut c = checksum::of(l4);
    if c == 0 && ip.protocol == PROTO_UDP {
        c = 0xffff;
    }
    put16(l4, at, c);
    Ok(())
}

/// What [`finish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// A super-frame cut into this many segments.
    Segmented(usize),
    /// A plain frame, its partial checksum completed in place, emitted as it is.
    Completed,
}

/// Makes the frame in `buf` (its IPv4 header at `ip_at`) one that a device without
/// offloads takes, as its [`Offload`] metadata asks: a super-frame is cut into segments
/// of its `gso_size` from `pool` (the super-frame's buffer goes back to its own pool); a
/// plain frame with a partial checksum is completed in place. What results is handed to
/// `emit`, its metadata [`Offload::NONE`].
pub fn finish(
    mut buf: PacketBuf,
    ip_at: usize,
    pool: &Arc<Pool>,
    emit: impl FnMut(PacketBuf),
) -> Result<Finished, Error> {
    let offload = buf.offload();
    match offload.gso {
        Gso::Tcp4 => segment_tcp4(buf.data(), ip_at, offload.gso_size as usize, pool, emit)
            .map(Finished::Segmented),
        Gso::None => {
            let mut emit = emit;
            if offload.csum_partial {
                complete_checksum(buf.data_mut(), ip_at)?;
            }
            buf.set_offload(Offload::NONE);
            emit(buf);
            Ok(Finished::Completed)
        }
    }
}

/// What the switch did with super-frames, beside its packet counters (which count a
/// super-frame as the one frame it is while it is one: one `rx_packets`, one
/// `forwarded`; each segment cut from it is one `tx_packets`).
#[derive(Default, Debug)]
pub struct GsoCounters {
    whole: AtomicU64,
    segmented: AtomicU64,
    segments: AtomicU64,
}

/// One batch's share of [`GsoCounters`], added once per batch.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct GsoTally {
    pub whole: u64,
    pub segmented: u64,
    pub segments: u64,
}

impl GsoCounters {
    pub fn add(&self, t: &GsoTally) {
        if *t == GsoTally::default() {
            return;
        }
        self.whole.fetch_add(t.whole, Relaxed);
        self.segmented.fetch_add(t.segmented, Relaxed);
        self.segments.fetch_add(t.segments, Relaxed);
    }

    pub fn snapshot(&self) -> GsoSnapshot {
        GsoSnapshot {
            super_frames_whole: self.whole.load(Relaxed),
            super_frames_segmented: self.segmented.load(Relaxed),
            segments: self.segments.load(Relaxed),
        }
    }
}

/// [`GsoCounters`] at one moment; `podnet ctl stats` shows it as `gso`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GsoSnapshot {
    /// Super-frames sent whole, to a port whose device takes them.
    pub super_frames_whole: u64,
    /// Super-frames cut into segments here, for a port or the underlay that takes
    /// MTU-sized frames only.
    pub super_frames_segmented: u64,
    /// The segments those were cut into.
    pub segments: u64,
}

/// The IP length of the packets the frame leaves as (`l3`: its IPv4 packet, `ip` its
/// header): for a super-frame, a segment's (the headers and `gso_size` of payload), which
/// is what an egress MTU must hold, as Linux's `skb_gso_validate_network_len` checks; for
/// any other frame its total length.
pub fn network_len(l3: &[u8], ip: &Ipv4Header, offload: Offload) -> usize {
    match offload.gso {
        Gso::None => ip.total_len(),
        Gso::Tcp4 => {
            let tcp_len = l3
                .get(ip.header_len() + 12)
                .map_or(tcp::TCP_LEN, |&off| usize::from(off >> 4) * 4);
            let segment = ip.header_len() + tcp_len + usize::from(offload.gso_size);
            segment.min(ip.total_len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, ETHERTYPE_IPV4, ETH_LEN};

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

    /// `frame` with its TCP checksum as a sender offloading it leaves it: the folded
    /// pseudo-header sum over the whole segment's length.
    fn partial(frame: &[u8]) -> Vec<u8> {
        let mut p = frame.to_vec();
        let t = ETH_LEN + 20;
        let len = (frame.len() - t) as u16;
        let pseudo = checksum::pseudo_header([10, 0, 1, 10], [10, 0, 2, 10], PROTO_TCP, len);
        p[t + 16..t + 18].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
        p
    }

    /// What TCP would have sent segment by segment: only the IP ID (and so the IP
    /// checksum) differs per segment.
    fn expected(payload: &[u8], i: usize, len: usize, last_flags: u8) -> Vec<u8> {
        let mut want = tcp_frame(
            1000 + 1400 * i as u32,
            last_flags,
            &payload[1400 * i..1400 * i + len],
        );
        want[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&(100 + i as u16).to_be_bytes());
        want[ETH_LEN + 10..ETH_LEN + 12].fill(0);
        let c = checksum::of(&want[ETH_LEN..ETH_LEN + 20]);
        want[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&c.to_be_bytes());
        want
    }

    #[test]
    fn a_super_segment_splits_into_the_segments_tcp_would_have_sent() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let big = partial(&tcp_frame(1000, 0x18 | 0x01, &payload)); // PSH ACK FIN
        let pool = Pool::new(8, 2048);
        let mut out = Vec::new();
        assert_eq!(
            segment_tcp4(&big, ETH_LEN, 1400, &pool, |b| out.push(b)),
            Ok(3)
        );
        for (i, (seg, len)) in out.iter().zip([1400, 1400, 200]).enumerate() {
            let flags = if i == 2 { 0x19 } else { 0x10 };
            assert_eq!(
                seg.data(),
                &expected(&payload, i, len, flags)[..],
                "segment {i}"
            );
            assert!(seg.checksum_known_good());
            assert!(seg.offload().is_none());
        }
    }

    #[test]
    fn a_bare_ip_packet_splits_the_same_way() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 253) as u8).collect();
        let big = partial(&tcp_frame(1000, 0x10, &payload));
        let pool = Pool::new(8, 2048);
        let mut out = Vec::new();
        segment_tcp4(&big[ETH_LEN..], 0, 1400, &pool, |b| out.push(b)).unwrap();
        for (i, (seg, len)) in out.iter().zip([1400, 1400, 200]).enumerate() {
            assert_eq!(seg.data(), &expected(&payload, i, len, 0x10)[ETH_LEN..]);
        }
    }

    #[test]
    fn finish_cuts_a_super_frame_and_frees_its_buffer() {
        let payload = vec![5u8; 4000];
        let big = partial(&tcp_frame(1000, 0x10, &payload));
        let bigpool = Pool::new(1, 65536);
        let pool = Pool::new(8, 2048);
        let mut buf = bigpool.alloc_from(&big).unwrap();
        buf.set_offload(Offload {
            gso: Gso::Tcp4,
            gso_size: 1400,
            csum_partial: true,
        });
        let mut out = Vec::new();
        assert_eq!(
            finish(buf, ETH_LEN, &pool, |b| out.push(b)),
            Ok(Finished::Segmented(3))
        );
        assert_eq!(bigpool.available(), 1);
        let lens: Vec<usize> = out.iter().map(|b| b.len()).collect();
        assert_eq!(lens, [54 + 1400, 54 + 1400, 54 + 1200]);
        for seg in &out {
            let ip = Ipv4Header::parse(&seg.data()[ETH_LEN..]).unwrap();
            let sum = checksum::pseudo_header(
                ip.src.octets(),
                ip.dst.octets(),
                PROTO_TCP,
                (ip.total_len() - 20) as u16,
            );
            assert_eq!(checksum::finish(checksum::add(sum, &seg.data()[34..])), 0);
        }
    }

    #[test]
    fn a_partial_checksum_is_completed_in_place() {
        let good = tcp_frame(7, 0x10, b"hello");
        let pool = Pool::new(2, 2048);
        let mut buf = pool.alloc_from(&partial(&good)).unwrap();
        assert_ne!(buf.data(), &good[..]);
        buf.set_offload(Offload {
            csum_partial: true,
            ..Offload::NONE
        });
        let mut out = Vec::new();
        assert_eq!(
            finish(buf, ETH_LEN, &pool, |b| out.push(b)),
            Ok(Finished::Completed)
        );
        assert_eq!(out[0].data(), &good[..]);
        assert!(out[0].offload().is_none());
    }

    #[test]
    fn a_segment_size_of_zero_or_a_non_tcp_packet_is_malformed() {
        let f = partial(&tcp_frame(7, 0x10, &[1; 100]));
        let pool = Pool::new(2, 2048);
        assert_eq!(
            segment_tcp4(&f, ETH_LEN, 0, &pool, drop),
            Err(Error::Malformed)
        );
        let mut udp = f.clone();
        udp[ETH_LEN + 9] = PROTO_UDP;
        assert_eq!(
            segment_tcp4(&udp, ETH_LEN, 1400, &pool, drop),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn an_empty_pool_stops_segmentation() {
        let big = partial(&tcp_frame(1, 0x10, &[9; 3000]));
        let pool = Pool::new(2, 2048);
        let mut out = Vec::new();
        assert_eq!(
            segment_tcp4(&big, ETH_LEN, 1000, &pool, |b| out.push(b)),
            Err(Error::NoBuffer)
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn the_mtu_sees_a_segment_of_a_super_frame() {
        let big = tcp_frame(1, 0x10, &[0; 20000]);
        let ip = Ipv4Header::parse(&big[ETH_LEN..]).unwrap();
        let tso = Offload {
            gso: Gso::Tcp4,
            gso_size: 1398,
            csum_partial: true,
        };
        assert_eq!(network_len(&big[ETH_LEN..], &ip, tso), 20 + 20 + 1398);
        assert_eq!(network_len(&big[ETH_LEN..], &ip, Offload::NONE), 20040);
    }
}

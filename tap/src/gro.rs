//! GSO on writes to pods: consecutive TCP segments of one flow that the switch sends to
//! the same offloading pod TAP leave in one `writev`, as one TCP super-segment with a
//! `virtio_net_hdr` (`GSO_TCPV4`, `NEEDS_CSUM`), the way the Linux bridge hands a 64 KiB
//! segment from one veth to the next. The pod's kernel then takes one packet through its
//! stack instead of forty, and podnet makes one system call instead of forty. This is for
//! runs of MTU-sized frames (from the underlay, from a pod without offloads); a pod's own
//! super-frame reaches another offloading pod whole and is written as it is
//! ([`crate::offload::VnetHdr::for_frame`]), and a frame with offload metadata is never
//! part of a run.
//!
//! Only what GRO would merge is merged: IPv4 without options, not fragmented, the same
//! Ethernet, IP and TCP headers but for the length, ID, sequence number and checksums,
//! contiguous sequence numbers, every segment but the last exactly the first's size, only
//! ACK set (PSH or FIN allowed on the last). Each segment's checksum is verified first: a
//! segment whose checksum is wrong is written on its own, unchanged, so the pod's stack
//! still drops it (a merged packet's checksum is left to the pod to trust).

use std::os::fd::RawFd;

use podnet_switch::buffer::PacketBuf;
use podnet_switch::checksum;
use podnet_switch::wire::ipv4::{Ipv4Packet, MutableIpv4Packet};
use podnet_switch::wire::tcp::{self, MutableTcpPacket, TcpHeader, TCP_ACK, TCP_FIN, TCP_PSH};
use podnet_switch::wire::Packet;
use podnet_switch::wire::{EthHeader, ETHERTYPE_IPV4, ETH_LEN, FLAG_MF, IPV4_LEN, PROTO_TCP};

use crate::offload::{F_NEEDS_CSUM, GSO_TCPV4, VNET_HDR_LEN};

/// The most payload one merged packet carries (IPv4's total length is 16 bits).
const MAX_PAYLOAD: usize = 65535 - 20 - 60;
/// The most segments one merged packet joins (the kernel takes at most 64 per GSO packet).
pub const MAX_SEGMENTS: usize = 64;

/// What a mergeable segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Ethernet + IPv4 + TCP header bytes.
    pub hdr_len: usize,
    pub payload: usize,
    pub seq: u32,
    pub flags: u8,
}

/// The segment `buf` is, when it is one that may be merged: IPv4 without options or
/// fragmentation, TCP with data, a valid checksum (summed unless the buffer is marked
/// [`PacketBuf::checksum_known_good`]).
pub fn segment(buf: &PacketBuf) -> Option<Segment> {
    if !buf.offload().is_none() {
        return None;
    }
    let frame = buf.data();
    if EthHeader::parse(frame).ok()?.ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let view = Ipv4Packet::new(ip)?;
    if view.get_version() != 4
        || view.get_header_length() != 5
        || view.get_next_level_protocol().0 != PROTO_TCP
        || view.get_flags() & FLAG_MF != 0
        || view.get_fragment_offset() != 0
        || usize::from(view.get_total_length()) != ip.len()
    {
        return None;
    }
    let tcp = &ip[IPV4_LEN..];
    let t = TcpHeader::parse(tcp).ok()?;
    if t.header_len >= tcp.len() || t.flags & !(TCP_PSH | TCP_FIN) != TCP_ACK {
        return None;
    }
    let sum = checksum::pseudo_header(
        view.get_source().octets(),
        view.get_destination().octets(),
        PROTO_TCP,
        tcp.len() as u16,
    );
    if !buf.checksum_known_good() && checksum::finish(checksum::add(sum, tcp)) != 0 {
        return None;
    }
    Some(Segment {
        hdr_len: ETH_LEN + IPV4_LEN + t.header_len,
        payload: tcp.len() - t.header_len,
        seq: t.seq,
        flags: t.flags,
    })
}

/// True when `next` (its frame `nf`) continues the run that starts with `first` (frame
/// `ff`) and ends with `last`, `payload` bytes so far.
pub fn continues(
    ff: &[u8],
    first: &Segment,
    last: &Segment,
    payload: usize,
    nf: &[u8],
    next: &Segment,
) -> bool {
    let h = first.hdr_len;
    next.hdr_len == h
        && last.flags == TCP_ACK
        && last.payload == first.payload
        && next.payload <= first.payload
        && next.seq == last.seq.wrapping_add(last.payload as u32)
        && payload + next.payload <= MAX_PAYLOAD
        // Ethernet; IP version to TOS; flags, TTL and protocol; addresses.
        && ff[..ETH_LEN + 2] == nf[..ETH_LEN + 2]
        && ff[ETH_LEN + 6..ETH_LEN + 10] == nf[ETH_LEN + 6..ETH_LEN + 10]
        && ff[ETH_LEN + 12..ETH_LEN + 20] == nf[ETH_LEN + 12..ETH_LEN + 20]
        // TCP: ports; ack number to the data offset; window; urgent pointer; options.
        && ff[ETH_LEN + 20..ETH_LEN + 24] == nf[ETH_LEN + 20..ETH_LEN + 24]
        && ff[ETH_LEN + 28..ETH_LEN + 33] == nf[ETH_LEN + 28..ETH_LEN + 33]
        && ff[ETH_LEN + 34..ETH_LEN + 36] == nf[ETH_LEN + 34..ETH_LEN + 36]
        && ff[ETH_LEN + 38..h] == nf[ETH_LEN + 38..h]
}

/// The header of the merged packet: the first segment's, with the total length, its
/// IPv4 checksum, the last segment's PSH and FIN, and the TCP checksum left partial (the
/// pseudo-header sum), preceded by the `virtio_net_hdr` that says so.
fn merged_header(first: &[u8], seg: &Segment, last_flags: u8, payload: usize, out: &mut [u8]) {
    let h = seg.hdr_len;
    let (vnet, hdr) = out.split_at_mut(VNET_HDR_LEN);
    hdr[..h].copy_from_slice(&first[..h]);
    let (ip, tcp) = hdr[ETH_LEN..h].split_at_mut(IPV4_LEN);
    let tcp_len = tcp.len() + payload;
    let mut ipv = MutableIpv4Packet::new(ip).expect("20 bytes");
    ipv.set_total_length((IPV4_LEN + tcp_len) as u16);
    ipv.set_checksum(0);
    let c = checksum::of(ipv.packet());
    ipv.set_checksum(c);
    let sum = checksum::pseudo_header(
        ipv.get_source().octets(),
        ipv.get_destination().octets(),
        PROTO_TCP,
        tcp_len as u16,
    );
    let mut tcpv = MutableTcpPacket::new(tcp).expect("a whole TCP header");
    tcpv.set_flags(TCP_ACK | (last_flags & (TCP_PSH | TCP_FIN)));
    tcpv.set_checksum(!checksum::finish(sum));
    vnet[0] = F_NEEDS_CSUM;
    vnet[1] = GSO_TCPV4;
    vnet[2..4].copy_from_slice(&(h as u16).to_le_bytes());
    vnet[4..6].copy_from_slice(&(seg.payload as u16).to_le_bytes());
    vnet[6..8].copy_from_slice(&((ETH_LEN + IPV4_LEN) as u16).to_le_bytes());
    vnet[8..10].copy_from_slice(&(tcp::CHECKSUM_AT as u16).to_le_bytes());
}

/// Writes a run of segments (`run`, described by `segs`, two to [`MAX_SEGMENTS`]) to the offloading
/// TAP `fd` as one super-segment, in one `writev` over the segments' own buffers.
pub fn write_run(fd: RawFd, run: &[PacketBuf], segs: &[Segment]) -> std::io::Result<()> {
    let first = &segs[0];
    let payload: usize = segs.iter().map(|s| s.payload).sum();
    let last_flags = segs[segs.len() - 1].flags;
    let mut hdr = [0u8; VNET_HDR_LEN + ETH_LEN + 20 + 60];
    merged_header(run[0].data(), first, last_flags, payload, &mut hdr);
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; MAX_SEGMENTS + 1];
    iov[0] = libc::iovec {
        iov_base: hdr.as_mut_ptr().cast(),
        iov_len: VNET_HDR_LEN + first.hdr_len,
    };
    let n = run.len().min(MAX_SEGMENTS);
    for (v, (b, s)) in iov[1..].iter_mut().zip(run.iter().zip(segs).take(n)) {
        let data = &b.data()[s.hdr_len..s.hdr_len + s.payload];
        *v = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
    }
    // SAFETY: the first n + 1 iovecs point into `hdr` or a buffer of `run`, all alive for
    // the call.
    let r = unsafe { libc::writev(fd, iov.as_ptr(), (n + 1) as libc::c_int) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_switch::buffer::Pool;

    /// A super-segment cut by [`podnet_switch::gso::segment_tcp4`], then merged again: the
    /// header is the original's with a partial checksum, the payloads line up.
    #[test]
    fn segments_of_one_super_segment_merge_back() {
        let mut f = vec![0u8; ETH_LEN + 20 + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let payload: Vec<u8> = (0..4000u32).map(|i| (i * 13 % 251) as u8).collect();
        f.extend_from_slice(&payload);
        f[ETH_LEN] = 0x45;
        f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        f[ETH_LEN + 8] = 64;
        f[ETH_LEN + 9] = PROTO_TCP;
        f[ETH_LEN + 12..ETH_LEN + 20].copy_from_slice(&[10, 0, 1, 10, 10, 0, 1, 11]);
        f[ETH_LEN + 24..ETH_LEN + 28].copy_from_slice(&77u32.to_be_bytes());
        f[ETH_LEN + 32] = 5 << 4;
        f[ETH_LEN + 33] = TCP_ACK | TCP_PSH;
        let pool = Pool::new(8, 2048);
        let mut out = Vec::new();
        podnet_switch::gso::segment_tcp4(&f, ETH_LEN, 1400, &pool, |b| out.push(b)).unwrap();
        let segs: Vec<Segment> = out.iter().map(|b| segment(b).unwrap()).collect();
        assert_eq!(segs.len(), 3);
        let mut total = segs[0].payload;
        for i in 1..3 {
            let (ff, nf) = (out[0].data(), out[i].data());
            assert!(continues(ff, &segs[0], &segs[i - 1], total, nf, &segs[i]));
            total += segs[i].payload;
        }
        let mut hdr = [0u8; VNET_HDR_LEN + 54 + 60];
        merged_header(out[0].data(), &segs[0], segs[2].flags, total, &mut hdr);
        let ip = &hdr[VNET_HDR_LEN + ETH_LEN..VNET_HDR_LEN + 54];
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, 40 + 4000);
        assert_eq!(checksum::of(&ip[..20]), 0);
        assert_eq!(ip[33], TCP_ACK | TCP_PSH);
        assert_eq!(&hdr[..2], &[F_NEEDS_CSUM, GSO_TCPV4]);
        assert_eq!(u16::from_le_bytes([hdr[4], hdr[5]]), 1400);
        // Completing the partial checksum over the whole gives a valid packet.
        let mut whole = hdr[VNET_HDR_LEN + ETH_LEN..VNET_HDR_LEN + 54].to_vec();
        whole.extend_from_slice(&payload);
        assert!(crate::partial::complete_ipv4(&mut whole));
        let sum = checksum::pseudo_header([10, 0, 1, 10], [10, 0, 1, 11], PROTO_TCP, 4020);
        assert_eq!(checksum::finish(checksum::add(sum, &whole[20..])), 0);
    }

    #[test]
    fn a_segment_with_a_wrong_checksum_is_not_mergeable() {
        let mut f = vec![0u8; ETH_LEN + 20 + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(&[1u8; 100]);
        f[ETH_LEN] = 0x45;
        f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&140u16.to_be_bytes());
        f[ETH_LEN + 9] = PROTO_TCP;
        f[ETH_LEN + 32] = 5 << 4;
        f[ETH_LEN + 33] = TCP_ACK;
        let pool = Pool::new(2, 2048);
        let mut out = Vec::new();
        podnet_switch::gso::segment_tcp4(&f, ETH_LEN, 1400, &pool, |b| out.push(b)).unwrap();
        assert!(segment(&out[0]).is_some());
        // The same bytes from the wire (unmarked), one payload bit flipped.
        let mut bad = pool.alloc_from(out[0].data()).unwrap();
        assert!(!bad.checksum_known_good());
        assert!(segment(&bad).is_some());
        *bad.data_mut().last_mut().unwrap() ^= 1;
        assert!(segment(&bad).is_none());
    }
}

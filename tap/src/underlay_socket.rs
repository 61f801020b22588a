//! The underlay as a UDP socket bound to the node's underlay address and the backend's
//! port (8472 for vxlan, 8285 for udp).
//!
//! The switch core speaks whole underlay frames (outer Ethernet + IPv4 + UDP + payload);
//! the socket carries UDP payloads. On the way in, the outer headers are synthesised into
//! the buffer's headroom in front of the payload the kernel wrote, without a copy; on the
//! way out, the outer headers the core wrote are read for the destination and skipped.
//!
//! Outer source port: the core computes a per-flow VXLAN source port, but one bound
//! socket sends everything from its own port (8472). Receivers accept any source port
//! (the Linux VXLAN device does), so this interoperates; only the underlay's ECMP spread
//! by source port is lost.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

use podnet_switch::buffer::PacketBuf;
use podnet_switch::control::NodeConfig;
use podnet_switch::mac::Mac;
use podnet_switch::underlay::OUTER_UDP_LEN;
use podnet_switch::wire::ipv4::Ipv4Packet;
use podnet_switch::wire::tcp::TcpHeader;
use podnet_switch::wire::udp::UdpHeader;
use podnet_switch::wire::{
    self, Ipv4Fields, Packet, ETHERTYPE_IPV4, ETH_LEN, IPV4_LEN, PROTO_UDP, UDP_LEN,
};

use crate::SetupError;

pub struct UnderlaySocket {
    pub sock: UdpSocket,
    pub local: SocketAddrV4,
}

impl UnderlaySocket {
    /// Binds `ip:port`. The errors a misconfigured host gives are named.
    pub fn bind(ip: Ipv4Addr, port: u16) -> Result<UnderlaySocket, SetupError> {
        // Checked first: in a namespace whose loopback is down, the kernel lets a socket
        // bind any address.
        if !ip.is_loopback() && !is_local_address(ip) {
            return Err(SetupError::invalid(format!(
                "underlay_ip {ip} is not an address of this host"
            )));
        }
        let local = SocketAddrV4::new(ip, port);
        let sock = UdpSocket::bind(local).map_err(|e| {
            SetupError::invalid(match e.kind() {
                io::ErrorKind::AddrInUse => {
                    format!("underlay address {local} is already in use (another podnet or a kernel VXLAN device on this port?)")
                }
                io::ErrorKind::AddrNotAvailable => {
                    format!("underlay_ip {ip} is not an address of this host")
                }
                io::ErrorKind::PermissionDenied => {
                    format!("no privileges to bind underlay address {local}")
                }
                _ => format!("cannot bind underlay address {local}: {e}"),
            })
        })?;
        sock.set_nonblocking(true)
            .map_err(|e| SetupError::failed(format!("underlay socket: {e}")))?;
        // A default-sized receive buffer overflows within one burst of a kernel node's
        // TCP window: room for a few milliseconds at 10 Gbit/s instead. Privileged
        // (ignoring net.core.rmem_max) when possible.
        set_buffer(&sock, SO_RCVBUFFORCE, libc::SO_RCVBUF, SOCKET_BUFFER);
        set_buffer(&sock, SO_SNDBUFFORCE, libc::SO_SNDBUF, SOCKET_BUFFER);
        // The port the kernel chose, when bound to port 0.
        let local = match sock.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => a,
            _ => local,
        };
        Ok(UnderlaySocket { sock, local })
    }
}

/// Bytes of socket buffer asked for, each way.
const SOCKET_BUFFER: libc::c_int = 8 << 20;
/// `SO_SNDBUFFORCE`, `SO_RCVBUFFORCE` and `SO_MEMINFO` (asm-generic/socket.h), which the
/// libc crate does not name on Linux.
const SO_SNDBUFFORCE: libc::c_int = 32;
const SO_RCVBUFFORCE: libc::c_int = 33;
const SO_MEMINFO: libc::c_int = 55;

fn set_buffer(sock: &UdpSocket, forced: libc::c_int, plain: libc::c_int, bytes: libc::c_int) {
    let set = |opt| {
        // SAFETY: a valid socket and a pointer to an int of the size given.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(forced) != 0 {
        set(plain);
    }
}

impl UnderlaySocket {
    /// Datagrams the kernel dropped before podnet could read them (a full receive buffer):
    /// `SK_MEMINFO_DROPS` of the socket.
    pub fn kernel_drops(&self) -> u64 {
        let mut info = [0u32; 9];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: `info` has room for `len` bytes; the kernel writes at most that.
        let r = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r != 0 {
            return 0;
        }
        info[libc::SK_MEMINFO_DROPS as usize] as u64
    }
}

/// True when an interface of this network namespace has the IPv4 address `ip`.
pub fn is_local_address(ip: Ipv4Addr) -> bool {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is walked read-only and freed once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            // Cannot tell: let bind decide.
            return true;
        }
        let mut found = false;
        let mut cur = list;
        while !cur.is_null() {
            let a = (*cur).ifa_addr;
            if !a.is_null() && (*a).sa_family == libc::AF_INET as libc::sa_family_t {
                let sin = &*(a as *const libc::sockaddr_in);
                if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == ip {
                    found = true;
                    break;
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

/// At most this many datagrams per `recvmmsg`/`sendmmsg` call.
const MMSG: usize = 64;

/// The largest datagram the underlay takes: a VXLAN super-frame of up to 64 KiB.
pub const SUPER_FRAME_MAX: usize = 65536;

/// A kernel VXLAN device on the same host (over a veth) sends TCP super-segments as one
/// GSO packet, and the kernel delivers a UDP-tunnel GSO packet to a UDP socket whole: one
/// datagram of up to 64 KiB holding one inner TCP segment far beyond the pod MTU, its
/// checksum partial. Such a datagram spills from its pool buffer into this worker-owned
/// space and is cut into segments the pod MTU allows (any segment size up to the MSS
/// the receiver announced is valid TCP), each with a complete checksum.
pub struct RecvScratch {
    overflow: Vec<u8>,
    joined: Vec<u8>,
}

impl RecvScratch {
    pub fn new() -> RecvScratch {
        RecvScratch {
            overflow: vec![0; MMSG * SUPER_FRAME_MAX],
            joined: Vec::with_capacity(SUPER_FRAME_MAX * 2),
        }
    }
}

impl Default for RecvScratch {
    fn default() -> Self {
        RecvScratch::new()
    }
}

/// What [`UnderlaySocket::recv_batch`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub datagrams: u64,
    /// Datagrams larger than a buffer, segmented.
    pub super_frames: u64,
    /// Datagrams dropped: truncated, not IPv4, or a super-frame that is not VXLAN with
    /// one TCP/IPv4 segment inside.
    pub dropped: u64,
}

/// Segments the inner TCP/IPv4 segment of a VXLAN super-frame (`payload`: the VXLAN
/// header, then the inner Ethernet frame) into VXLAN payloads whose inner frames fit the
/// pod MTU, appended to `out`.
fn segment_super_frame(
    payload: &[u8],
    config: &NodeConfig,
    pool: &std::sync::Arc<podnet_switch::buffer::Pool>,
    out: &mut Vec<PacketBuf>,
) -> Result<(), crate::offload::SplitError> {
    use crate::offload::{segment_tcp4, SplitError};
    if !matches!(config.backend, podnet_switch::Backend::Vxlan { .. }) || payload.len() < 8 {
        return Err(SplitError::Unsupported);
    }
    let (vxlan, frame) = payload.split_at(wire::VXLAN_LEN);
    let ip = frame.get(ETH_LEN..).ok_or(SplitError::Malformed)?;
    let ip = Ipv4Packet::new(ip).ok_or(SplitError::Malformed)?;
    if ip.get_next_level_protocol().0 != wire::PROTO_TCP {
        return Err(SplitError::Unsupported);
    }
    let ihl = usize::from(ip.get_header_length()) * 4;
    let tcp = ip.packet().get(ihl..).ok_or(SplitError::Malformed)?;
    let tcp = TcpHeader::parse(tcp).map_err(|_| SplitError::Malformed)?;
    let mss = (config.pod_mtu() as usize)
        .checked_sub(ihl + tcp.header_len)
        .filter(|&m| m > 0)
        .ok_or(SplitError::Malformed)?;
    let at = out.len();
    segment_tcp4(frame, mss, pool, out)?;
    for seg in &mut out[at..] {
        seg.prepend(wire::VXLAN_LEN)
            .ok_or(SplitError::NoBuffer)?
            .copy_from_slice(vxlan);
    }
    Ok(())
}

/// What [`UnderlaySocket::send_batch`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub sent: u64,
    /// Frames that were not IPv4/UDP.
    pub unsendable: u64,
    /// Datagrams the kernel refused (a full socket buffer, no route).
    pub errors: u64,
}

impl UnderlaySocket {
    /// Receives up to `max` datagrams with one `recvmmsg`, each into a buffer from `pool`
    /// as a whole underlay frame, appended to `rx`. A datagram larger than a buffer (a
    /// super-frame, see [`RecvScratch`]) continues into `scratch` and is segmented.
    pub fn recv_batch(
        &self,
        pool: &std::sync::Arc<podnet_switch::buffer::Pool>,
        config: &NodeConfig,
        rx: &mut Vec<PacketBuf>,
        max: usize,
        scratch: &mut RecvScratch,
    ) -> io::Result<Received> {
        let mut got = Received::default();
        let first = rx.len();
        let want = max.min(MMSG);
        while rx.len() - first < want {
            match pool.alloc() {
                Some(b) => rx.push(b),
                None => break,
            }
        }
        let k = rx.len() - first;
        if k == 0 {
            return Ok(got);
        }
        // SAFETY: plain C structs, all-zero is a valid value for each.
        let mut iovs: [[libc::iovec; 2]; MMSG] = unsafe { std::mem::zeroed() };
        let mut names: [libc::sockaddr_in; MMSG] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
        let mut rooms = [0usize; MMSG];
        let overflow = scratch.overflow.chunks_exact_mut(SUPER_FRAME_MAX);
        for (i, over) in (0..k).zip(overflow) {
            let room = rx[first + i].spare_mut();
            rooms[i] = room.len();
            iovs[i][0].iov_base = room.as_mut_ptr().cast();
            iovs[i][0].iov_len = room.len();
            iovs[i][1].iov_base = over.as_mut_ptr().cast();
            iovs[i][1].iov_len = over.len();
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
            hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            hdrs[i].msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            hdrs[i].msg_hdr.msg_iovlen = 2;
        }
        // SAFETY: `hdrs[..k]` point at live iovecs over buffers owned by `rx` and
        // `scratch`, and at `names`; all outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                k as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            rx.truncate(first);
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(got),
                _ => Err(e),
            };
        }
        let n = n as usize;
        // Unused buffers go back to the pool.
        rx.truncate(first + n);
        let mut segments = Vec::new();
        let mut kept = first;
        for i in 0..n {
            let len = hdrs[i].msg_len as usize;
            let from = Ipv4Addr::from(u32::from_be(names[i].sin_addr.s_addr));
            let sport = u16::from_be(names[i].sin_port);
            if names[i].sin_family != libc::AF_INET as libc::sa_family_t
                || hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
            {
                got.dropped += 1;
                continue;
            }
            got.datagrams += 1;
            if len > rooms[i] {
                let joined = &mut scratch.joined;
                joined.clear();
                joined.extend_from_slice(&rx[first + i].spare_mut()[..rooms[i]]);
                let over = &scratch.overflow[i * SUPER_FRAME_MAX..];
                joined.extend_from_slice(&over[..len - rooms[i]]);
                let at = segments.len();
                if segment_super_frame(joined, config, pool, &mut segments).is_err() {
                    segments.truncate(at);
                    got.dropped += 1;
                    continue;
                }
                got.super_frames += 1;
                for seg in &mut segments[at..] {
                    let plen = seg.data().len();
                    let hdr = seg
                        .prepend(OUTER_UDP_LEN)
                        .expect("the headroom holds the outer headers");
                    frame_header(hdr, config, from, sport, self.local.port(), plen);
                }
                continue;
            }
            let buf = &mut rx[first + i];
            if buf.set_len(len).is_none() {
                got.dropped += 1;
                continue;
            }
            let hdr = buf
                .prepend(OUTER_UDP_LEN)
                .expect("the headroom holds the outer headers");
            frame_header(hdr, config, from, sport, self.local.port(), len);
            rx.swap(kept, first + i);
            kept += 1;
        }
        rx.truncate(kept);
        rx.append(&mut segments);
        Ok(got)
    }

    /// Sends the UDP payloads of underlay frames the core emitted, `sendmmsg` at a time.
    pub fn send_batch(&self, frames: &[PacketBuf]) -> Sent {
        let mut out = Sent::default();
        for chunk in frames.chunks(MMSG) {
            // SAFETY: plain C structs, all-zero is a valid value for each.
            let mut iovs: [libc::iovec; MMSG] = unsafe { std::mem::zeroed() };
            let mut names: [libc::sockaddr_in; MMSG] = unsafe { std::mem::zeroed() };
            let mut hdrs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
            let mut k = 0;
            for f in chunk {
                let Some((dst, payload)) = udp_payload(f.data()) else {
                    out.unsendable += 1;
                    continue;
                };
                names[k].sin_family = libc::AF_INET as libc::sa_family_t;
                names[k].sin_port = dst.port().to_be();
                names[k].sin_addr.s_addr = u32::from(*dst.ip()).to_be();
                iovs[k].iov_base = payload.as_ptr() as *mut libc::c_void;
                iovs[k].iov_len = payload.len();
                k += 1;
            }
            for i in 0..k {
                hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
                hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            let mut done = 0;
            while done < k {
                // SAFETY: `hdrs[done..k]` point at live iovecs over `frames` and at
                // `names`; all outlive the call.
                let r = unsafe {
                    libc::sendmmsg(
                        self.sock.as_raw_fd(),
                        hdrs[done..].as_mut_ptr(),
                        (k - done) as u32,
                        0,
                    )
                };
                if r < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // Skip the datagram the kernel refused and go on with the rest.
                    out.errors += 1;
                    done += 1;
                    continue;
                }
                out.sent += r as u64;
                done += r as usize;
            }
        }
        out
    }
}

/// Writes the outer Ethernet + IPv4 + UDP headers of a datagram from `src:sport` to this
/// node's underlay address and `dport` into `hdr` (`OUTER_UDP_LEN` bytes).
pub fn frame_header(
    hdr: &mut [u8],
    config: &NodeConfig,
    src: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload_len: usize,
) {
    let src_mac = config
        .peers
        .iter()
        .find(|p| p.underlay_ip == src)
        .map_or(Mac::from_ip([0x02, 0x00], src), |p| p.underlay_mac);
    wire::write_eth(hdr, config.underlay_mac, src_mac, ETHERTYPE_IPV4);
    wire::write_ipv4(
        &mut hdr[ETH_LEN..],
        &Ipv4Fields {
            src,
            dst: config.underlay_ip,
            protocol: PROTO_UDP,
            ttl: 64,
            tos: 0,
            dont_fragment: true,
            id: 0,
        },
        IPV4_LEN + UDP_LEN + payload_len,
    );
    wire::write_udp(
        &mut hdr[ETH_LEN + IPV4_LEN..],
        sport,
        dport,
        payload_len,
        None,
    );
}

/// The outer destination and UDP payload of an underlay frame, if it is IPv4/UDP.
pub fn udp_payload(frame: &[u8]) -> Option<(SocketAddrV4, &[u8])> {
    let eth = wire::parse_eth(frame).ok()?;
    if eth.ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = wire::parse_ipv4(&frame[ETH_LEN..]).ok()?;
    if ip.protocol != PROTO_UDP || ip.is_later_fragment() {
        return None;
    }
    let at = ETH_LEN + ip.header_len;
    let end = ETH_LEN + ip.total_len;
    let datagram = &frame[at..end];
    let udp = UdpHeader::parse(datagram).ok()?;
    Some((
        SocketAddrV4::new(ip.dst, udp.dst_port),
        &datagram[udp.payload()],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_switch::buffer::Pool;
    use podnet_switch::control::NodeConfig;
    use podnet_switch::underlay;

    #[test]
    fn synthesised_frames_pass_the_cores_outer_check_and_strip_back() {
        let config = NodeConfig::example();
        let peer = config.peers[0].clone();
        let pool = Pool::new(1, 2048);
        let mut buf = pool.alloc().unwrap();
        let payload = [0x08, 0, 0, 0, 0, 0, 1, 0, 9, 9, 9];
        buf.spare_mut()[..payload.len()].copy_from_slice(&payload);
        buf.set_len(payload.len()).unwrap();
        let hdr = buf.prepend(OUTER_UDP_LEN).unwrap();
        frame_header(hdr, &config, peer.underlay_ip, 40000, 8472, payload.len());
        let outer = underlay::parse(buf.data(), &config).unwrap();
        assert_eq!(outer.ip.src, peer.underlay_ip);
        let udp = outer.udp.unwrap();
        assert_eq!((udp.src_port, udp.dst_port), (40000, 8472));
        assert_eq!(&buf.data()[udp.payload_at..udp.payload_end], &payload);
        let (dst, p) = udp_payload(buf.data()).unwrap();
        assert_eq!(dst, SocketAddrV4::new(config.underlay_ip, 8472));
        assert_eq!(p, &payload);
    }

    /// sendmmsg from one socket, recvmmsg on another, over loopback only.
    #[test]
    fn batches_cross_a_loopback_socket_pair() {
        let lo = Ipv4Addr::LOCALHOST;
        let a = UnderlaySocket::bind(lo, 0).unwrap();
        let b = UnderlaySocket::bind(lo, 0).unwrap();
        let a_port = a.sock.local_addr().unwrap().port();
        let b_port = b.sock.local_addr().unwrap().port();
        let mut config = NodeConfig::example();
        config.underlay_ip = lo;
        let mut peer = config.peers[0].clone();
        peer.underlay_ip = lo;
        let pool = Pool::new(64, 2048);
        let frames: Vec<PacketBuf> = (0..10u8)
            .map(|i| {
                let mut buf = pool.alloc_from(&[i; 100]).unwrap();
                let hdr = buf.prepend(OUTER_UDP_LEN).unwrap();
                underlay::write_outer_udp(hdr, &config, &peer, 1, b_port, 100, false);
                buf
            })
            .collect();
        let sent = a.send_batch(&frames);
        assert_eq!(
            sent,
            Sent {
                sent: 10,
                unsendable: 0,
                errors: 0
            }
        );
        let mut rx = Vec::new();
        let mut scratch = RecvScratch::new();
        b.sock.set_nonblocking(false).unwrap();
        b.sock
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // The first datagram is waited for (blocking peek); then the batch takes all ten.
        b.sock.peek_from(&mut [0u8; 1]).unwrap();
        let mut got = 0;
        while got < 10 {
            let n = b
                .recv_batch(&pool, &config, &mut rx, 64, &mut scratch)
                .unwrap()
                .datagrams as usize;
            if n == 0 {
                b.sock.peek_from(&mut [0u8; 1]).unwrap();
            }
            got += n;
        }
        assert_eq!(rx.len(), 10);
        for (i, f) in rx.iter().enumerate() {
            let outer = underlay::parse(f.data(), &config).unwrap();
            let udp = outer.udp.unwrap();
            assert_eq!((udp.src_port, udp.dst_port), (a_port, b_port));
            assert_eq!(&f.data()[udp.payload_at..udp.payload_end], &[i as u8; 100]);
        }
    }
}

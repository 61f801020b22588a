//! The underlay as a UDP socket bound to the node's underlay address and the backend's
//! port (8472 for vxlan, 8285 for udp); with several workers, one socket per worker, all
//! bound there in one `SO_REUSEPORT` group ([`UnderlaySocket::bind_group`]).
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
use std::sync::atomic::{AtomicBool, Ordering};

use podnet_switch::buffer::PacketBuf;
use podnet_switch::control::NodeConfig;
use podnet_switch::encap::underlay::OUTER_UDP_LEN;
use podnet_switch::wire::ipv4::Ipv4Packet;
use podnet_switch::wire::tcp::TcpHeader;
use podnet_switch::wire::udp::UdpHeader;
use podnet_switch::wire::{
    self, Ipv4Fields, Packet, ETHERTYPE_IPV4, ETH_LEN, IPV4_LEN, PROTO_UDP, UDP_LEN,
};
use podnet_switch::Mac;

use crate::SetupError;

pub struct UnderlaySocket {
    pub sock: UdpSocket,
    pub local: SocketAddrV4,
    /// `UDP_GRO` is on: the kernel may hand over several datagrams of one sender back to
    /// back in one read, their size in a control message.
    pub gro: bool,
    /// Runs of equal-sized datagrams to one destination go out as one `UDP_SEGMENT`
    /// (GSO) message. Cleared for good when the kernel refuses one.
    pub gso: AtomicBool,
}

impl UnderlaySocket {
    /// Binds `ip:port`. The errors a misconfigured host gives are named.
    pub fn bind(ip: Ipv4Addr, port: u16) -> Result<UnderlaySocket, SetupError> {
        let mut group = UnderlaySocket::bind_group(ip, port, 1)?;
        Ok(group.pop().expect("a group of one"))
    }

    /// Binds `n` sockets to `ip:port`, one per worker: with `n` > 1 a `SO_REUSEPORT`
    /// group, over which the kernel spreads arriving datagrams by a hash of their
    /// addresses and ports (a kernel VXLAN sender varies its source port by inner flow;
    /// a podnet sender always sends from its bound port, so its traffic spreads by peer
    /// only). Every socket has the same options.
    ///
    /// The first socket is bound without `SO_REUSEPORT` and only then given it: a bind
    /// without the option fails on any bound socket, so this one fails, with the message
    /// a taken port always gave, when another podnet (whose sockets have the option) or
    /// anything else holds the port; a group never takes in a second podnet. The others
    /// join it with the option set before their bind.
    pub fn bind_group(
        ip: Ipv4Addr,
        port: u16,
        n: usize,
    ) -> Result<Vec<UnderlaySocket>, SetupError> {
        // Checked first: in a namespace whose loopback is down, the kernel lets a socket
        // bind any address.
        if !ip.is_loopback() && !is_local_address(ip) {
            return Err(SetupError::invalid(format!(
                "underlay_ip {ip} is not an address of this host"
            )));
        }
        let local = SocketAddrV4::new(ip, port);
        let first = UdpSocket::bind(local).map_err(|e| {
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
        // The port the kernel chose, when bound to port 0: the group's port.
        let local = match first.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => a,
            _ => local,
        };
        let mut socks = vec![first];
        if n > 1 {
            let group_error =
                |e: io::Error| SetupError::failed(format!("underlay socket group on {local}: {e}"));
            if !set_int(&socks[0], libc::SOL_SOCKET, libc::SO_REUSEPORT, 1) {
                return Err(group_error(io::Error::last_os_error()));
            }
            while socks.len() < n {
                socks.push(bind_reuseport(local).map_err(group_error)?);
            }
        }
        socks
            .into_iter()
            .map(|sock| UnderlaySocket::configure(sock, local))
            .collect()
    }

    /// The options every underlay socket has.
    fn configure(sock: UdpSocket, local: SocketAddrV4) -> Result<UnderlaySocket, SetupError> {
        sock.set_nonblocking(true)
            .map_err(|e| SetupError::failed(format!("underlay socket: {e}")))?;
        // A default-sized receive buffer overflows within one burst of a kernel node's
        // TCP window: room for a few milliseconds at 10 Gbit/s instead. Privileged
        // (ignoring net.core.rmem_max) when possible.
        set_buffer(&sock, SO_RCVBUFFORCE, libc::SO_RCVBUF, SOCKET_BUFFER);
        set_buffer(&sock, SO_SNDBUFFORCE, libc::SO_SNDBUF, SOCKET_BUFFER);
        // UDP GRO and GSO (Linux 5.0 and 4.18): off where the kernel does not know them.
        let gro = set_int(&sock, libc::SOL_UDP, UDP_GRO, 1);
        let gso = set_int(&sock, libc::SOL_UDP, UDP_SEGMENT, 0);
        Ok(UnderlaySocket {
            sock,
            local,
            gro,
            gso: AtomicBool::new(gso),
        })
    }
}

/// A UDP socket with `SO_REUSEPORT` set before it binds `local` (which std's `bind`
/// cannot do): a member of the group there.
fn bind_reuseport(local: SocketAddrV4) -> io::Result<UdpSocket> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned by `sock` below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh UDP socket that nothing else owns.
    let sock = unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if !set_int(&sock, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1) {
        return Err(io::Error::last_os_error());
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: local.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*local.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in of the size given.
    let r = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// Bytes of socket buffer asked for, each way.
const SOCKET_BUFFER: libc::c_int = 8 << 20;
/// `SO_SNDBUFFORCE`, `SO_RCVBUFFORCE` and `SO_MEMINFO` (asm-generic/socket.h), which the
/// libc crate does not name on Linux.
const SO_SNDBUFFORCE: libc::c_int = 32;
const SO_RCVBUFFORCE: libc::c_int = 33;
const SO_MEMINFO: libc::c_int = 55;

/// `UDP_SEGMENT` and `UDP_GRO` (linux/udp.h), which the libc crate does not name for glibc.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Sets an int socket option; true when the kernel took it.
fn set_int(sock: &UdpSocket, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: a valid socket and a pointer to an int of the size given.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

fn set_buffer(sock: &UdpSocket, forced: libc::c_int, plain: libc::c_int, bytes: libc::c_int) {
    if !set_int(sock, libc::SOL_SOCKET, forced, bytes) {
        set_int(sock, libc::SOL_SOCKET, plain, bytes);
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

/// At most this many reads per `recvmmsg` when `UDP_GRO` is on: each may hold up to
/// [`GSO_MAX_SEGMENTS`] datagrams, each of which takes a pool buffer.
const GRO_MMSG: usize = 16;

/// The kernel's limit of segments in one UDP GSO send (`UDP_MAX_SEGMENTS`, 64 before
/// Linux 6.x raised it).
const GSO_MAX_SEGMENTS: usize = 64;

/// The most UDP payload one IPv4 datagram (and so one UDP GSO send) carries.
const GSO_MAX_BYTES: usize = 65535 - IPV4_LEN - UDP_LEN;

/// Room for one `UDP_SEGMENT` (u16) or `UDP_GRO` (int) control message, aligned.
type Cmsg = [u64; 4];

/// The largest datagram the underlay takes: a VXLAN super-frame of up to 64 KiB.
pub const SUPER_FRAME_MAX: usize = 65536;

/// A kernel VXLAN device on the same host (over a veth) sends TCP super-segments as one
/// GSO packet, and the kernel delivers a UDP-tunnel GSO packet to a UDP socket whole: one
/// datagram of up to 64 KiB holding one inner TCP segment far beyond the pod MTU, its
/// checksum partial. Such a datagram spills from its pool buffer into this worker-owned
/// space and is cut into segments the pod MTU allows (any segment size up to the MSS
/// the receiver announced is valid TCP), each with a complete checksum.
///
/// A `UDP_GRO` read (several datagrams back to back) spills here the same way and is
/// cut at the datagram size the kernel gives; each datagram after the first is copied
/// into a pool buffer of its own.
pub struct RecvScratch {
    overflow: Vec<u8>,
    joined: Vec<u8>,
    /// The buffers of one `recvmmsg`, between the read and their place in `rx`.
    taken: Vec<PacketBuf>,
}

impl RecvScratch {
    pub fn new() -> RecvScratch {
        RecvScratch {
            overflow: vec![0; MMSG * SUPER_FRAME_MAX],
            joined: Vec::with_capacity(SUPER_FRAME_MAX * 2),
            taken: Vec::with_capacity(MMSG),
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
    /// Reads that held several datagrams (`UDP_GRO`), and the datagrams in them.
    pub gro_reads: u64,
    pub gro_datagrams: u64,
    /// Datagrams dropped: truncated, not IPv4, a super-frame that is not VXLAN with
    /// one TCP/IPv4 segment inside, or no pool buffer for a datagram of a GRO read.
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
    use crate::offload::SplitError;
    use podnet_switch::gso::segment_tcp4;
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
    if wire::EthHeader::parse(frame)
        .map_err(|_| SplitError::Malformed)?
        .ethertype
        != ETHERTYPE_IPV4
    {
        return Err(SplitError::Malformed);
    }
    segment_tcp4(frame, ETH_LEN, mss, pool, |b| out.push(b))?;
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
    /// Datagrams sent, those of GSO sends included.
    pub sent: u64,
    /// Frames that were not IPv4/UDP.
    pub unsendable: u64,
    /// Datagrams the kernel refused (a full socket buffer, no route).
    pub errors: u64,
    /// Messages sent with `UDP_SEGMENT` (more than one datagram each), and their datagrams.
    pub gso_sends: u64,
    pub gso_segments: u64,
}

/// The datagram size a `UDP_GRO` read carries in its control message, if any.
fn gro_size(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: `hdr` is a msghdr the kernel filled, its control pointer and length valid;
    // the CMSG macros stay within `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let size = libc::CMSG_DATA(c).cast::<libc::c_int>().read_unaligned();
                return usize::try_from(size).ok().filter(|&s| s > 0);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Copies `dst.len()` bytes from offset `at` of the concatenation of `a` and `b`.
fn copy_split(a: &[u8], b: &[u8], at: usize, dst: &mut [u8]) {
    let end = at + dst.len();
    if end <= a.len() {
        dst.copy_from_slice(&a[at..end]);
    } else if at >= a.len() {
        dst.copy_from_slice(&b[at - a.len()..end - a.len()]);
    } else {
        let (x, y) = dst.split_at_mut(a.len() - at);
        x.copy_from_slice(&a[at..]);
        y.copy_from_slice(&b[..end - a.len()]);
    }
}

impl UnderlaySocket {
    /// Receives up to `max` datagrams with one `recvmmsg`, each into a buffer from `pool`
    /// as a whole underlay frame, appended to `rx` in the order they came. A datagram
    /// larger than a buffer (a super-frame, see [`RecvScratch`]) continues into `scratch`
    /// and is segmented; a `UDP_GRO` read is cut into its datagrams.
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
        let want = max.min(if self.gro { GRO_MMSG } else { MMSG });
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
        let mut control: [Cmsg; MMSG] = [[0; 4]; MMSG];
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
            if self.gro {
                hdrs[i].msg_hdr.msg_control = control[i].as_mut_ptr().cast();
                hdrs[i].msg_hdr.msg_controllen = std::mem::size_of::<Cmsg>() as _;
            }
        }
        // SAFETY: `hdrs[..k]` point at live iovecs over buffers owned by `rx` and
        // `scratch`, at `names` and at `control`; all outlive the call.
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
        // Unused buffers go back to the pool; the rest come back to `rx` in order.
        rx.truncate(first + n);
        let RecvScratch {
            overflow,
            joined,
            taken,
        } = scratch;
        taken.extend(rx.drain(first..));
        for (i, mut buf) in taken.drain(..).enumerate() {
            let len = hdrs[i].msg_len as usize;
            let from = Ipv4Addr::from(u32::from_be(names[i].sin_addr.s_addr));
            let sport = u16::from_be(names[i].sin_port);
            let dport = self.local.port();
            if names[i].sin_family != libc::AF_INET as libc::sa_family_t
                || hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
            {
                got.dropped += 1;
                continue;
            }
            let room = rooms[i];
            let over = &overflow[i * SUPER_FRAME_MAX..][..len.saturating_sub(room)];
            let gro = if self.gro {
                gro_size(&hdrs[i].msg_hdr)
            } else {
                None
            };
            if let Some(size) = gro.filter(|&s| len > s) {
                // Several datagrams back to back, all `size` bytes but the last.
                let count = len.div_ceil(size) as u64;
                if size > room {
                    got.dropped += count;
                    continue;
                }
                got.gro_reads += 1;
                got.gro_datagrams += count;
                got.datagrams += count;
                let at = rx.len();
                let mut off = size;
                while off < len {
                    let end = (off + size).min(len);
                    let Some(mut seg) = pool.alloc() else {
                        got.dropped += 1;
                        off = end;
                        continue;
                    };
                    {
                        let (head, _) = buf.spare_mut().split_at_mut(room);
                        copy_split(head, over, off, &mut seg.spare_mut()[..end - off]);
                    }
                    seg.set_len(end - off).expect("a segment fits a buffer");
                    let hdr = seg
                        .prepend(OUTER_UDP_LEN)
                        .expect("the headroom holds the outer headers");
                    frame_header(hdr, config, from, sport, dport, end - off);
                    rx.push(seg);
                    off = end;
                }
                // The first datagram stays where the kernel wrote it, ahead of the rest.
                buf.set_len(size).expect("checked against the room");
                let hdr = buf
                    .prepend(OUTER_UDP_LEN)
                    .expect("the headroom holds the outer headers");
                frame_header(hdr, config, from, sport, dport, size);
                rx.insert(at, buf);
                continue;
            }
            got.datagrams += 1;
            if len > room {
                joined.clear();
                joined.extend_from_slice(&buf.spare_mut()[..room]);
                joined.extend_from_slice(over);
                let at = rx.len();
                if segment_super_frame(joined, config, pool, rx).is_err() {
                    rx.truncate(at);
                    got.dropped += 1;
                    continue;
                }
                got.super_frames += 1;
                for seg in &mut rx[at..] {
                    let plen = seg.data().len();
                    let hdr = seg
                        .prepend(OUTER_UDP_LEN)
                        .expect("the headroom holds the outer headers");
                    frame_header(hdr, config, from, sport, dport, plen);
                }
                continue;
            }
            if buf.set_len(len).is_none() {
                got.dropped += 1;
                continue;
            }
            let hdr = buf
                .prepend(OUTER_UDP_LEN)
                .expect("the headroom holds the outer headers");
            frame_header(hdr, config, from, sport, dport, len);
            rx.push(buf);
        }
        Ok(got)
    }

    /// Sends the UDP payloads of underlay frames the core emitted, `sendmmsg` at a time.
    /// Consecutive frames to one destination with payloads of one size (the last may be
    /// shorter) go as one `UDP_SEGMENT` message while the kernel takes them.
    pub fn send_batch(&self, frames: &[PacketBuf]) -> Sent {
        let mut out = Sent::default();
        for chunk in frames.chunks(MMSG) {
            // SAFETY: plain C structs, all-zero is a valid value for each.
            let mut iovs: [libc::iovec; MMSG] = unsafe { std::mem::zeroed() };
            let mut names: [libc::sockaddr_in; MMSG] = unsafe { std::mem::zeroed() };
            let mut hdrs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
            let mut control: [Cmsg; MMSG] = [[0; 4]; MMSG];
            let mut dsts = [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); MMSG];
            // Per message: its first frame (an index into `iovs`) and its datagrams.
            let mut starts = [0usize; MMSG];
            let mut segs = [0usize; MMSG];
            let mut k = 0;
            for f in chunk {
                let Some((dst, payload)) = udp_payload(f.data()) else {
                    out.unsendable += 1;
                    continue;
                };
                dsts[k] = dst;
                iovs[k].iov_base = payload.as_ptr() as *mut libc::c_void;
                iovs[k].iov_len = payload.len();
                k += 1;
            }
            // From the frame `from` on, in messages; again from a refused GSO message's
            // first frame, once, without GSO.
            let mut from = 0;
            'build: while from < k {
                let gso = self.gso.load(Ordering::Relaxed);
                let mut m = 0;
                let mut i = from;
                while i < k {
                    let size = iovs[i].iov_len;
                    let mut j = i + 1;
                    if gso && size > 0 {
                        let mut total = size;
                        while j < k
                            && j - i < GSO_MAX_SEGMENTS
                            && dsts[j] == dsts[i]
                            && iovs[j].iov_len <= size
                            && iovs[j].iov_len > 0
                            && total + iovs[j].iov_len <= GSO_MAX_BYTES
                        {
                            total += iovs[j].iov_len;
                            j += 1;
                            if iovs[j - 1].iov_len < size {
                                break;
                            }
                        }
                    }
                    starts[m] = i;
                    segs[m] = j - i;
                    names[m].sin_family = libc::AF_INET as libc::sa_family_t;
                    names[m].sin_port = dsts[i].port().to_be();
                    names[m].sin_addr.s_addr = u32::from(*dsts[i].ip()).to_be();
                    let h = &mut hdrs[m].msg_hdr;
                    // SAFETY: a plain C struct, all-zero is valid (a rebuilt message may
                    // have had a control message before).
                    *h = unsafe { std::mem::zeroed() };
                    h.msg_name = (&mut names[m] as *mut libc::sockaddr_in).cast();
                    h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                    h.msg_iov = &mut iovs[i];
                    h.msg_iovlen = j - i;
                    if j - i > 1 {
                        h.msg_control = control[m].as_mut_ptr().cast();
                        // SAFETY: CMSG_SPACE of a u16 (24 bytes) fits a `Cmsg` (32), and
                        // CMSG_FIRSTHDR of a control buffer that large is its start.
                        unsafe {
                            h.msg_controllen = libc::CMSG_SPACE(2) as _;
                            let c = libc::CMSG_FIRSTHDR(h);
                            (*c).cmsg_level = libc::SOL_UDP;
                            (*c).cmsg_type = UDP_SEGMENT;
                            (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                            libc::CMSG_DATA(c)
                                .cast::<u16>()
                                .write_unaligned(size as u16);
                        }
                    }
                    m += 1;
                    i = j;
                }
                let mut done = 0;
                while done < m {
                    // SAFETY: `hdrs[done..m]` point at live iovecs over `frames`, at
                    // `names` and at `control`; all outlive the call.
                    let r = unsafe {
                        libc::sendmmsg(
                            self.sock.as_raw_fd(),
                            hdrs[done..].as_mut_ptr(),
                            (m - done) as u32,
                            0,
                        )
                    };
                    if r < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        if segs[done] > 1
                            && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL))
                        {
                            // The kernel (or the route's device) takes no UDP GSO: plain
                            // datagrams from here on, from this message's first frame.
                            self.gso.store(false, Ordering::Relaxed);
                            from = starts[done];
                            continue 'build;
                        }
                        // Skip the message the kernel refused and go on with the rest.
                        out.errors += segs[done] as u64;
                        done += 1;
                        continue;
                    }
                    for &s in &segs[done..done + r as usize] {
                        out.sent += s as u64;
                        if s > 1 {
                            out.gso_sends += 1;
                            out.gso_segments += s as u64;
                        }
                    }
                    done += r as usize;
                }
                break;
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
    let at = ETH_LEN + ip.header_len();
    let end = ETH_LEN + ip.total_len();
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
    use podnet_switch::encap::underlay;
    use std::sync::Arc;

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

    /// One socket per worker on one port: each with the socket's options, the kernel
    /// spreading senders over them, and the port as taken for anyone else (another
    /// podnet's group included) as one socket's port is. Loopback only.
    #[test]
    fn a_reuseport_group_spreads_senders_and_keeps_the_port_taken() {
        let lo = Ipv4Addr::LOCALHOST;
        let group = UnderlaySocket::bind_group(lo, 0, 3).unwrap();
        let port = group[0].local.port();
        for u in &group {
            assert_eq!(u.sock.local_addr().unwrap().port(), port);
            assert_eq!(u.local, group[0].local);
            assert_eq!(u.gro, group[0].gro);
        }
        for taken in [
            UnderlaySocket::bind(lo, port).err(),
            UnderlaySocket::bind_group(lo, port, 2).err(),
        ] {
            let e = taken.expect("the port is taken");
            assert!(e.message.contains("already in use"), "{e}");
        }
        // 64 senders, each from its own port: the kernel's hash spreads them.
        for _ in 0..64 {
            let c = UdpSocket::bind((lo, 0)).unwrap();
            c.send_to(b"x", (lo, port)).unwrap();
        }
        // Loopback delivers in a softirq that may run after `send_to` returned.
        let mut got = vec![0usize; group.len()];
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.iter().sum::<usize>() < 64 && std::time::Instant::now() < end {
            for (u, n) in group.iter().zip(&mut got) {
                while u.sock.recv(&mut [0u8; 8]).is_ok() {
                    *n += 1;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got.iter().sum::<usize>(), 64, "{got:?}");
        assert!(got.iter().filter(|&&n| n > 0).count() > 1, "{got:?}");
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
                underlay::write_outer_udp(hdr, &config, &peer, 1, b_port, 100);
                buf
            })
            .collect();
        let sent = a.send_batch(&frames);
        assert_eq!((sent.sent, sent.unsendable, sent.errors), (10, 0, 0));
        // Ten equal payloads to one address: one GSO message, where the kernel has it.
        if a.gso.load(Ordering::Relaxed) {
            assert_eq!((sent.gso_sends, sent.gso_segments), (1, 10));
        }
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

    /// Frames of `sizes` (payload bytes; frame `i` is filled with `i`) from `config`'s
    /// node to `port` on loopback.
    fn frames_to(
        pool: &Arc<Pool>,
        config: &NodeConfig,
        port: u16,
        sizes: &[usize],
    ) -> Vec<PacketBuf> {
        let mut peer = config.peers[0].clone();
        peer.underlay_ip = Ipv4Addr::LOCALHOST;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut buf = pool.alloc_from(&vec![i as u8; n]).unwrap();
                let hdr = buf.prepend(OUTER_UDP_LEN).unwrap();
                underlay::write_outer_udp(hdr, config, &peer, 1, port, n);
                buf
            })
            .collect()
    }

    fn loopback_config() -> NodeConfig {
        let mut config = NodeConfig::example();
        config.underlay_ip = Ipv4Addr::LOCALHOST;
        config
    }

    /// Reads from `b` until `want` datagrams came (5 s at most).
    fn recv_all(
        b: &UnderlaySocket,
        pool: &Arc<Pool>,
        config: &NodeConfig,
        want: usize,
    ) -> (Vec<PacketBuf>, Received) {
        let mut rx = Vec::new();
        let mut scratch = RecvScratch::new();
        let mut total = Received::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while (total.datagrams as usize) < want && std::time::Instant::now() < deadline {
            let got = b
                .recv_batch(pool, config, &mut rx, 64, &mut scratch)
                .unwrap();
            total.datagrams += got.datagrams;
            total.gro_reads += got.gro_reads;
            total.gro_datagrams += got.gro_datagrams;
            total.dropped += got.dropped;
            if got.datagrams == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        (rx, total)
    }

    /// Runs of equal payloads to one address (the last of a run shorter) go as GSO
    /// messages and arrive as the same datagrams, in order, at a plain socket.
    #[test]
    fn gso_sends_arrive_as_the_same_datagrams() {
        let lo = Ipv4Addr::LOCALHOST;
        let a = UnderlaySocket::bind(lo, 0).unwrap();
        if !a.gso.load(Ordering::Relaxed) {
            eprintln!("no UDP GSO in this kernel: nothing to test");
            return;
        }
        let plain = UdpSocket::bind((lo, 0)).unwrap();
        plain
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let port = plain.local_addr().unwrap().port();
        let config = loopback_config();
        let pool = Pool::new(128, 2048);
        // 1000 x5 + 500 | 1000 x3 | 1200 (longer: a run of its own) | 7 x2.
        let sizes = [
            1000, 1000, 1000, 1000, 1000, 500, 1000, 1000, 1000, 1200, 7, 7,
        ];
        let frames = frames_to(&pool, &config, port, &sizes);
        let sent = a.send_batch(&frames);
        assert_eq!(
            sent,
            Sent {
                sent: 12,
                unsendable: 0,
                errors: 0,
                gso_sends: 3,
                gso_segments: 11,
            }
        );
        let mut buf = [0u8; 65536];
        for (i, &n) in sizes.iter().enumerate() {
            let (len, from) = plain.recv_from(&mut buf).unwrap();
            assert_eq!(from.port(), a.local.port());
            assert_eq!(&buf[..len], &vec![i as u8; n][..], "datagram {i}");
        }
        plain.set_nonblocking(true).unwrap();
        assert!(plain.recv_from(&mut buf).is_err(), "no more datagrams");
    }

    /// A GSO message to a socket with `UDP_GRO` is read whole and cut into one frame per
    /// datagram, each with its own outer headers, in order, among plain datagrams.
    #[test]
    fn a_gro_read_splits_into_its_datagrams() {
        let lo = Ipv4Addr::LOCALHOST;
        let a = UnderlaySocket::bind(lo, 0).unwrap();
        let b = UnderlaySocket::bind(lo, 0).unwrap();
        if !a.gso.load(Ordering::Relaxed) || !b.gro {
            eprintln!("no UDP GSO/GRO in this kernel: nothing to test");
            return;
        }
        let config = loopback_config();
        let pool = Pool::new(256, 2048);
        // 40 x 1400 + 900 (one GSO message larger than a buffer), then one of 64, then
        // 3 x 1400 (a second GSO message).
        let mut sizes = vec![1400; 40];
        sizes.push(900);
        sizes.push(64);
        sizes.extend([1400; 3]);
        let frames = frames_to(&pool, &config, b.local.port(), &sizes);
        let sent = a.send_batch(&frames);
        assert_eq!((sent.sent, sent.gso_sends, sent.gso_segments), (45, 2, 44));
        drop(frames);
        let (rx, got) = recv_all(&b, &pool, &config, sizes.len());
        assert_eq!(got.datagrams as usize, sizes.len());
        assert_eq!(got.dropped, 0);
        assert_eq!((got.gro_reads, got.gro_datagrams), (2, 44));
        assert_eq!(rx.len(), sizes.len());
        for (i, (f, &n)) in rx.iter().zip(&sizes).enumerate() {
            let outer = underlay::parse(f.data(), &config).unwrap();
            assert_eq!(outer.ip.src, lo);
            let udp = outer.udp.unwrap();
            assert_eq!(
                (udp.src_port, udp.dst_port),
                (a.local.port(), b.local.port())
            );
            assert_eq!(
                &f.data()[udp.payload_at..udp.payload_end],
                &vec![i as u8; n][..],
                "frame {i}"
            );
        }
    }

    /// A kernel that refuses a GSO send (here: `SO_NO_CHECK`, with which UDP GSO gives
    /// EINVAL) turns GSO off for good, and the batch goes out as plain datagrams.
    #[test]
    fn a_refused_gso_send_falls_back_to_plain_datagrams() {
        let lo = Ipv4Addr::LOCALHOST;
        let a = UnderlaySocket::bind(lo, 0).unwrap();
        if !a.gso.load(Ordering::Relaxed) {
            eprintln!("no UDP GSO in this kernel: nothing to test");
            return;
        }
        assert!(set_int(&a.sock, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1));
        let plain = UdpSocket::bind((lo, 0)).unwrap();
        plain
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let config = loopback_config();
        let pool = Pool::new(64, 2048);
        let sizes = [300; 8];
        let frames = frames_to(&pool, &config, plain.local_addr().unwrap().port(), &sizes);
        let sent = a.send_batch(&frames);
        assert_eq!(
            (sent.sent, sent.errors, sent.gso_sends),
            (8, 0, 0),
            "{sent:?}"
        );
        assert!(!a.gso.load(Ordering::Relaxed));
        let mut buf = [0u8; 2048];
        for (i, &n) in sizes.iter().enumerate() {
            let (len, _) = plain.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], &vec![i as u8; n][..], "datagram {i}");
        }
    }

    #[test]
    fn copy_split_reads_across_the_two_parts() {
        let (a, b) = ([0u8, 1, 2, 3], [4u8, 5, 6]);
        for at in 0..7 {
            for len in 0..=7 - at {
                let mut dst = vec![0; len];
                copy_split(&a, &b, at, &mut dst);
                let want: Vec<u8> = (at as u8..(at + len) as u8).collect();
                assert_eq!(dst, want);
            }
        }
    }
}

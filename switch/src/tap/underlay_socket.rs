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
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use crate::buffer::PacketBuf;
use crate::control::NodeConfig;
use crate::mac::Mac;
use crate::underlay::OUTER_UDP_LEN;
use crate::wire::{self, Ipv4Fields, ETHERTYPE_IPV4, ETH_LEN, IPV4_LEN, PROTO_UDP, UDP_LEN};

use super::SetupError;

pub struct UnderlaySocket {
    pub sock: UdpSocket,
    pub local: SocketAddrV4,
}

impl UnderlaySocket {
    /// Binds `ip:port`. The errors a misconfigured host gives are named.
    pub fn bind(ip: Ipv4Addr, port: u16) -> Result<UnderlaySocket, SetupError> {
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
        Ok(UnderlaySocket { sock, local })
    }

    /// Receives one datagram into `buf` as a whole underlay frame addressed to this
    /// node. `Ok(false)` when nothing is waiting.
    pub fn recv(&self, buf: &mut PacketBuf, config: &NodeConfig) -> io::Result<bool> {
        let room = buf.spare_mut();
        let n = match self.sock.recv_from(room) {
            Ok((n, SocketAddr::V4(from))) => (n, from),
            Ok((_, SocketAddr::V6(_))) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e),
        };
        let (len, from) = n;
        if buf.set_len(len).is_none() {
            return Ok(false);
        }
        let hdr = buf
            .prepend(OUTER_UDP_LEN)
            .expect("the headroom holds the outer headers");
        frame_header(hdr, config, *from.ip(), from.port(), self.local.port(), len);
        Ok(true)
    }

    /// Sends an underlay frame the core emitted: its UDP payload to the outer destination.
    /// `Ok(false)` for a frame that is not UDP (the core addressing a host on the
    /// underlay directly, which a socket cannot do).
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        let Some((dst, payload)) = udp_payload(frame) else {
            return Ok(false);
        };
        match self.sock.send_to(payload, dst) {
            Ok(_) => Ok(true),
            Err(e) => Err(e),
        }
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
    let udp = frame.get(at..at + UDP_LEN)?;
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if len < UDP_LEN || at + len > end {
        return None;
    }
    Some((
        SocketAddrV4::new(ip.dst, dport),
        &frame[at + UDP_LEN..at + len],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Pool;
    use crate::control::NodeConfig;
    use crate::underlay;

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
}

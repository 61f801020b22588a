//! Shared by the services tests: node A with services, frame builders and readers.
//!
//! Frames built here compute their checksums in full, by RFC 1071 over the bytes; the
//! byte-exact tests use scapy's frames instead (frames/gen_services.py).
#![allow(dead_code)]

use std::net::Ipv4Addr;

use podnet_switch::checksum;
use podnet_switch::control::{NodeConfig, Peer, SECOND};
use podnet_switch::services::conntrack::Tuple;
use podnet_switch::services::{Service, ServicePort, SessionAffinity, TrafficPolicy};
use podnet_switch::switch::Limits;
use podnet_switch::wire::{self, EthHeader, Ipv4Header, ETH_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use podnet_switch::{Backend, Mac, Pool, PortId, PortKind, Protocol, Switch};

use crate::rig::{self, Rig};

pub const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub const VTEP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 0);
pub const NODE_A: Ipv4Addr = rig::NODE_A;
pub const NODE_B: Ipv4Addr = rig::NODE_B;
pub const WEB: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 50);
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 10);
/// Endpoints on node B.
pub const E2: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 144);
pub const E4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 145);
/// A host on the underlay.
pub const X: Ipv4Addr = Ipv4Addr::new(172, 16, 9, 9);
pub const NODE_PORT: u16 = 30080;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

/// Pod `i` of node A: 10.0.1.(33 + i), MAC 0a:58:0a:00:01:(21 + i), on port `pod(i)`.
pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, 33 + i as u8)
}

pub fn pod_mac(i: usize) -> Mac {
    Mac::from_ip([0x0a, 0x58], pod_ip(i))
}

pub fn gw_mac() -> Mac {
    Mac::from_ip([0x0a, 0x58], GW)
}

pub fn x_mac() -> Mac {
    podnet_switch::control::underlay_mac_for(X)
}

/// The client pod and the local endpoints.
pub const P: usize = 0;
pub const E1: usize = 1;
pub const E3: usize = 2;

/// web: 10.3.0.50 tcp/80 -> 8080, node port 30080.
pub fn web(endpoints: &[Ipv4Addr]) -> Service {
    let mut s = Service::new("web", WEB)
        .with_port(ServicePort::new(Protocol::Tcp, 80, 8080).with_node_port(NODE_PORT));
    for &e in endpoints {
        let node = if e.octets()[2] == 1 {
            "node-a"
        } else {
            "node-b"
        };
        s = s.with_endpoint(e, node);
    }
    s
}

/// dns: 10.3.0.10 udp/53 -> 5353, node port 30053.
pub fn dns(endpoints: &[Ipv4Addr]) -> Service {
    let mut s = Service::new("dns", DNS)
        .with_port(ServicePort::new(Protocol::Udp, 53, 5353).with_node_port(30053));
    for &e in endpoints {
        s = s.with_endpoint(e, "");
    }
    s
}

pub fn sticky(mut s: Service, timeout_ns: u64) -> Service {
    s.session_affinity = SessionAffinity::ClientIP;
    s.affinity_timeout_ns = timeout_ns;
    s
}

pub fn local_policy(mut s: Service) -> Service {
    s.external_traffic_policy = TrafficPolicy::Local;
    s
}

/// Node A (vxlan unless said otherwise) with `pods` pods that have all ARPed their
/// gateway, so the switch knows their MACs, and the services `services`.
///
/// Learned MACs and neighbours do not age here (the tests move the clock by hours and
/// have no pods to answer ARP); everything else is rig::node's node A.
pub fn node_a(backend: Backend, pods: usize, services: Vec<Service>) -> Rig {
    node_a_with(backend, pods, services, Limits::default())
}

pub fn node_a_with(backend: Backend, pods: usize, services: Vec<Service>, limits: Limits) -> Rig {
    let mut c = NodeConfig::new(
        "node-a",
        "10.0.1.0/24".parse().unwrap(),
        "10.0.0.0/16".parse().unwrap(),
        NODE_A,
        backend,
    );
    c.peers
        .push(Peer::new("node-b", NODE_B, "10.0.2.0/24".parse().unwrap()));
    c.mac_aging_ns = 1 << 62;
    c.neighbour_timeout_ns = 1 << 62;
    let sw = Switch::with_limits(c, Pool::new(1024, 2048), limits).unwrap();
    let pod_ports = (0..pods)
        .map(|i| sw.add_port(&format!("pod{i}"), PortKind::Pod))
        .collect();
    let underlay = sw.add_port("underlay", PortKind::Underlay);
    let mut a = Rig {
        sw,
        pods: pod_ports,
        underlay,
        now: SECOND,
    };
    a.sw.set_seed(42);
    for i in 0..pods {
        let out = a.send(a.pod(i), &arp_request(pod_mac(i), pod_ip(i)));
        assert_eq!(out.len(), 1, "the gateway answers pod {i}");
    }
    a.sw.control().set_services(services).unwrap();
    a
}

/// An ARP request from `mac`/`ip` for the gateway.
pub fn arp_request(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    wire::write_eth(&mut f, Mac::BROADCAST, mac, wire::ETHERTYPE_ARP);
    wire::write_arp(
        &mut f[ETH_LEN..],
        &wire::Arp {
            operation: wire::ARP_REQUEST,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: Mac::ZERO,
            target_ip: GW,
        },
    );
    f
}

/// An IPv4 packet: TCP (flags, seq, ack), UDP (checksummed unless `flags` says 0xff)
/// with `payload`.
pub fn ip_packet(t: &Tuple, ttl: u8, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let l4_len = if t.proto == PROTO_TCP { 20 } else { 8 } + payload.len();
    let mut p = vec![0u8; 20 + l4_len];
    wire::write_ipv4(
        &mut p,
        &wire::Ipv4Fields {
            src: t.src,
            dst: t.dst,
            protocol: t.proto,
            ttl,
            tos: 0,
            dont_fragment: true,
            id: 0x1234,
        },
        20 + l4_len,
    );
    let l4 = &mut p[20..];
    l4[0..2].copy_from_slice(&t.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&t.dport.to_be_bytes());
    let at = if t.proto == PROTO_TCP {
        l4[4..8].copy_from_slice(&seq.to_be_bytes());
        l4[8..12].copy_from_slice(&ack.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = flags;
        l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
        20
    } else {
        l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        8
    };
    l4[at..].copy_from_slice(payload);
    if t.proto == PROTO_TCP || flags != 0xff {
        let sum = checksum::pseudo_header(t.src.octets(), t.dst.octets(), t.proto, l4_len as u16);
        let mut c = checksum::finish(checksum::add(sum, l4));
        if t.proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        let cat = if t.proto == PROTO_TCP { 16 } else { 6 };
        l4[cat..cat + 2].copy_from_slice(&c.to_be_bytes());
    }
    p
}

pub fn frame(dst: Mac, src: Mac, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ETH_LEN];
    wire::write_eth(&mut f, dst, src, wire::ETHERTYPE_IPV4);
    f.extend_from_slice(ip);
    f
}

pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tuple {
    Tuple::new(PROTO_TCP, src, sport, dst, dport)
}

pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tuple {
    Tuple::new(PROTO_UDP, src, sport, dst, dport)
}

/// A frame from pod `i` to its gateway.
pub fn from_pod(i: usize, t: &Tuple, flags: u8) -> Vec<u8> {
    frame(
        gw_mac(),
        pod_mac(i),
        &ip_packet(t, 64, flags, 1000, 0, b"podnet"),
    )
}

/// A frame from pod `i` straight to pod `j` over the bridge.
pub fn pod_to_pod(i: usize, j: usize, t: &Tuple, flags: u8) -> Vec<u8> {
    frame(
        pod_mac(j),
        pod_mac(i),
        &ip_packet(t, 64, flags, 5000, 1001, b"reply"),
    )
}

/// A frame from X on the underlay to node A.
pub fn from_x(t: &Tuple, flags: u8) -> Vec<u8> {
    frame(
        podnet_switch::control::underlay_mac_for(NODE_A),
        x_mac(),
        &ip_packet(t, 64, flags, 1000, 0, b"x"),
    )
}

/// A VXLAN frame from node B carrying `inner` (an IPv4 packet) to node A.
pub fn vxlan_from_b(inner: &[u8]) -> Vec<u8> {
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    let mut ieth = vec![0u8; ETH_LEN];
    wire::write_eth(
        &mut ieth,
        podnet_switch::control::vtep_mac_for(NODE_A),
        podnet_switch::control::vtep_mac_for(NODE_B),
        wire::ETHERTYPE_IPV4,
    );
    vx.extend_from_slice(&ieth);
    vx.extend_from_slice(inner);
    let mut udp = vec![0u8; 8];
    wire::write_udp(&mut udp, 50000, 8472, vx.len(), None);
    udp.extend_from_slice(&vx);
    let mut ip = vec![0u8; 20];
    wire::write_ipv4(
        &mut ip,
        &wire::Ipv4Fields {
            src: NODE_B,
            dst: NODE_A,
            protocol: PROTO_UDP,
            ttl: 64,
            tos: 0,
            dont_fragment: true,
            id: 0,
        },
        20 + udp.len(),
    );
    ip.extend_from_slice(&udp);
    frame(
        podnet_switch::control::underlay_mac_for(NODE_A),
        podnet_switch::control::underlay_mac_for(NODE_B),
        &ip,
    )
}

/// A frame that left the switch, read back.
#[derive(Debug, Clone)]
pub struct Seen {
    pub eth: EthHeader,
    pub ip: Ipv4Header,
    /// The TCP or UDP tuple, if it is one.
    pub tuple: Option<Tuple>,
    pub tcp_flags: u8,
    /// The IPv4 packet (inner one for VXLAN).
    pub packet: Vec<u8>,
    /// True when it came out VXLAN-encapsulated.
    pub encapsulated: bool,
}

/// Reads a frame the switch sent; VXLAN frames are opened to their inner packet. Checks
/// every checksum on the way: IPv4 headers, TCP/UDP (UDP 0 allowed), ICMP.
pub fn read(frame: &[u8]) -> Seen {
    let eth = wire::parse_eth(frame).unwrap();
    let mut packet = frame[ETH_LEN..].to_vec();
    let mut ip = wire::parse_ipv4(&packet).expect("valid IPv4 header");
    let mut encapsulated = false;
    if ip.protocol == PROTO_UDP && wire::ports(&packet, &ip).map(|p| p.1) == Some(8472) {
        let udp = &packet[ip.header_len()..];
        assert_eq!(&udp[6..8], &[0, 0], "outer UDP checksum 0");
        assert_eq!(
            u16::from_be_bytes([udp[4], udp[5]]) as usize,
            ip.total_len() - ip.header_len()
        );
        packet = udp[8 + 8 + ETH_LEN..].to_vec();
        ip = wire::parse_ipv4(&packet).expect("valid inner IPv4 header");
        encapsulated = true;
    }
    assert_checksums(&packet, &ip);
    let (tuple, tcp_flags) = match ip.protocol {
        PROTO_TCP | PROTO_UDP => {
            let l4 = &packet[ip.header_len()..];
            let t = Tuple::new(
                ip.protocol,
                ip.src,
                u16::from_be_bytes([l4[0], l4[1]]),
                ip.dst,
                u16::from_be_bytes([l4[2], l4[3]]),
            );
            (Some(t), if ip.protocol == PROTO_TCP { l4[13] } else { 0 })
        }
        _ => (None, 0),
    };
    Seen {
        eth,
        ip,
        tuple,
        tcp_flags,
        packet,
        encapsulated,
    }
}

/// Full recomputation of every checksum of an IPv4 packet.
pub fn assert_checksums(packet: &[u8], ip: &Ipv4Header) {
    assert_eq!(
        checksum::of(&packet[..ip.header_len()]),
        0,
        "IPv4 header checksum"
    );
    let l4 = &packet[ip.header_len()..ip.total_len()];
    match ip.protocol {
        PROTO_TCP | PROTO_UDP => {
            if ip.protocol == PROTO_UDP && l4[6..8] == [0, 0] {
                return;
            }
            let sum = checksum::pseudo_header(
                ip.src.octets(),
                ip.dst.octets(),
                ip.protocol,
                l4.len() as u16,
            );
            assert_eq!(
                checksum::finish(checksum::add(sum, l4)),
                0,
                "transport checksum"
            );
        }
        PROTO_ICMP => {
            assert_eq!(checksum::of(l4), 0, "ICMP checksum");
            if matches!(l4[0], 3 | 11) {
                let inner = &l4[8..];
                let hl = (inner[0] & 0x0f) as usize * 4;
                assert_eq!(checksum::of(&inner[..hl]), 0, "quoted IPv4 header checksum");
            }
        }
        _ => {}
    }
}

/// The one frame that came out, on `port`, read.
#[track_caller]
pub fn one_on(out: &[(PortId, Vec<u8>)], port: PortId) -> Seen {
    assert_eq!(out.len(), 1, "one frame out: {out:?}");
    assert_eq!(out[0].0, port, "on the expected port");
    read(&out[0].1)
}

/// The quoted tuple of an ICMP error.
pub fn quoted(s: &Seen) -> Tuple {
    let icmp = &s.packet[s.ip.header_len()..];
    let inner = &icmp[8..];
    let hl = (inner[0] & 0x0f) as usize * 4;
    let ip = |at: usize| Ipv4Addr::new(inner[at], inner[at + 1], inner[at + 2], inner[at + 3]);
    Tuple::new(
        inner[9],
        ip(12),
        u16::from_be_bytes([inner[hl], inner[hl + 1]]),
        ip(16),
        u16::from_be_bytes([inner[hl + 2], inner[hl + 3]]),
    )
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[track_caller]
pub fn assert_frame(got: &[u8], want: &[u8]) {
    assert_eq!(hex(got), hex(want));
}

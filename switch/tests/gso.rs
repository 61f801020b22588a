//! Super-frames through the pipeline: a pod's 64 KiB TCP segment (TSO) with its offload
//! metadata leaves whole to a pod port that takes GSO, is cut into MTU-sized segments
//! with complete checksums everywhere else (a pod port without GSO, the underlay before
//! VXLAN encapsulation), and is judged by the MTU per segment. A partial checksum comes
//! through a service's DNAT (address and port changed) as the pseudo-header sum of the
//! translated packet.

use std::net::Ipv4Addr;

use podnet_switch::checksum;
use podnet_switch::control::{NodeConfig, SECOND};
use podnet_switch::wire::{self, Arp, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_LEN, PROTO_TCP};
use podnet_switch::{
    DropReason, Gso, Mac, Offload, PacketBuf, Pool, PortId, PortKind, Protocol, Service,
    ServicePort, Switch,
};

const POD0: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const POD1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 11);
const POD2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 12);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 50);
/// The segment size a pod with MTU 1450 uses: 1450 - 20 - 20.
const MSS: u16 = 1410;

fn mac(last: u8) -> Mac {
    Mac([0x0a, 0x58, 0x0a, 0x00, 0x01, last])
}

/// A switch for node A (VXLAN, pod MTU 1450): pod ports 0 and 1 take GSO, pod port 2
/// does not; an underlay port.
struct Node {
    sw: Switch,
    pods: [PortId; 3],
    underlay: PortId,
    big: std::sync::Arc<Pool>,
    now: u64,
}

impl Node {
    fn new() -> Node {
        let sw = Switch::new(NodeConfig::example(), Pool::new(256, 2048)).unwrap();
        let pods = [
            sw.add_port_with_gso("p0", PortKind::Pod, true),
            sw.add_port_with_gso("p1", PortKind::Pod, true),
            sw.add_port("p2", PortKind::Pod),
        ];
        let underlay = sw.add_port("underlay", PortKind::Underlay);
        let mut n = Node {
            sw,
            pods,
            underlay,
            big: Pool::new(8, 65536),
            now: SECOND,
        };
        // Each pod asks for its gateway: the bridge learns its MAC, the gateway its IP.
        for (i, ip) in [POD0, POD1, POD2].into_iter().enumerate() {
            let port = n.pods[i];
            n.send_plain(port, &arp_request(mac(10 + i as u8), ip));
        }
        n
    }

    fn run(&mut self, port: PortId, buf: PacketBuf) -> Vec<(PortId, PacketBuf)> {
        let mut tx = Vec::new();
        self.now += 1000;
        self.sw.process(port, &mut vec![buf], self.now, &mut tx);
        tx
    }

    fn send_plain(&mut self, port: PortId, frame: &[u8]) -> Vec<(PortId, PacketBuf)> {
        let buf = self.sw.pool().alloc_from(frame).unwrap();
        self.run(port, buf)
    }

    /// `frame` as an offloading TAP hands it over: in a 64 KiB buffer, with `offload`.
    fn send_offloaded(
        &mut self,
        port: PortId,
        frame: &[u8],
        offload: Offload,
    ) -> Vec<(PortId, PacketBuf)> {
        let mut buf = self.big.alloc_from(frame).unwrap();
        buf.set_offload(offload);
        self.run(port, buf)
    }
}

fn arp_request(src: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    wire::write_eth(&mut f, Mac::BROADCAST, src, ETHERTYPE_ARP);
    let arp = Arp {
        operation: wire::ARP_REQUEST,
        sender_mac: src,
        sender_ip: ip,
        target_mac: Mac::ZERO,
        target_ip: NodeConfig::example().gateway_ip(),
    };
    wire::write_arp(&mut f[ETH_LEN..], &arp);
    f
}

/// A TCP segment as a pod's kernel hands it to an offloading TAP: Ethernet (`.0` to
/// `.1`), IPv4 (DF,
/// TTL 64), TCP (ACK|PSH, sequence 1000) with `payload`, the checksum partial (the
/// folded pseudo-header sum over the whole length).
fn tcp_frame(
    (src_mac, dst_mac): (Mac, Mac),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; ETH_LEN + 40];
    wire::write_eth(&mut f, dst_mac, src_mac, ETHERTYPE_IPV4);
    f.extend_from_slice(payload);
    let fields = wire::Ipv4Fields {
        src: src.0,
        dst: dst.0,
        protocol: PROTO_TCP,
        ttl: 64,
        tos: 0,
        dont_fragment: true,
        id: 500,
    };
    wire::write_ipv4(&mut f[ETH_LEN..], &fields, 40 + payload.len());
    let t = ETH_LEN + 20;
    f[t..t + 2].copy_from_slice(&src.1.to_be_bytes());
    f[t + 2..t + 4].copy_from_slice(&dst.1.to_be_bytes());
    f[t + 4..t + 8].copy_from_slice(&1000u32.to_be_bytes());
    f[t + 12] = 5 << 4;
    f[t + 13] = 0x18;
    let len = (20 + payload.len()) as u16;
    let pseudo = checksum::pseudo_header(src.0.octets(), dst.0.octets(), PROTO_TCP, len);
    f[t + 16..t + 18].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
    f
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn tso(gso_size: u16) -> Offload {
    Offload {
        gso: Gso::Tcp4,
        gso_size,
        csum_partial: true,
    }
}

/// The IPv4 packet at `ip` carries a valid TCP checksum.
fn tcp_checksum_ok(ip: &[u8]) -> bool {
    let h = wire::parse_ipv4(ip).unwrap();
    let l4 = &ip[h.header_len()..h.total_len()];
    let sum = checksum::pseudo_header(h.src.octets(), h.dst.octets(), PROTO_TCP, l4.len() as u16);
    checksum::finish(checksum::add(sum, l4)) == 0
}

/// Checks that `segments` (IPv4 packets) carry `data` in order from sequence 1000, each
/// at most `mtu` bytes with valid checksums and TTL `ttl`.
fn assert_segments(segments: &[&[u8]], data: &[u8], mtu: usize, ttl: u8) {
    let mut got = Vec::new();
    for (i, ip) in segments.iter().enumerate() {
        let h = wire::parse_ipv4(ip).unwrap();
        assert!(h.total_len() <= mtu, "segment {i}: {} bytes", h.total_len());
        assert_eq!(h.ttl, ttl);
        assert!(tcp_checksum_ok(ip), "segment {i}: TCP checksum");
        let seq = u32::from_be_bytes(ip[24..28].try_into().unwrap());
        assert_eq!(seq as usize, 1000 + got.len());
        got.extend_from_slice(&ip[40..h.total_len()]);
    }
    assert_eq!(got, data);
}

#[test]
fn a_super_frame_is_bridged_whole_to_a_pod_that_takes_gso() {
    let mut n = Node::new();
    let data = payload(30_000);
    let f = tcp_frame((mac(10), mac(11)), (POD0, 40000), (POD1, 5001), &data);
    let out = n.send_offloaded(n.pods[0], &f, tso(MSS));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, n.pods[1]);
    assert_eq!(
        out[0].1.data(),
        &f[..],
        "the frame as it came, checksum partial"
    );
    assert_eq!(out[0].1.offload(), tso(MSS));
    let g = n.sw.gso_counters();
    assert_eq!((g.super_frames_whole, g.super_frames_segmented), (1, 0));
    let c = n.sw.counters();
    assert_eq!(
        c.forwarded,
        1 + 3,
        "the super-frame and the three ARP replies"
    );
    assert_eq!(c.dropped_total(), 0);
}

#[test]
fn a_super_frame_is_cut_for_a_pod_without_gso() {
    let mut n = Node::new();
    let data = payload(30_000);
    let f = tcp_frame((mac(10), mac(12)), (POD0, 40000), (POD2, 5001), &data);
    let before = n.sw.counters();
    let out = n.send_offloaded(n.pods[0], &f, tso(MSS));
    let segments: Vec<&[u8]> = out
        .iter()
        .map(|(p, b)| {
            assert_eq!(*p, n.pods[2]);
            assert!(b.offload().is_none());
            &b.data()[ETH_LEN..]
        })
        .collect();
    assert_eq!(segments.len(), 30_000usize.div_ceil(MSS as usize));
    // Bridged: not routed, so the TTL stays.
    assert_segments(&segments, &data, 1450, 64);
    let g = n.sw.gso_counters();
    assert_eq!(g.super_frames_whole, 0);
    assert_eq!(g.super_frames_segmented, 1);
    assert_eq!(g.segments, segments.len() as u64);
    let c = n.sw.counters();
    assert_eq!(
        c.rx_packets - before.rx_packets,
        1,
        "a super-frame is one frame in"
    );
    assert_eq!(c.forwarded - before.forwarded, 1);
    assert_eq!(c.tx_packets - before.tx_packets, segments.len() as u64);
}

#[test]
fn a_super_frame_to_another_node_is_cut_before_vxlan_encapsulation() {
    let mut n = Node::new();
    let gw = NodeConfig::example().gateway_mac();
    let data = payload(20_000);
    let f = tcp_frame((mac(10), gw), (POD0, 40000), (REMOTE, 5001), &data);
    let out = n.send_offloaded(n.pods[0], &f, tso(MSS));
    // Outer Ethernet, IPv4, UDP, VXLAN, inner Ethernet.
    let inner_at = ETH_LEN + 20 + 8 + 8 + ETH_LEN;
    let segments: Vec<&[u8]> = out
        .iter()
        .map(|(p, b)| {
            assert_eq!(*p, n.underlay);
            assert!(b.len() <= ETH_LEN + 1500);
            &b.data()[inner_at..]
        })
        .collect();
    assert_eq!(segments.len(), 20_000usize.div_ceil(MSS as usize));
    // Routed: the TTL went down by one.
    assert_segments(&segments, &data, 1450, 63);
    assert_eq!(n.sw.counters().encap, segments.len() as u64);
    assert_eq!(n.sw.gso_counters().super_frames_segmented, 1);
}

#[test]
fn the_mtu_check_of_a_super_frame_is_of_its_segments() {
    let mut n = Node::new();
    let gw = NodeConfig::example().gateway_mac();
    let data = payload(20_000);
    let f = tcp_frame((mac(10), gw), (POD0, 40000), (REMOTE, 5001), &data);
    // 20,040 bytes in all, 1,450 a segment: fits the pod MTU.
    let out = n.send_offloaded(n.pods[0], &f, tso(MSS));
    assert!(!out.is_empty());
    assert_eq!(n.sw.counters().dropped(DropReason::Mtu), 0);
    // 1,451 a segment: does not; DF, so the sender hears of it from the gateway.
    let out = n.send_offloaded(n.pods[0], &f, tso(MSS + 1));
    assert!(out.iter().all(|(p, _)| *p != n.underlay));
    assert_eq!(n.sw.counters().dropped(DropReason::Mtu), 1);
    let icmp: Vec<&PacketBuf> = out
        .iter()
        .filter(|(p, _)| *p == n.pods[0])
        .map(|(_, b)| b)
        .collect();
    assert_eq!(icmp.len(), 1, "fragmentation needed, back to the sender");
    let ip = &icmp[0].data()[ETH_LEN..];
    assert_eq!(ip[9], wire::PROTO_ICMP);
    assert_eq!((ip[20], ip[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([ip[26], ip[27]]), 1450);
}

#[test]
fn a_partial_checksum_survives_dnat_to_a_local_endpoint() {
    let mut n = Node::new();
    n.sw.control()
        .set_services(vec![Service::new("web", VIP)
            .with_port(ServicePort::new(Protocol::Tcp, 80, 8080))
            .with_endpoint(POD1, "node-a")])
        .unwrap();
    let gw = NodeConfig::example().gateway_mac();
    let data = payload(10_000);
    let f = tcp_frame((mac(10), gw), (POD0, 40000), (VIP, 80), &data);
    let out = n.send_offloaded(n.pods[0], &f, tso(MSS));
    assert_eq!(out.len(), 1, "whole, to the endpoint's pod");
    let (port, buf) = &out[0];
    assert_eq!(*port, n.pods[1]);
    assert_eq!(buf.offload(), tso(MSS));
    // What the sender would have left in the field for the translated packet.
    let want = tcp_frame((gw, mac(11)), (POD0, 40000), (POD1, 8080), &data);
    let ip = &buf.data()[ETH_LEN..];
    assert_eq!(&ip[36..38], &want[ETH_LEN + 36..ETH_LEN + 38]);
    assert_eq!(&ip[20..], &want[ETH_LEN + 20..]);
    // Completed as the receiving kernel does it, the checksum is valid.
    let mut done = ip.to_vec();
    let c = checksum::of(&done[20..]);
    done[36..38].copy_from_slice(&c.to_be_bytes());
    assert!(tcp_checksum_ok(&done));

    // A reply from the endpoint, partial too, bridged back to the client: reverse NAT
    // from the VIP, the field again the pseudo-header sum of what leaves.
    let reply = tcp_frame((mac(11), mac(10)), (POD1, 8080), (POD0, 40000), b"ok");
    let out = n.send_offloaded(
        n.pods[1],
        &reply,
        Offload {
            csum_partial: true,
            ..Offload::NONE
        },
    );
    assert_eq!(out.len(), 1);
    let ip = &out[0].1.data()[ETH_LEN..];
    let want = tcp_frame((mac(11), mac(10)), (VIP, 80), (POD0, 40000), b"ok");
    assert_eq!(ip, &want[ETH_LEN..]);
}

#[test]
fn a_partial_checksum_is_completed_for_a_port_without_gso() {
    let mut n = Node::new();
    let f = tcp_frame(
        (mac(10), mac(12)),
        (POD0, 40000),
        (POD2, 5001),
        b"an ack with data",
    );
    let partial = Offload {
        csum_partial: true,
        ..Offload::NONE
    };
    let out = n.send_offloaded(n.pods[0], &f, partial);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.offload().is_none());
    assert!(tcp_checksum_ok(&out[0].1.data()[ETH_LEN..]));
    assert_eq!(n.sw.gso_counters().super_frames_segmented, 0);
}

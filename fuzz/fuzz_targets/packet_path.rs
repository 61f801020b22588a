//! The packet path: frames of any bytes into a node with services configured, on a pod
//! port, the underlay and the host port. No input may panic the switch, and the node's
//! counters must add up after every batch.
//!
//! Input: records `[op][len hi][len lo][len bytes]`. `op & 3` picks the ingress port
//! (pod 0, pod 1, underlay, host); `op & 4` moves the clock by a second and runs the
//! timers; `op & 8` changes the endpoints (stale UDP flows get flushed); `op & 0x40`
//! builds a well-formed frame from the record's bytes (so the fuzzer reaches the
//! service stage and the decapsulation without finding checksums) instead of taking them
//! raw.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use podnet_switch::control::{underlay_mac_for, vtep_mac_for, NodeConfig, Peer, SECOND};
use podnet_switch::services::{Endpoint, Service, ServicePort, SessionAffinity, TrafficPolicy};
use podnet_switch::switch::Limits;
use podnet_switch::wire::{self, ETH_LEN};
use podnet_switch::{Backend, Mac, Pool, PortKind, Protocol, Switch};

const NODE_A: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
const NODE_B: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

/// Addresses the built frames pick from.
const ADDRS: [Ipv4Addr; 12] = [
    Ipv4Addr::new(10, 0, 1, 10),
    Ipv4Addr::new(10, 0, 1, 11),
    Ipv4Addr::new(10, 0, 2, 10),
    Ipv4Addr::new(10, 3, 0, 50),
    Ipv4Addr::new(10, 3, 0, 10),
    Ipv4Addr::new(10, 3, 0, 60),
    NODE_A,
    GW,
    Ipv4Addr::new(10, 0, 1, 0),
    Ipv4Addr::new(10, 0, 9, 9),
    Ipv4Addr::new(172, 16, 9, 9),
    Ipv4Addr::new(8, 8, 8, 8),
];
const PORTS: [u16; 8] = [80, 53, 8080, 5353, 30080, 30053, 30090, 8472];

fn services(variant: bool) -> Vec<Service> {
    let (e1, e2, e3) = (
        Ipv4Addr::new(10, 0, 1, 10),
        Ipv4Addr::new(10, 0, 1, 11),
        Ipv4Addr::new(10, 0, 2, 10),
    );
    let mut web = Service::new("web", Ipv4Addr::new(10, 3, 0, 50))
        .with_port(ServicePort::new(Protocol::Tcp, 80, 8080).with_node_port(30080))
        .with_port(ServicePort::new(Protocol::Udp, 80, 8080));
    let mut dns = Service::new("dns", Ipv4Addr::new(10, 3, 0, 10))
        .with_port(ServicePort::new(Protocol::Udp, 53, 5353).with_node_port(30053));
    dns.session_affinity = SessionAffinity::ClientIP;
    dns.affinity_timeout_ns = 3 * SECOND;
    let mut local = Service::new("local", Ipv4Addr::new(10, 3, 0, 60))
        .with_port(ServicePort::new(Protocol::Tcp, 80, 8080).with_node_port(30090));
    local.external_traffic_policy = TrafficPolicy::Local;
    let eps: &[Ipv4Addr] = if variant { &[e3] } else { &[e1, e2, e3] };
    for &e in eps {
        web.endpoints.push(Endpoint::new(e, ""));
        dns.endpoints.push(Endpoint::new(e, ""));
    }
    if !variant {
        local.endpoints.push(Endpoint::new(e2, ""));
    }
    vec![web, dns, local]
}

fn ones(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A well-formed IPv4 packet from the record's bytes.
fn build_ip(b: &[u8]) -> Vec<u8> {
    let g = |i: usize| b.get(i).copied().unwrap_or(0);
    let src = ADDRS[g(0) as usize % ADDRS.len()];
    let dst = ADDRS[g(1) as usize % ADDRS.len()];
    let proto = [6u8, 17, 1][g(2) as usize % 3];
    let sport = if g(3) & 0x80 != 0 {
        40000 + g(4) as u16
    } else {
        PORTS[g(4) as usize % 8]
    };
    let dport = PORTS[g(5) as usize % 8];
    let ttl = g(6);
    let flags = g(7);
    let payload = b.get(8..).unwrap_or(&[]);
    let mut l4 = match proto {
        6 => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&sport.to_be_bytes());
            t[2..4].copy_from_slice(&dport.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = flags;
            t
        }
        17 => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&sport.to_be_bytes());
            u[2..4].copy_from_slice(&dport.to_be_bytes());
            u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            u
        }
        _ => vec![flags, 0, 0, 0, 0, 0, 0, 0],
    };
    l4.extend_from_slice(payload);
    let total = 20 + l4.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = if g(3) & 1 != 0 { 0x40 } else { 0 };
    p[8] = ttl;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = fold(ones(0, &p));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let c = match proto {
        1 => fold(ones(0, &l4)),
        _ => {
            let mut ph = Vec::new();
            ph.extend_from_slice(&src.octets());
            ph.extend_from_slice(&dst.octets());
            ph.extend_from_slice(&[0, proto]);
            ph.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            fold(ones(ones(0, &ph), &l4))
        }
    };
    let at = match proto {
        6 => 16,
        17 => 6,
        _ => 2,
    };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&l4);
    p
}

fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ETH_LEN];
    wire::write_eth(&mut f, dst, src, ethertype);
    f.extend_from_slice(payload);
    f
}

/// A well-formed frame for `port` (0, 1 pods; 2 underlay; 3 host) from the bytes.
fn build_frame(port: u8, b: &[u8]) -> Vec<u8> {
    let gw_mac = Mac::from_ip([0x0a, 0x58], GW);
    let ip = build_ip(b);
    match port {
        0 | 1 => eth(gw_mac, Mac([0x0a, 0x58, 10, 0, 1, 10 + port]), 0x0800, &ip),
        2 => {
            let kind = b.first().copied().unwrap_or(0) >> 6;
            if kind == 0 {
                // A host on the underlay, straight to the node.
                return eth(
                    underlay_mac_for(NODE_A),
                    Mac([2, 0, 172, 16, 9, 9]),
                    0x0800,
                    &ip,
                );
            }
            // From node B, encapsulated: vxlan (or a mangled VNI), or udp.
            let mut payload = Vec::new();
            let dport = if kind == 3 { 8285 } else { 8472 };
            if kind != 3 {
                let vni = if kind == 2 {
                    b.get(1).copied().unwrap_or(2) as u32
                } else {
                    1
                };
                payload.extend_from_slice(&[
                    0x08,
                    0,
                    0,
                    0,
                    (vni >> 16) as u8,
                    (vni >> 8) as u8,
                    vni as u8,
                    0,
                ]);
                payload.extend(eth(vtep_mac_for(NODE_A), vtep_mac_for(NODE_B), 0x0800, &[]));
            }
            payload.extend_from_slice(&ip);
            let mut udp = vec![0u8; 8];
            wire::write_udp(&mut udp, 40000, dport, payload.len(), None);
            udp.extend_from_slice(&payload);
            let mut outer = vec![0u8; 20];
            wire::write_ipv4(
                &mut outer,
                &wire::Ipv4Fields {
                    src: NODE_B,
                    dst: NODE_A,
                    protocol: 17,
                    ttl: 64,
                    tos: 0,
                    dont_fragment: true,
                    id: 0,
                },
                20 + udp.len(),
            );
            outer.extend_from_slice(&udp);
            eth(
                underlay_mac_for(NODE_A),
                underlay_mac_for(NODE_B),
                0x0800,
                &outer,
            )
        }
        _ => eth(gw_mac, Mac([2, 1, 10, 0, 1, 1]), 0x0800, &ip),
    }
}

fuzz_target!(|data: &[u8]| {
    let backend = match data.first().copied().unwrap_or(0) % 3 {
        0 => Backend::VXLAN,
        1 => Backend::UDP,
        _ => Backend::HostGw,
    };
    let mut c = NodeConfig::new(
        "node-a",
        "10.0.1.0/24".parse().unwrap(),
        "10.0.0.0/16".parse().unwrap(),
        NODE_A,
        backend,
    );
    c.peers
        .push(Peer::new("node-b", NODE_B, "10.0.2.0/24".parse().unwrap()));
    let limits = Limits {
        mac_table: 8,
        arp_queue: 4,
        conntrack: 16,
        affinity: 8,
    };
    let sw = Switch::with_limits(c, Pool::new(64, 2048), limits).unwrap();
    let pods = [
        sw.add_port("pod0", PortKind::Pod),
        sw.add_port("pod1", PortKind::Pod),
    ];
    let underlay = sw.add_port("underlay", PortKind::Underlay);
    let host = sw.add_port("host", PortKind::Host);
    sw.control().set_services(services(false)).unwrap();
    sw.set_seed(7);
    let mut now = SECOND;
    let mut variant = false;
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut tx = Vec::new();
    while rest.len() >= 3 {
        let op = rest[0];
        let len = (u16::from_be_bytes([rest[1], rest[2]]) as usize)
            .min(rest.len() - 3)
            .min(1600);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        if op & 4 != 0 {
            now += SECOND;
            sw.poll(now, &mut tx);
        }
        if op & 8 != 0 {
            variant = !variant;
            sw.control().set_services(services(variant)).unwrap();
        }
        let port = op & 3;
        let frame = if op & 0x40 != 0 {
            build_frame(port, bytes)
        } else {
            bytes.to_vec()
        };
        let ingress = match port {
            0 | 1 => pods[port as usize],
            2 => underlay,
            _ => host,
        };
        let Some(buf) = sw.pool().alloc_from(&frame) else {
            continue;
        };
        let mut rx = vec![buf];
        sw.process(ingress, &mut rx, now, &mut tx);
        // What leaves is well-formed enough to be read again.
        for (_, out) in tx.drain(..) {
            assert!(out.len() >= ETH_LEN, "a frame out shorter than Ethernet");
        }
        let k = sw.counters();
        assert_eq!(
            k.rx_packets + k.generated,
            k.forwarded + k.consumed + k.dropped_total() + k.queued,
            "{k:#?}"
        );
    }
});

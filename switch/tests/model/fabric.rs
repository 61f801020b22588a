//! A cluster of real switches, one per node of a model [`Cluster`], wired by a tiny
//! fabric that moves underlay frames by destination MAC; pods and externals are frame
//! sources and sinks. Frames are built and read here with code of its own (checksums
//! by RFC 1071 over the bytes), not with the datapath's helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use podnet_switch::control::{underlay_mac_for, NodeConfig, Peer, SECOND};
use podnet_switch::services::{Endpoint, Service, ServicePort, SessionAffinity, TrafficPolicy};
use podnet_switch::{Backend as SwBackend, Mac, Pool, PortId, PortKind, Protocol, Switch};

use super::reference::{Backend, Cluster, PodRef, Proto};

/// Frames one injected frame may cause, all hops and copies together, before the fabric
/// calls it a loop: a copy to every pod port (a flood or the gateway's ARP request) and
/// a frame across the underlay per node, twice (an ICMP error or reset goes back), and
/// a little slack.
pub fn max_frames_per_inject(c: &Cluster) -> usize {
    2 * (c.pods().len() + c.nodes.len()) + 8
}

pub const VNI: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    Pod(PodRef),
    External(usize),
}

/// A frame that left the fabric at a pod or an external.
#[derive(Clone, Debug)]
pub struct Out {
    pub at: Sink,
    pub frame: Vec<u8>,
}

pub struct NodeRt {
    pub sw: Switch,
    pub underlay: PortId,
    pub pods: Vec<PortId>,
}

pub struct Net {
    pub cluster: Cluster,
    pub nodes: Vec<NodeRt>,
    pub now: u64,
    /// Every frame that crossed the underlay: (from node, frame).
    pub underlay: Vec<(usize, Vec<u8>)>,
    /// Frames sent on the underlay to a MAC nobody has.
    pub lost: Vec<Vec<u8>>,
}

pub fn pod_mac(ip: Ipv4Addr) -> Mac {
    Mac::from_ip([0x0a, 0x58], ip)
}

pub fn backend_of(b: Backend) -> SwBackend {
    match b {
        Backend::Vxlan => SwBackend::Vxlan {
            vni: VNI,
            port: 8472,
        },
        Backend::Udp => SwBackend::Udp { port: 8285 },
        Backend::HostGw => SwBackend::HostGw,
    }
}

pub fn services_of(c: &Cluster) -> Vec<Service> {
    c.services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut out = Service::new(&format!("svc{i}"), s.vip);
            for p in &s.ports {
                let proto = match p.proto {
                    Proto::Tcp => Protocol::Tcp,
                    Proto::Udp => Protocol::Udp,
                };
                let mut sp = ServicePort::new(proto, p.port, p.target);
                sp.node_port = p.node_port;
                out = out.with_port(sp);
            }
            out.endpoints = s.endpoints.iter().map(|&e| Endpoint::new(e, "")).collect();
            if s.affinity {
                out.session_affinity = SessionAffinity::ClientIP;
            }
            if s.local {
                out.external_traffic_policy = TrafficPolicy::Local;
            }
            out
        })
        .collect()
}

impl Net {
    /// The cluster's switches, every pod having ARPed its gateway (so the bridge knows
    /// its MAC and the gateway its address), services set on every node.
    pub fn new(cluster: &Cluster, seed: u64) -> Net {
        let n = cluster.nodes.len();
        let subnet = |i: usize| format!("{}/24", cluster.vtep(i)).parse().unwrap();
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut c = NodeConfig::new(
                &format!("node{i}"),
                subnet(i),
                "10.2.0.0/16".parse().unwrap(),
                cluster.node_ip(i),
                backend_of(cluster.backend),
            );
            c.peers = (0..n)
                .filter(|&j| j != i)
                .map(|j| Peer::new(&format!("node{j}"), cluster.node_ip(j), subnet(j)))
                .collect();
            let sw = Switch::new(c, Pool::new(256, 2048)).unwrap();
            sw.set_seed(seed ^ i as u64);
            let pods = (0..cluster.nodes[i].pods)
                .map(|k| sw.add_port(&format!("pod{k}"), PortKind::Pod))
                .collect();
            let underlay = sw.add_port("underlay", PortKind::Underlay);
            sw.control().set_services(services_of(cluster)).unwrap();
            nodes.push(NodeRt { sw, underlay, pods });
        }
        let mut net = Net {
            cluster: cluster.clone(),
            nodes,
            now: SECOND,
            underlay: Vec::new(),
            lost: Vec::new(),
        };
        for p in cluster.pods() {
            let ip = cluster.pod_ip(p);
            let arp = arp_request(pod_mac(ip), ip, cluster.gateway(p.node));
            let out = net.send_from_pod(p, arp);
            assert_eq!(out.len(), 1, "the gateway answers {p:?}: {out:?}");
        }
        net
    }

    /// A frame from pod `p` into its switch; what left the fabric.
    pub fn send_from_pod(&mut self, p: PodRef, frame: Vec<u8>) -> Vec<Out> {
        let port = self.nodes[p.node].pods[p.index];
        self.run(p.node, port, frame)
    }

    /// A frame from external `x` onto the underlay.
    pub fn send_from_external(&mut self, x: usize, frame: Vec<u8>) -> Vec<Out> {
        let dst = Mac::from_slice(&frame[0..6]);
        match self.node_by_mac(dst) {
            Some(n) => {
                let port = self.nodes[n].underlay;
                self.run(n, port, frame)
            }
            None => {
                let _ = x;
                self.lost.push(frame);
                Vec::new()
            }
        }
    }

    /// A frame into node `n`'s underlay port (as if from another node).
    pub fn send_to_underlay(&mut self, n: usize, frame: Vec<u8>) -> Vec<Out> {
        let port = self.nodes[n].underlay;
        self.run(n, port, frame)
    }

    fn node_by_mac(&self, mac: Mac) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| underlay_mac_for(self.cluster.node_ip(i)) == mac)
    }

    fn external_by_mac(&self, mac: Mac) -> Option<usize> {
        (0..self.cluster.externals).find(|&i| underlay_mac_for(self.cluster.external_ip(i)) == mac)
    }

    fn run(&mut self, node: usize, port: PortId, frame: Vec<u8>) -> Vec<Out> {
        let mut queue = VecDeque::from([(node, port, frame)]);
        let mut out = Vec::new();
        let mut moved = 0;
        let bound = max_frames_per_inject(&self.cluster);
        while let Some((n, port, frame)) = queue.pop_front() {
            let buf = self.nodes[n]
                .sw
                .pool()
                .alloc_from(&frame)
                .expect("a buffer");
            let mut rx = vec![buf];
            let mut tx = Vec::new();
            self.nodes[n].sw.process(port, &mut rx, self.now, &mut tx);
            for (p, buf) in tx {
                moved += 1;
                assert!(moved <= bound, "more than {bound} frames for one: a loop?");
                self.emit(n, p, buf.data().to_vec(), &mut queue, &mut out);
            }
        }
        self.assert_counters_add_up();
        out
    }

    /// Moves time on and runs every node's timers (ARP waits expire).
    pub fn advance(&mut self, ns: u64) -> Vec<Out> {
        self.now += ns;
        let mut out = Vec::new();
        let mut queue = VecDeque::new();
        for n in 0..self.nodes.len() {
            let mut tx = Vec::new();
            self.nodes[n].sw.poll(self.now, &mut tx);
            for (p, buf) in tx {
                self.emit(n, p, buf.data().to_vec(), &mut queue, &mut out);
            }
        }
        assert!(queue.is_empty(), "timers sent nothing to the underlay");
        self.assert_counters_add_up();
        out
    }

    fn emit(
        &mut self,
        n: usize,
        port: PortId,
        frame: Vec<u8>,
        queue: &mut VecDeque<(usize, PortId, Vec<u8>)>,
        out: &mut Vec<Out>,
    ) {
        if port == self.nodes[n].underlay {
            self.underlay.push((n, frame.clone()));
            let dst = Mac::from_slice(&frame[0..6]);
            if let Some(m) = self.node_by_mac(dst) {
                assert_ne!(m, n, "a node sent a frame to itself");
                queue.push_back((m, self.nodes[m].underlay, frame));
            } else if let Some(x) = self.external_by_mac(dst) {
                out.push(Out {
                    at: Sink::External(x),
                    frame,
                });
            } else {
                self.lost.push(frame);
            }
            return;
        }
        let k = self.nodes[n]
            .pods
            .iter()
            .position(|&p| p == port)
            .expect("a frame out on a port the fabric knows");
        out.push(Out {
            at: Sink::Pod(PodRef { node: n, index: k }),
            frame,
        });
    }

    /// The accounting identity every node keeps.
    pub fn assert_counters_add_up(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let c = n.sw.counters();
            assert_eq!(
                c.rx_packets + c.generated,
                c.forwarded + c.consumed + c.dropped_total() + c.queued,
                "node {i}: {c:#?}"
            );
        }
    }

    /// Drops of `reason` summed over the nodes.
    pub fn drops(&self, reason: &str) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.sw.counters().drops.get(reason).copied().unwrap_or(0))
            .sum()
    }
}

// ---- frames, built and read by hand ----------------------------------------------------

pub fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < data.len() {
        sum += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
        i += 2;
    }
    if i < data.len() {
        sum += (data[i] as u32) << 8;
    }
    sum
}

pub fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(&[0, proto]);
    b.extend_from_slice(&(len as u16).to_be_bytes());
    csum_add(0, &b)
}

pub fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn arp_request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&mac.0);
    a.extend_from_slice(&ip.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    a.resize(46, 0);
    eth(Mac::BROADCAST, mac, 0x0806, &a)
}

/// What a test puts in a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkt {
    pub proto: Proto,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub ttl: u8,
    pub df: bool,
    pub id: u16,
    /// TCP flags (TCP only).
    pub flags: u8,
    pub payload: Vec<u8>,
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

impl Pkt {
    pub fn l4_len(&self) -> usize {
        match self.proto {
            Proto::Tcp => 20,
            Proto::Udp => 8,
        }
    }

    pub fn total_len(&self) -> usize {
        20 + self.l4_len() + self.payload.len()
    }

    /// The IPv4 packet, every checksum right.
    pub fn bytes(&self) -> Vec<u8> {
        let proto = self.proto.number();
        let mut l4 = vec![0u8; self.l4_len()];
        l4[0..2].copy_from_slice(&self.sport.to_be_bytes());
        l4[2..4].copy_from_slice(&self.dport.to_be_bytes());
        match self.proto {
            Proto::Tcp => {
                l4[4..8].copy_from_slice(&1000u32.to_be_bytes());
                l4[12] = 5 << 4;
                l4[13] = self.flags;
                l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
            }
            Proto::Udp => {
                l4[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            }
        }
        l4.extend_from_slice(&self.payload);
        let mut c = csum_fold(csum_add(pseudo(self.src, self.dst, proto, l4.len()), &l4));
        if self.proto == Proto::Udp && c == 0 {
            c = 0xffff;
        }
        let at = if self.proto == Proto::Tcp { 16 } else { 6 };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        let total = 20 + l4.len();
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&self.id.to_be_bytes());
        p[6] = if self.df { 0x40 } else { 0 };
        p[8] = self.ttl;
        p[9] = proto;
        p[12..16].copy_from_slice(&self.src.octets());
        p[16..20].copy_from_slice(&self.dst.octets());
        let c = csum_fold(csum_add(0, &p));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&l4);
        p
    }

    /// The frame pod `from_ip` sends on its node: to the peer directly when on its
    /// subnet (but for the gateway), else to the gateway.
    pub fn frame_from_pod(&self, cluster: &Cluster, from: PodRef) -> Vec<u8> {
        let here = cluster.node_of_subnet(self.dst) == Some(from.node)
            && self.dst != cluster.gateway(from.node);
        let next = if here {
            self.dst
        } else {
            cluster.gateway(from.node)
        };
        eth(
            pod_mac(next),
            pod_mac(cluster.pod_ip(from)),
            0x0800,
            &self.bytes(),
        )
    }

    /// The frame an external sends to a node's underlay address.
    pub fn frame_from_external(&self, cluster: &Cluster, x: usize) -> Vec<u8> {
        let dst_mac = (0..cluster.nodes.len())
            .find(|&n| cluster.node_ip(n) == self.dst)
            .map(|n| underlay_mac_for(cluster.node_ip(n)))
            .unwrap_or(Mac::BROADCAST);
        eth(
            dst_mac,
            underlay_mac_for(cluster.external_ip(x)),
            0x0800,
            &self.bytes(),
        )
    }
}

/// An IPv4 frame that left the fabric, read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    /// The IPv4 packet.
    pub packet: Vec<u8>,
    /// The transport payload (after the TCP/UDP header).
    pub payload: Vec<u8>,
    /// Every checksum (IPv4 header, TCP/UDP with UDP 0 allowed, ICMP) is right.
    pub csum_ok: bool,
}

/// Reads an Ethernet frame carrying IPv4; `None` for anything else (ARP, or bytes that
/// are no IPv4 packet at all: a bridge forwards those too). `csum_ok` says whether every
/// checksum is right; the properties demand it of every packet built well-formed.
pub fn read(frame: &[u8]) -> Option<Seen> {
    if frame.len() < 34 || frame[12..14] != [8, 0] {
        return None;
    }
    let p = &frame[14..];
    let total = u16::from_be_bytes([p[2], p[3]]) as usize;
    if p[0] != 0x45 || total > p.len() || total < 20 {
        return None;
    }
    let p = &p[..total];
    let mut csum_ok = csum_fold(csum_add(0, &p[..20])) == 0;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let l4 = &p[20..];
    let (sport, dport, flags, payload) = match p[9] {
        6 | 17 if l4.len() >= if p[9] == 6 { 20 } else { 8 } => {
            csum_ok &= (p[9] == 17 && l4[6..8] == [0, 0])
                || csum_fold(csum_add(pseudo(src, dst, p[9], l4.len()), l4)) == 0;
            let hl = if p[9] == 6 {
                ((l4[12] >> 4) as usize) * 4
            } else {
                8
            };
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
                if p[9] == 6 { l4[13] } else { 0 },
                l4.get(hl..).unwrap_or(&[]).to_vec(),
            )
        }
        1 if l4.len() >= 8 => {
            csum_ok &= csum_fold(csum_add(0, l4)) == 0;
            (0, 0, l4[0], l4.to_vec())
        }
        _ => {
            csum_ok = false;
            (0, 0, 0, l4.to_vec())
        }
    };
    Some(Seen {
        dst_mac: Mac::from_slice(&frame[0..6]),
        src_mac: Mac::from_slice(&frame[6..12]),
        proto: p[9],
        src,
        dst,
        ttl: p[8],
        sport,
        dport,
        flags,
        packet: p.to_vec(),
        payload,
        csum_ok,
    })
}

/// The inner IPv4 packet of an underlay frame between nodes, by backend; `None` when the
/// frame is not an encapsulated one. Checks the outer headers on the way.
pub fn decap(backend: Backend, frame: &[u8]) -> Option<(u32, Vec<u8>)> {
    let outer = read(frame)?;
    assert!(outer.csum_ok, "outer checksums");
    match backend {
        Backend::Vxlan if outer.proto == 17 && outer.dport == 8472 => {
            let vx = &outer.payload;
            assert_eq!(vx[0], 0x08, "VXLAN I flag");
            let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
            assert_eq!(&vx[20..22], &[8, 0], "inner ethertype IPv4");
            Some((vni, vx[8 + 14..].to_vec()))
        }
        Backend::Udp if outer.proto == 17 && outer.dport == 8285 => Some((0, outer.payload)),
        Backend::HostGw if outer.src_mac != Mac::BROADCAST => Some((0, outer.packet)),
        _ => None,
    }
}

/// `packet` with its TTL lowered by `by` and the header checksum recomputed.
pub fn with_ttl_lowered(packet: &[u8], by: u8) -> Vec<u8> {
    let mut p = packet.to_vec();
    p[8] -= by;
    p[10] = 0;
    p[11] = 0;
    let c = csum_fold(csum_add(0, &p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

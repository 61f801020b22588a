//! A node under test: a switch with pod ports and an underlay port, fed literal frames.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use podnet_switch::control::{NodeConfig, Peer, SECOND};
use podnet_switch::{Backend, CounterSnapshot, PacketBuf, PortId, PortKind, Switch};

pub const NODE_A: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
pub const NODE_B: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);

pub struct Rig {
    pub sw: Switch,
    pub pods: Vec<PortId>,
    pub underlay: PortId,
    pub now: u64,
}

/// The guide's node A (10.0.1.0/24 on 172.16.0.1) or B (10.0.2.0/24 on 172.16.0.2),
/// each the other's peer, with `pods` pod ports.
pub fn node(which: char, backend: Backend, pods: usize) -> Rig {
    rig_with(which, backend, pods, 1024)
}

pub fn rig_with(which: char, backend: Backend, pods: usize, buffers: usize) -> Rig {
    let (me, peer, my_net, peer_net, name, peer_name) = match which {
        'a' => (
            NODE_A,
            NODE_B,
            "10.0.1.0/24",
            "10.0.2.0/24",
            "node-a",
            "node-b",
        ),
        _ => (
            NODE_B,
            NODE_A,
            "10.0.2.0/24",
            "10.0.1.0/24",
            "node-b",
            "node-a",
        ),
    };
    let mut c = NodeConfig::new(
        name,
        my_net.parse().unwrap(),
        "10.0.0.0/16".parse().unwrap(),
        me,
        backend,
    );
    c.peers
        .push(Peer::new(peer_name, peer, peer_net.parse().unwrap()));
    let sw = Switch::new(c, podnet_switch::Pool::new(buffers, 2048)).unwrap();
    let pods = (0..pods)
        .map(|i| sw.add_port(&format!("pod{i}"), PortKind::Pod))
        .collect();
    let underlay = sw.add_port("underlay", PortKind::Underlay);
    Rig {
        sw,
        pods,
        underlay,
        now: SECOND,
    }
}

impl Rig {
    /// Sends one frame in on `port`; returns what came out, as (port, bytes).
    pub fn send(&mut self, port: PortId, frame: &[u8]) -> Vec<(PortId, Vec<u8>)> {
        let buf = self.sw.pool().alloc_from(frame).expect("a buffer");
        self.send_batch(port, vec![buf])
    }

    pub fn send_batch(&mut self, port: PortId, bufs: Vec<PacketBuf>) -> Vec<(PortId, Vec<u8>)> {
        let mut rx = bufs;
        let mut tx = Vec::new();
        self.sw.process(port, &mut rx, self.now, &mut tx);
        tx.into_iter()
            .map(|(p, b)| (p, b.data().to_vec()))
            .collect()
    }

    pub fn poll(&mut self) -> Vec<(PortId, Vec<u8>)> {
        let mut tx = Vec::new();
        self.sw.poll(self.now, &mut tx);
        tx.into_iter()
            .map(|(p, b)| (p, b.data().to_vec()))
            .collect()
    }

    pub fn pod(&self, i: usize) -> PortId {
        self.pods[i]
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.sw.counters()
    }

    /// The accounting identity every node keeps.
    pub fn assert_counters_add_up(&self) {
        let c = self.counters();
        assert_eq!(
            c.rx_packets + c.generated,
            c.forwarded + c.consumed + c.dropped_total() + c.queued,
            "{c:#?}"
        );
    }
}

/// Fixes the IPv4 header checksum of the packet starting at `ip` in `frame`.
pub fn fix_ipv4_checksum(frame: &mut [u8], ip: usize) {
    let ihl = (frame[ip] & 0x0f) as usize * 4;
    frame[ip + 10..ip + 12].fill(0);
    let c = podnet_switch::checksum::of(&frame[ip..ip + ihl]);
    frame[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}

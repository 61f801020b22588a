//! A node's configuration: its subnet, addresses, MACs, MTU, backend and peers, as the
//! control plane sets it in the snapshot ([`crate::control`]).

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::services::conntrack::SnatPorts;
use crate::tables::peers::Peers;
use crate::time::SECOND;
use crate::wire::mac::Mac;
use crate::wire::udp::{FLANNEL_UDP_PORT, VXLAN_PORT};

/// How this node reaches other nodes' pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Ethernet in VXLAN in UDP (flannel `vxlan`).
    Vxlan { vni: u32, port: u16 },
    /// The bare IP packet in UDP (flannel `udp`).
    Udp { port: u16 },
    /// Plain routing to the peer's underlay address (flannel `host-gw`).
    HostGw,
}

impl Backend {
    /// flannel's defaults: VNI 1 on UDP 8472 (the Linux port).
    pub const VXLAN: Backend = Backend::Vxlan {
        vni: 1,
        port: VXLAN_PORT,
    };
    /// flannel's default UDP backend port.
    pub const UDP: Backend = Backend::Udp {
        port: FLANNEL_UDP_PORT,
    };

    /// Bytes the encapsulation adds in front of the inner IP packet on the underlay:
    /// what the pod MTU must leave free.
    pub fn overhead(self) -> u16 {
        match self {
            // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
            Backend::Vxlan { .. } => 50,
            // outer IPv4 20 + UDP 8
            Backend::Udp { .. } => 28,
            Backend::HostGw => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan { .. } => "vxlan",
            Backend::Udp { .. } => "udp",
            Backend::HostGw => "host-gw",
        }
    }
}

/// Another node of the cluster, as flannel's subnet lease describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    /// The peer's underlay interface MAC: the outer destination MAC.
    pub underlay_mac: Mac,
    pub subnet: Ipv4Network,
    /// The peer's VTEP MAC (vxlan): the inner destination MAC.
    pub vtep_mac: Mac,
}

impl Peer {
    /// A peer whose MACs are derived from its addresses the way [`NodeConfig::new`]
    /// derives a node's own.
    pub fn new(name: &str, underlay_ip: Ipv4Addr, subnet: Ipv4Network) -> Peer {
        Peer {
            name: name.to_string(),
            underlay_ip,
            underlay_mac: underlay_mac_for(underlay_ip),
            subnet,
            vtep_mac: vtep_mac_for(underlay_ip),
        }
    }
}

/// The default underlay MAC of a node: `02:00:<underlay ip>`.
pub fn underlay_mac_for(ip: Ipv4Addr) -> Mac {
    Mac::from_ip([0x02, 0x00], ip)
}

/// The default VTEP MAC of a node: `0e:00:<underlay ip>`, unique per node.
pub fn vtep_mac_for(ip: Ipv4Addr) -> Mac {
    Mac::from_ip([0x0e, 0x00], ip)
}

/// What the control plane configures on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    /// This node's pod subnet: `.0` is the VTEP, `.1` the gateway.
    pub subnet: Ipv4Network,
    /// The cluster's pod CIDR; a destination inside it but in no subnet is unreachable.
    pub pod_cidr: Ipv4Network,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mac: Mac,
    pub underlay_mtu: u16,
    pub vtep_mac: Mac,
    pub backend: Backend,
    /// The other nodes. Shared, not copied, between nodes given the same list; it may
    /// hold this node itself (the entry with this node's underlay address), which is then
    /// ignored, so one cluster-wide list serves every node ([`Peers`]).
    pub peers: Peers,
    /// Learned MACs expire after this long without traffic from them (ns).
    pub mac_aging_ns: u64,
    /// Resolved neighbours are trusted this long after their last ARP (ns).
    pub neighbour_timeout_ns: u64,
    /// A packet waits at most this long for ARP resolution (ns).
    pub arp_wait_ns: u64,
    /// The source ports SNAT may use: not the cluster's node-port range.
    pub snat_ports: SnatPorts,
}

impl NodeConfig {
    /// A node with default MACs, a 1500-byte underlay and flannel's default timers.
    pub fn new(
        name: &str,
        subnet: Ipv4Network,
        pod_cidr: Ipv4Network,
        underlay_ip: Ipv4Addr,
        backend: Backend,
    ) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            subnet,
            pod_cidr,
            underlay_ip,
            underlay_mac: underlay_mac_for(underlay_ip),
            underlay_mtu: 1500,
            vtep_mac: vtep_mac_for(underlay_ip),
            backend,
            peers: Peers::default(),
            mac_aging_ns: 300 * SECOND,
            neighbour_timeout_ns: 60 * SECOND,
            arp_wait_ns: SECOND,
            snat_ports: SnatPorts::default(),
        }
    }

    /// The guide's node A (10.0.1.0/24 on 172.16.0.1) with node B as its peer.
    pub fn example() -> NodeConfig {
        let mut c = NodeConfig::new(
            "node-a",
            "10.0.1.0/24".parse().unwrap(),
            "10.0.0.0/16".parse().unwrap(),
            Ipv4Addr::new(172, 16, 0, 1),
            Backend::VXLAN,
        );
        c.peers.push(Peer::new(
            "node-b",
            Ipv4Addr::new(172, 16, 0, 2),
            "10.0.2.0/24".parse().unwrap(),
        ));
        c
    }

    /// The subnet's `.0`: the VTEP address.
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.subnet.network()
    }

    /// The subnet's `.1`: the pods' default gateway.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// The gateway's MAC, `0a:58:<gateway ip>` as the CNI bridge plugin makes it.
    pub fn gateway_mac(&self) -> Mac {
        Mac::from_ip([0x0a, 0x58], self.gateway_ip())
    }

    /// The MTU pods get: the underlay's minus the encapsulation overhead.
    pub fn pod_mtu(&self) -> u16 {
        self.underlay_mtu - self.backend.overhead()
    }

    /// Checks what the datapath relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.subnet.prefix() < 16 || self.subnet.prefix() > 30 {
            return Err(format!(
                "node subnet {} must be between /16 and /30",
                self.subnet
            ));
        }
        if self.underlay_mtu < 576 + self.backend.overhead() || self.underlay_mtu > 9000 {
            return Err(format!(
                "underlay MTU {} must leave pods at least 576 bytes and be at most 9000",
                self.underlay_mtu
            ));
        }
        for p in &self.peers {
            if p.underlay_ip == self.underlay_ip {
                if p.subnet != self.subnet {
                    return Err(format!(
                        "peer {} has this node's underlay address {} but subnet {}, not {}",
                        p.name, p.underlay_ip, p.subnet, self.subnet
                    ));
                }
                continue;
            }
            if p.subnet.prefix() < 16 || p.subnet.prefix() > 30 {
                return Err(format!(
                    "peer {} subnet {} must be between /16 and /30",
                    p.name, p.subnet
                ));
            }
            if p.subnet.overlaps(self.subnet) {
                return Err(format!(
                    "peer {} subnet {} overlaps this node's {}",
                    p.name, p.subnet, self.subnet
                ));
            }
        }
        Ok(())
    }
}

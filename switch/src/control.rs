//! The control snapshot: what the control plane tells a node, published atomically.
//!
//! # The concurrency rule
//!
//! Everything the control plane sets — this node's subnet, its peers, the backend, the
//! ports, the services and their endpoints, the conntrack timeouts — is one immutable
//! [`Snapshot`]. A writer builds a new snapshot and swaps it in;
//! a reader (the datapath, once per batch) loads the current one and keeps using it until
//! the batch ends, even if a newer one is published meanwhile. Readers never block and
//! never see half an update; an old snapshot is freed when its last reader lets go (RCU,
//! through `arc-swap`). Writers are serialised by [`Control::update`] being a
//! read-copy-update loop, so two concurrent updates both land.
//!
//! ```
//! # use podnet_switch::control::*;
//! # let control = Control::new(NodeConfig::example());
//! // Datapath: one load per batch.
//! let snap = control.load();
//! let _gateway = snap.config.gateway_ip();
//! // Control plane: copy, change, publish.
//! control.update(|c| c.underlay_mtu = 9000);
//! assert_eq!(control.load().config.underlay_mtu, 9000);
//! ```

use std::net::Ipv4Addr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnetwork::Ipv4Network;

use crate::conntrack::{SnatPorts, Timeouts};
use crate::counters::Counters;
use crate::mac::Mac;
use crate::routes::{NextHop, RouteTable};
use crate::services::{Endpoint, Service, ServiceTable};
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
    pub peers: Vec<Peer>,
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
            peers: Vec::new(),
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

/// One nanosecond-based second.
pub const SECOND: u64 = 1_000_000_000;

/// Identifies a port of a switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// What a port is attached to, which decides how the pipeline treats its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A pod's interface: a port of the node's bridge.
    Pod,
    /// The node's own host stack: a routed port that reaches pods and services through
    /// the gateway. The switch answers ARP for every address on it (proxy ARP), so the
    /// host can route the pod CIDR and the service CIDR on-link.
    Host,
    /// The underlay: encapsulated traffic to and from other nodes.
    Underlay,
}

/// A port as the snapshot knows it.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    pub kind: PortKind,
    pub counters: Arc<Counters>,
}

/// Everything the datapath reads from the control plane, immutable once published.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub config: NodeConfig,
    /// Indexed by `PortId.0`; `None` for a removed port.
    pub ports: Vec<Option<Port>>,
    /// Derived from `config`; rebuilt on every publish.
    pub routes: RouteTable,
    /// Pod ports, for flooding; derived from `ports`.
    pub pod_ports: Vec<PortId>,
    /// The underlay port, if one is attached.
    pub underlay: Option<PortId>,
    /// The host port, if one is attached.
    pub host: Option<PortId>,
    /// The services and their lookup maps ([`Control::set_services`]).
    pub services: Arc<ServiceTable>,
    /// How long tracked flows live ([`Control::set_conntrack_timeouts`]).
    pub conntrack_timeouts: Timeouts,
}

impl Snapshot {
    fn build(
        config: NodeConfig,
        ports: Vec<Option<Port>>,
        services: Arc<ServiceTable>,
        conntrack_timeouts: Timeouts,
    ) -> Snapshot {
        let mut routes = RouteTable::default();
        routes.insert(config.pod_cidr, NextHop::UnknownSubnet);
        for (i, p) in config.peers.iter().enumerate() {
            routes.insert(p.subnet, NextHop::Peer(i));
        }
        routes.insert(config.subnet, NextHop::Local);
        let of_kind = |kind: PortKind| {
            ports
                .iter()
                .enumerate()
                .filter(move |(_, p)| p.as_ref().is_some_and(|p| p.kind == kind))
                .map(|(i, _)| PortId(i as u16))
        };
        let pod_ports = of_kind(PortKind::Pod).collect();
        let underlay = of_kind(PortKind::Underlay).next();
        let host = of_kind(PortKind::Host).next();
        Snapshot {
            config,
            ports,
            routes,
            pod_ports,
            underlay,
            host,
            services,
            conntrack_timeouts,
        }
    }

    /// A copy with other services.
    fn with_services(&self, services: ServiceTable) -> Snapshot {
        Snapshot {
            services: Arc::new(services),
            ..self.clone()
        }
    }

    /// The live port with this id.
    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The peer whose underlay address is `ip`.
    pub fn peer_by_underlay(&self, ip: Ipv4Addr) -> Option<&Peer> {
        self.config.peers.iter().find(|p| p.underlay_ip == ip)
    }
}

/// Holds the current snapshot; see the module documentation for the rule.
pub struct Control {
    current: ArcSwap<Snapshot>,
}

impl Control {
    pub fn new(config: NodeConfig) -> Control {
        Control {
            current: ArcSwap::from_pointee(Snapshot::build(
                config,
                Vec::new(),
                Arc::default(),
                Timeouts::default(),
            )),
        }
    }

    /// The current snapshot. Cheap; never blocks.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a changed copy of the node configuration.
    pub fn update(&self, f: impl Fn(&mut NodeConfig)) {
        self.current.rcu(|cur| {
            let mut config = cur.config.clone();
            f(&mut config);
            // Which endpoints are local depends on the subnet: derive the table again.
            let services = ServiceTable::new(
                cur.services.list().to_vec(),
                &config,
                cur.services.generation() + 1,
            );
            Snapshot::build(
                config,
                cur.ports.clone(),
                Arc::new(services),
                cur.conntrack_timeouts,
            )
        });
    }

    /// Replaces every service, atomically: a batch sees the old set or the new one.
    /// Flows already tracked keep their endpoint, except UDP flows whose endpoint left
    /// (flushed). Fails, changing nothing, when names, VIP ports or node ports repeat.
    ///
    /// ```
    /// # use podnet_switch::control::*;
    /// # use podnet_switch::services::*;
    /// # use std::net::Ipv4Addr;
    /// let control = Control::new(NodeConfig::example());
    /// let web = Service::new("web", Ipv4Addr::new(10, 3, 0, 50))
    ///     .with_port(ServicePort::new(Protocol::Tcp, 80, 8080).with_node_port(30080))
    ///     .with_endpoint(Ipv4Addr::new(10, 0, 1, 10), "node-a");
    /// control.set_services(vec![web]).unwrap();
    /// control
    ///     .set_endpoints("web", vec![Endpoint::new(Ipv4Addr::new(10, 0, 2, 10), "node-b")])
    ///     .unwrap();
    /// assert_eq!(control.load().services.list()[0].endpoints[0].node, "node-b");
    /// ```
    pub fn set_services(&self, services: Vec<Service>) -> Result<(), String> {
        self.update_services(|list| {
            *list = services.clone();
            Ok(())
        })
    }

    /// Replaces the endpoints of one service, atomically.
    pub fn set_endpoints(&self, service: &str, endpoints: Vec<Endpoint>) -> Result<(), String> {
        self.update_services(|list| {
            let s = list
                .iter_mut()
                .find(|s| s.name == service)
                .ok_or_else(|| format!("no service named {service}"))?;
            s.endpoints = endpoints.clone();
            Ok(())
        })
    }

    /// Publishes a changed copy of the service list (a read-copy-update, like
    /// [`Control::update`]; `f` may run more than once when writers race). Nothing is
    /// published when `f` fails or the new list is invalid.
    pub fn update_services(
        &self,
        mut f: impl FnMut(&mut Vec<Service>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut result = Ok(());
        self.current.rcu(|cur| {
            let mut list = cur.services.list().to_vec();
            result = f(&mut list).and_then(|()| ServiceTable::validate(&list));
            if result.is_err() {
                return Arc::clone(cur);
            }
            let table = ServiceTable::new(list, &cur.config, cur.services.generation() + 1);
            Arc::new(cur.with_services(table))
        });
        result
    }

    /// Sets how long tracked flows live without packets, per state.
    pub fn set_conntrack_timeouts(&self, timeouts: Timeouts) {
        self.current.rcu(|cur| Snapshot {
            conntrack_timeouts: timeouts,
            ..(**cur).clone()
        });
    }

    /// Attaches a port and returns its id.
    pub fn add_port(&self, name: &str, kind: PortKind) -> PortId {
        let mut id = PortId(0);
        self.current.rcu(|cur| {
            let mut ports = cur.ports.clone();
            let free = ports.iter().position(Option::is_none);
            let port = Port {
                name: name.to_string(),
                kind,
                counters: Arc::new(Counters::default()),
            };
            id = match free {
                Some(i) => {
                    ports[i] = Some(port);
                    PortId(i as u16)
                }
                None => {
                    ports.push(Some(port));
                    PortId(ports.len() as u16 - 1)
                }
            };
            Snapshot::build(
                cur.config.clone(),
                ports,
                Arc::clone(&cur.services),
                cur.conntrack_timeouts,
            )
        });
        id
    }

    /// Detaches a port. Its id may be reused by a later [`Control::add_port`].
    pub fn remove_port(&self, id: PortId) {
        self.current.rcu(|cur| {
            let mut ports = cur.ports.clone();
            if let Some(slot) = ports.get_mut(id.0 as usize) {
                *slot = None;
            }
            Snapshot::build(
                cur.config.clone(),
                ports,
                Arc::clone(&cur.services),
                cur.conntrack_timeouts,
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_addresses() {
        let c = NodeConfig::example();
        assert_eq!(c.vtep_ip(), Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(c.gateway_ip(), Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(c.gateway_mac().to_string(), "0a:58:0a:00:01:01");
        assert_eq!(c.vtep_mac.to_string(), "0e:00:ac:10:00:01");
        assert_eq!(c.pod_mtu(), 1450);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn ports_come_and_go() {
        let control = Control::new(NodeConfig::example());
        let a = control.add_port("a", PortKind::Pod);
        let u = control.add_port("underlay", PortKind::Underlay);
        let b = control.add_port("b", PortKind::Pod);
        let s = control.load();
        assert_eq!(s.pod_ports, vec![a, b]);
        assert_eq!(s.underlay, Some(u));
        control.remove_port(a);
        assert_eq!(control.load().pod_ports, vec![b]);
        // The old snapshot is unchanged for whoever still holds it.
        assert_eq!(s.pod_ports, vec![a, b]);
        assert_eq!(control.add_port("c", PortKind::Pod), a);
    }

    #[test]
    fn validate_rejects_overlap_and_tiny_mtu() {
        let mut c = NodeConfig::example();
        c.peers[0].subnet = "10.0.1.0/25".parse().unwrap();
        assert!(c.validate().unwrap_err().contains("overlaps"));
        let mut c = NodeConfig::example();
        c.underlay_mtu = 600;
        assert!(c.validate().unwrap_err().contains("MTU"));
    }
}

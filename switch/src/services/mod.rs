//! Services: kube-proxy's load balancing in the switch core.
//!
//! The control plane sets the services (VIP, ports, endpoints, session affinity,
//! external traffic policy) in the control snapshot ([`crate::control::Control::set_services`],
//! [`crate::control::Control::set_endpoints`]); [`ServiceTable`] is the snapshot's
//! derived form, with lookup maps by VIP and by node port. The stage that balances over
//! them is [`crate::services::balancer`].
//!
//! Semantics are kube-proxy's: the endpoint is chosen uniformly at random (an RNG the
//! caller seeds, [`crate::Switch::set_seed`]) or by ClientIP affinity; the client IP is
//! preserved for pod clients; clients from outside the pod network, hairpin flows and
//! NodePort flows with `externalTrafficPolicy: Cluster` are masqueraded (see
//! [`masquerade_address`]); `Local` node ports use only this node's endpoints, keep the
//! client IP and drop when there are none. Encapsulated packets never reach the stage:
//! the router sees inner packets only, and outer headers are written after translation.

pub(crate) mod balancer;
pub mod conntrack;
pub(crate) mod nat;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use ipnetwork::Ipv4Network;

use crate::config::{Backend, NodeConfig};
use crate::tables::routes::MixHasher;
use crate::time::SECOND;
use crate::wire::{PROTO_TCP, PROTO_UDP};

// ---- the model ------------------------------------------------------------------------------

/// A service port's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }
}

/// `sessionAffinity` of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionAffinity {
    /// Every new flow picks an endpoint at random.
    #[default]
    None,
    /// All flows of one client IP go to one endpoint until the affinity timeout passes
    /// without traffic from that client.
    ClientIP,
}

/// `externalTrafficPolicy` of a service: how node ports choose endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any endpoint; the client is masqueraded to the node.
    #[default]
    Cluster,
    /// Only this node's endpoints; the client IP is kept; dropped when there are none.
    Local,
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    #[serde(default)]
    pub name: String,
    /// The port on the VIP.
    pub port: u16,
    /// The port on the endpoints.
    pub target_port: u16,
    pub protocol: Protocol,
    /// The port on every node's addresses, if any.
    #[serde(default)]
    pub node_port: Option<u16>,
}

impl ServicePort {
    pub fn new(protocol: Protocol, port: u16, target_port: u16) -> ServicePort {
        ServicePort {
            name: String::new(),
            port,
            target_port,
            protocol,
            node_port: None,
        }
    }

    /// The same port with a node port.
    pub fn with_node_port(mut self, node_port: u16) -> ServicePort {
        self.node_port = Some(node_port);
        self
    }
}

/// A ready endpoint of a service: a pod IP and the node the pod runs on. Whether it is
/// local is decided by the IP (this node's pod subnet), which is where the switch
/// delivers it; the node name is for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub node: String,
}

impl Endpoint {
    pub fn new(ip: Ipv4Addr, node: &str) -> Endpoint {
        Endpoint {
            ip,
            node: node.to_string(),
        }
    }
}

/// kube-proxy's default ClientIP affinity timeout: three hours.
pub const DEFAULT_AFFINITY_TIMEOUT: u64 = 10_800 * SECOND;

fn default_affinity_timeout() -> u64 {
    DEFAULT_AFFINITY_TIMEOUT
}

/// A service as the control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// ClientIP affinity lasts this long without traffic (ns).
    #[serde(default = "default_affinity_timeout")]
    pub affinity_timeout_ns: u64,
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
}

impl Service {
    /// A service with no ports and no endpoints, kube-proxy's defaults otherwise.
    pub fn new(name: &str, cluster_ip: Ipv4Addr) -> Service {
        Service {
            name: name.to_string(),
            cluster_ip,
            ports: Vec::new(),
            endpoints: Vec::new(),
            session_affinity: SessionAffinity::None,
            affinity_timeout_ns: DEFAULT_AFFINITY_TIMEOUT,
            external_traffic_policy: TrafficPolicy::Cluster,
        }
    }

    pub fn with_port(mut self, port: ServicePort) -> Service {
        self.ports.push(port);
        self
    }

    pub fn with_endpoint(mut self, ip: Ipv4Addr, node: &str) -> Service {
        self.endpoints.push(Endpoint::new(ip, node));
        self
    }
}

// ---- the derived table ----------------------------------------------------------------------

/// One (service, port) as the datapath looks it up.
#[derive(Debug, Clone)]
pub(crate) struct PortEntry {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
    pub target_port: u16,
    /// Every endpoint, in the order given, without duplicates.
    pub endpoints: Vec<Ipv4Addr>,
    pub affinity_ns: Option<u64>,
    pub local_policy: bool,
}

impl PortEntry {
    /// The endpoints a flow may use: external flows of a `Local` service only those in
    /// `subnet`, this node's (picked out here, per new flow, so that the table itself does
    /// not depend on the node and one table serves a whole cluster).
    pub(crate) fn candidates(&self, external: bool, subnet: Ipv4Network) -> Cow<'_, [Ipv4Addr]> {
        if external && self.local_policy {
            Cow::Owned(
                self.endpoints
                    .iter()
                    .copied()
                    .filter(|ip| subnet.contains(*ip))
                    .collect(),
            )
        } else {
            Cow::Borrowed(&self.endpoints)
        }
    }
}

/// The services of a snapshot and their lookup maps, built once per publish. Nothing in
/// it depends on the node, so one table may be shared by every node of a cluster
/// ([`crate::control::Control::set_service_table`]).
#[derive(Debug, Default)]
pub struct ServiceTable {
    list: Vec<Service>,
    /// Bumped on every change: the datapath flushes stale UDP flows when it moves.
    generation: u64,
    ports: Vec<PortEntry>,
    /// Keyed by [`vip_key`] and [`node_port_key`], hashed with one multiply: every new
    /// flow and every packet of a tracked UDP flow asks (SipHash cost a hundred
    /// instructions a packet here, for a table the control plane fills).
    by_vip: HashMap<u64, usize, FastHash>,
    by_node_port: HashMap<u32, usize, FastHash>,
    vips: HashSet<u32, FastHash>,
}

type FastHash = BuildHasherDefault<MixHasher>;

fn vip_key(vip: Ipv4Addr, port: u16, proto: u8) -> u64 {
    (u32::from(vip) as u64) << 24 | (port as u64) << 8 | proto as u64
}

fn node_port_key(port: u16, proto: u8) -> u32 {
    (port as u32) << 8 | proto as u32
}

impl ServiceTable {
    /// Checks what the lookup maps rely on: unique names, VIP ports and node ports.
    pub fn validate(list: &[Service]) -> Result<(), String> {
        let mut names = HashSet::new();
        let mut vip_ports = HashSet::new();
        let mut node_ports = HashSet::new();
        for s in list {
            if !names.insert(s.name.as_str()) {
                return Err(format!("service {} is defined twice", s.name));
            }
            for p in &s.ports {
                if p.port == 0 || p.target_port == 0 || p.node_port == Some(0) {
                    return Err(format!("service {}: port 0", s.name));
                }
                if !vip_ports.insert((s.cluster_ip, p.port, p.protocol)) {
                    return Err(format!(
                        "service {}: {}:{}/{:?} is used twice",
                        s.name, s.cluster_ip, p.port, p.protocol
                    ));
                }
                if let Some(np) = p.node_port {
                    if !node_ports.insert((np, p.protocol)) {
                        return Err(format!(
                            "service {}: node port {np}/{:?} is used twice",
                            s.name, p.protocol
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The table for `list` (which must be valid), numbered `generation`.
    pub fn new(list: Vec<Service>, generation: u64) -> ServiceTable {
        let mut t = ServiceTable {
            generation,
            ..ServiceTable::default()
        };
        for s in &list {
            t.vips.insert(u32::from(s.cluster_ip));
            let mut endpoints: Vec<Ipv4Addr> = Vec::new();
            for e in &s.endpoints {
                if !endpoints.contains(&e.ip) {
                    endpoints.push(e.ip);
                }
            }
            for p in &s.ports {
                let i = t.ports.len();
                t.ports.push(PortEntry {
                    vip: s.cluster_ip,
                    port: p.port,
                    proto: p.protocol.number(),
                    target_port: p.target_port,
                    endpoints: endpoints.clone(),
                    affinity_ns: (s.session_affinity == SessionAffinity::ClientIP)
                        .then_some(s.affinity_timeout_ns),
                    local_policy: s.external_traffic_policy == TrafficPolicy::Local,
                });
                t.by_vip
                    .insert(vip_key(s.cluster_ip, p.port, p.protocol.number()), i);
                if let Some(np) = p.node_port {
                    t.by_node_port
                        .insert(node_port_key(np, p.protocol.number()), i);
                }
            }
        }
        t.list = list;
        t
    }

    /// The services as set.
    pub fn list(&self) -> &[Service] {
        &self.list
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// True when `ip` is a service's cluster IP.
    pub fn is_vip(&self, ip: Ipv4Addr) -> bool {
        self.vips.contains(&u32::from(ip))
    }

    /// True when `port` is a node port for IP protocol `proto`.
    pub fn is_node_port(&self, proto: u8, port: u16) -> bool {
        self.by_node_port.contains_key(&node_port_key(port, proto))
    }

    pub(crate) fn by_vip(&self, vip: Ipv4Addr, port: u16, proto: u8) -> Option<&PortEntry> {
        self.by_vip
            .get(&vip_key(vip, port, proto))
            .map(|&i| &self.ports[i])
    }

    pub(crate) fn by_node_port(&self, port: u16, proto: u8) -> Option<&PortEntry> {
        self.by_node_port
            .get(&node_port_key(port, proto))
            .map(|&i| &self.ports[i])
    }
}

/// The node address a masqueraded flow gets as its source: the address of this node's
/// interface toward the endpoint, as `MASQUERADE` picks it on a flannel node.
///
/// - Endpoint on this node: the gateway, `<subnet>.1` (the cni0 bridge's address).
/// - Endpoint on another node, vxlan or udp backend: the VTEP address `<subnet>.0`
///   (flannel.1's or flannel0's address). It lies in this node's pod subnet, so the
///   endpoint's node routes the reply back over the overlay like any pod traffic.
/// - Endpoint on another node, host-gw: the gateway `<subnet>.1` too. The kernel would
///   pick the underlay address, but the peer's switch routes only the pod CIDR, so the
///   reply would have no route there; the gateway address is routed back by host-gw.
///
/// Either way the reply arrives at one of this node's own addresses, where the router
/// gives conntrack the first look.
pub(crate) fn masquerade_address(config: &NodeConfig, endpoint: Ipv4Addr) -> Ipv4Addr {
    if config.subnet.contains(endpoint) {
        return config.gateway_ip();
    }
    match config.backend {
        Backend::HostGw => config.gateway_ip(),
        Backend::Vxlan { .. } | Backend::Udp { .. } => config.vtep_ip(),
    }
}

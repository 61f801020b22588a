//! The guide's port tables: which inbound ports each node role needs, from whom, and what
//! for, for a backend and the optional parts (BGP, flannel on etcd).
//!
//! `podnet ports` prints this table; `podnet check` expands it into one flow per pair of
//! hosts and holds each against the scenario's firewall. One table serves both, so what
//! `ports` lists is exactly what `check` audits.

use crate::scenario::{Backend, PortRange, Protocol, Role, Scenario};

/// What the required ports depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// flannel's backend: which UDP port the overlay needs, if any.
    pub backend: Backend,
    /// The VXLAN backend's UDP port.
    pub vxlan_port: u16,
    /// The UDP backend's UDP port.
    pub udp_port: u16,
    /// The NodePort range.
    pub node_ports: PortRange,
    /// Whether Calico's BGP runs between nodes (TCP 179).
    pub bgp: bool,
    /// Whether flannel keeps its state in etcd, so workers reach etcd too.
    pub etcd: bool,
}

impl Plan {
    /// The guide's defaults for a backend (8472, 8285, 30000-32767).
    pub fn new(backend: Backend, bgp: bool, etcd: bool) -> Plan {
        Plan {
            backend,
            vxlan_port: 8472,
            udp_port: 8285,
            node_ports: PortRange {
                first: 30000,
                last: 32767,
            },
            bgp,
            etcd,
        }
    }

    /// A scenario's plan. Scenarios have no BGP; flannel uses etcd when the scenario has
    /// etcd nodes (what else would they be for).
    pub fn of(scenario: &Scenario) -> Plan {
        let cluster = &scenario.cluster;
        Plan {
            backend: cluster.backend,
            vxlan_port: cluster.vxlan.port,
            udp_port: cluster.udp.port,
            node_ports: cluster.node_port_range,
            bgp: false,
            etcd: scenario.nodes.iter().any(|node| node.role == Role::Etcd),
        }
    }
}

/// Who sends a required flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Every node with this role.
    Role(Role),
    /// Every node of the cluster.
    Nodes,
    /// Hosts outside the cluster: API clients, users of NodePorts.
    Externals,
}

impl Source {
    /// As the table prints it: `masters`, `workers`, `etcd nodes`, `all nodes`, `externals`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Role(Role::Master) => "masters",
            Source::Role(Role::Worker) => "workers",
            Source::Role(Role::Etcd) => "etcd nodes",
            Source::Nodes => "all nodes",
            Source::Externals => "externals",
        }
    }
}

/// One row of the table: nodes of `role` must accept `protocol`/`ports` from `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The receiving nodes' role.
    pub role: Role,
    /// The senders.
    pub from: Vec<Source>,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The destination ports.
    pub ports: PortRange,
    /// What the port is for, in the guide's words.
    pub purpose: &'static str,
}

const fn one(port: u16) -> PortRange {
    PortRange {
        first: port,
        last: port,
    }
}

/// The required inbound ports, by role (master, worker, etcd), in the guide's order.
pub fn required(plan: &Plan) -> Vec<Requirement> {
    let row = |role, from: &[Source], protocol, ports, purpose| Requirement {
        role,
        from: from.to_vec(),
        protocol,
        ports,
        purpose,
    };
    let overlay = match plan.backend {
        Backend::Vxlan => Some((plan.vxlan_port, "flannel overlay network, vxlan backend")),
        Backend::Udp => Some((plan.udp_port, "flannel overlay network, udp backend")),
        Backend::HostGw => None,
    };
    let mut rows = Vec::new();
    for role in [Role::Master, Role::Worker, Role::Etcd] {
        match role {
            Role::Master => rows.push(row(
                role,
                &[Source::Role(Role::Worker), Source::Externals],
                Protocol::Tcp,
                one(443),
                "Kubernetes API server",
            )),
            Role::Worker => {
                rows.push(row(
                    role,
                    &[Source::Role(Role::Master)],
                    Protocol::Tcp,
                    one(10250),
                    "kubelet API for exec and logs",
                ));
                rows.push(row(
                    role,
                    &[Source::Nodes],
                    Protocol::Tcp,
                    one(10255),
                    "read-only kubelet API, for monitoring such as heapster",
                ));
                rows.push(row(
                    role,
                    &[Source::Externals],
                    Protocol::Tcp,
                    plan.node_ports,
                    "NodePorts, for external load balancers and consumers of services",
                ));
            }
            Role::Etcd => {
                let mut from = vec![Source::Role(Role::Master)];
                if plan.etcd {
                    from.push(Source::Role(Role::Worker));
                }
                rows.push(row(
                    role,
                    &from,
                    Protocol::Tcp,
                    PortRange {
                        first: 2379,
                        last: 2380,
                    },
                    if plan.etcd {
                        "etcd server client API (workers: flannel keeps its state in etcd)"
                    } else {
                        "etcd server client API"
                    },
                ));
            }
        }
        if let Some((port, purpose)) = overlay {
            rows.push(row(
                role,
                &[Source::Nodes],
                Protocol::Udp,
                one(port),
                purpose,
            ));
        }
        if plan.bgp {
            rows.push(row(
                role,
                &[Source::Nodes],
                Protocol::Tcp,
                one(179),
                "Calico BGP network",
            ));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(rows: &[Requirement], role: Role) -> Vec<(Protocol, u16, u16)> {
        rows.iter()
            .filter(|row| row.role == role)
            .map(|row| (row.protocol, row.ports.first, row.ports.last))
            .collect()
    }

    #[test]
    fn backends_choose_the_overlay_port() {
        let vxlan = required(&Plan::new(Backend::Vxlan, false, false));
        assert_eq!(
            ports(&vxlan, Role::Master),
            [(Protocol::Tcp, 443, 443), (Protocol::Udp, 8472, 8472)]
        );
        let udp = required(&Plan::new(Backend::Udp, false, false));
        assert!(ports(&udp, Role::Worker).contains(&(Protocol::Udp, 8285, 8285)));
        let host_gw = required(&Plan::new(Backend::HostGw, false, false));
        assert!(host_gw.iter().all(|row| row.protocol == Protocol::Tcp));
    }

    #[test]
    fn bgp_and_etcd_add_their_rows() {
        let plain = required(&Plan::new(Backend::Vxlan, false, false));
        assert!(!plain.iter().any(|row| row.ports.first == 179));
        let etcd_row = plain.iter().find(|row| row.role == Role::Etcd).unwrap();
        assert_eq!(etcd_row.from, [Source::Role(Role::Master)]);
        let full = required(&Plan::new(Backend::Vxlan, true, true));
        assert_eq!(
            full.iter().filter(|row| row.ports.first == 179).count(),
            3,
            "BGP between all nodes"
        );
        let etcd_row = full.iter().find(|row| row.role == Role::Etcd).unwrap();
        assert!(etcd_row.from.contains(&Source::Role(Role::Worker)));
    }
}

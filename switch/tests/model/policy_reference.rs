//! NetworkPolicy semantics stated plainly, straight from the API's definitions, over the
//! uncompiled objects: no per-node split, no precomputed sets, no named-port resolution
//! ahead of time. The compiled [`podnet_switch::policy::PolicyTable`] must agree with it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use podnet_switch::policy::{
    ClusterView, Direction, LabelSelector, NetworkPolicy, Peer, PodView, PortSpec, Rule,
    NAMESPACE_NAME_LABEL,
};

fn pod_at(c: &ClusterView, ip: Ipv4Addr) -> Option<&PodView> {
    c.pods.iter().find(|p| p.ip == ip)
}

fn namespace_labels(c: &ClusterView, ns: &str) -> BTreeMap<String, String> {
    let mut l = c
        .namespaces
        .iter()
        .find(|n| n.name == ns)
        .map(|n| n.labels.clone())
        .unwrap_or_default();
    l.insert(NAMESPACE_NAME_LABEL.to_string(), ns.to_string());
    l
}

fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.matches(labels)
}

/// Does `peer` (of a policy in `policy_ns`) include the address `ip`?
fn peer_has(c: &ClusterView, policy_ns: &str, peer: &Peer, ip: Ipv4Addr) -> bool {
    match peer {
        Peer::IpBlock { cidr, except } => {
            cidr.contains(ip) && except.iter().all(|e| !e.contains(ip))
        }
        Peer::Pods { pods, namespaces } => {
            let Some(pod) = pod_at(c, ip) else {
                return false;
            };
            let ns_ok = match namespaces {
                None => pod.namespace == policy_ns,
                Some(s) => selects(s, &namespace_labels(c, &pod.namespace)),
            };
            ns_ok && pods.as_ref().is_none_or(|s| selects(s, &pod.labels))
        }
    }
}

fn rule_allows(
    c: &ClusterView,
    policy_ns: &str,
    rule: &Rule,
    peer: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    let peer_ok =
        rule.peers.is_empty() || rule.peers.iter().any(|p| peer_has(c, policy_ns, p, peer));
    let port_ok = rule.ports.is_empty()
        || rule.ports.iter().any(|p| {
            p.protocol == proto
                && match &p.port {
                    None => true,
                    Some(PortSpec::Number(n)) => {
                        port >= *n && port <= p.end_port.unwrap_or(*n).max(*n)
                    }
                    Some(PortSpec::Name(name)) => pod_at(c, dst).is_some_and(|d| {
                        d.ports
                            .iter()
                            .any(|np| np.name == *name && np.protocol == proto && np.port == port)
                    }),
                }
        });
    peer_ok && port_ok
}

/// Whether one side lets the flow through: `pod` is the side's pod, `peer` the other end.
#[allow(clippy::too_many_arguments)]
fn side_allows(
    c: &ClusterView,
    policies: &[NetworkPolicy],
    d: Direction,
    pod: &PodView,
    peer: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    let selecting: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.namespace == pod.namespace && selects(&p.pod_selector, &pod.labels))
        .filter(|p| p.has_type(d))
        .collect();
    if selecting.is_empty() {
        return true; // not isolated
    }
    selecting.iter().any(|p| {
        let rules = match d {
            Direction::Ingress => &p.ingress,
            Direction::Egress => &p.egress,
        };
        rules
            .iter()
            .any(|r| rule_allows(c, &p.namespace, r, peer, dst, proto, port))
    })
}

/// A new connection from `src` to `dst:port` is allowed when the source's egress and the
/// destination's ingress both allow it.
pub fn allowed(
    c: &ClusterView,
    policies: &[NetworkPolicy],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    let egress = pod_at(c, src)
        .is_none_or(|p| side_allows(c, policies, Direction::Egress, p, dst, dst, proto, port));
    let ingress = pod_at(c, dst)
        .is_none_or(|p| side_allows(c, policies, Direction::Ingress, p, src, dst, proto, port));
    egress && ingress
}

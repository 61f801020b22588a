//! proptest strategies: clusters of 1-8 nodes on every backend, 0-20 pods per node,
//! 0-10 services (ClusterIP or NodePort, Cluster or Local, affinity on or off) with 0-5
//! endpoints, 1-2 externals. They shrink toward fewer nodes, pods and services.
use std::net::Ipv4Addr;

use proptest::prelude::*;
use proptest::sample::Index;

use crate::reference::{Backend, Cluster, Node, PodRef, Proto, Service, SvcPort};

/// The ports every pod answers in the simulator: TCP 8080 and UDP 5353.
pub const TCP_TARGET: u16 = 8080;
pub const UDP_TARGET: u16 = 5353;

pub fn backend() -> impl Strategy<Value = Backend> {
    prop_oneof![
        Just(Backend::Vxlan),
        Just(Backend::Udp),
        Just(Backend::HostGw)
    ]
}

#[derive(Clone, Debug)]
struct SvcSpec {
    tcp: bool,
    udp: bool,
    node_port: bool,
    affinity: bool,
    local: bool,
    endpoints: Vec<(Index, Index)>,
}

fn svc_spec(max_endpoints: usize) -> impl Strategy<Value = SvcSpec> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((any::<Index>(), any::<Index>()), 0..=max_endpoints),
    )
        .prop_map(
            |(tcp, udp, node_port, affinity, local, endpoints)| SvcSpec {
                // At least one port: TCP unless only UDP was asked for.
                tcp: tcp || !udp,
                udp,
                node_port,
                affinity,
                local,
                endpoints,
            },
        )
}

fn build(backend: Backend, pods: Vec<usize>, specs: Vec<SvcSpec>, externals: usize) -> Cluster {
    let nodes: Vec<Node> = pods.iter().map(|&p| Node { pods: p }).collect();
    let mut c = Cluster {
        backend,
        nodes,
        services: Vec::new(),
        externals,
    };
    let all = c.pods();
    for (i, s) in specs.into_iter().enumerate() {
        let mut ports = Vec::new();
        let np = |k: u16| s.node_port.then_some(30000 + 10 * i as u16 + k);
        if s.tcp {
            ports.push(SvcPort {
                proto: Proto::Tcp,
                port: 80,
                target: TCP_TARGET,
                node_port: np(0),
            });
        }
        if s.udp {
            ports.push(SvcPort {
                proto: Proto::Udp,
                port: 53,
                target: UDP_TARGET,
                node_port: np(1),
            });
        }
        let mut endpoints: Vec<Ipv4Addr> = Vec::new();
        if !all.is_empty() {
            for (a, _) in &s.endpoints {
                let ip = c.pod_ip(all[a.index(all.len())]);
                if !endpoints.contains(&ip) {
                    endpoints.push(ip);
                }
            }
        }
        c.services.push(Service {
            vip: Ipv4Addr::new(10, 3, 0, 20 + i as u8),
            ports,
            endpoints,
            affinity: s.affinity,
            local: s.local,
        });
    }
    c
}

/// A cluster within the given bounds.
pub fn cluster_with(
    nodes: std::ops::RangeInclusive<usize>,
    pods: std::ops::RangeInclusive<usize>,
    services: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Cluster> {
    (
        backend(),
        prop::collection::vec(pods, nodes),
        prop::collection::vec(svc_spec(5), services),
        1usize..=2,
    )
        .prop_map(|(b, pods, specs, x)| build(b, pods, specs, x))
}

/// The clusters: 1-8 nodes, 0-20 pods each, 0-10 services.
pub fn cluster() -> impl Strategy<Value = Cluster> {
    cluster_with(1..=8, 0..=20, 0..=10)
}

/// Picks a pod of a cluster, if it has any.
pub fn pick_pod(c: &Cluster, i: &Index) -> Option<PodRef> {
    let all = c.pods();
    (!all.is_empty()).then(|| all[i.index(all.len())])
}

/// A TTL: mostly a normal one, often one near the number of routers on the way.
pub fn ttl() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(64u8), 2 => 1u8..=6, 1 => any::<u8>().prop_map(|t| t.max(1))]
}

pub fn proto() -> impl Strategy<Value = Proto> {
    prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)]
}

/// A payload length: small, or large enough to pass a pod MTU now and then.
pub fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..64, 1 => 1380usize..1480]
}

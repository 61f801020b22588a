//! Random NetworkPolicies over random clusters: the compiled per-node tables, each node
//! judging its own pods' side of a flow, agree with the plain reference
//! (tests/model/policy_reference.rs) on every flow.

mod model;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use model::policy_reference;
use podnet_switch::policy::{
    ClusterView, Direction, FlowKey, LabelSelector, NamedPort, NamespaceView, NetworkPolicy,
    Operator, Peer, PodView, PolicyPort, PolicyTable, PortSpec, Requirement, Rule,
    NAMESPACE_NAME_LABEL, PROTO_SCTP,
};
use podnet_switch::wire::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use proptest::prelude::*;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const KEYS: [&str; 3] = ["app", "tier", "pod"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 3] = [80, 81, 8080];
const PORT_NAMES: [&str; 2] = ["http", "metrics"];

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(&KEYS[..]).prop_map(String::from),
        prop::sample::select(&VALUES[..]).prop_map(String::from),
        0..3,
    )
}

fn pod_ip(i: usize) -> Ipv4Addr {
    // Two nodes: 10.0.1.0/24 and 10.0.2.0/24.
    Ipv4Addr::new(10, 0, 1 + (i % 2) as u8, 10 + i as u8)
}

fn cluster() -> impl Strategy<Value = ClusterView> {
    let ns = prop::collection::vec(labels(), 3);
    let pods = prop::collection::vec(
        (
            prop::sample::select(&NAMESPACES[..]),
            labels(),
            prop::collection::vec(
                (
                    prop::sample::select(&PORT_NAMES[..]),
                    prop::sample::select(&[PROTO_TCP, PROTO_UDP][..]),
                    prop::sample::select(&PORTS[..]),
                ),
                0..2,
            ),
        ),
        2..8,
    );
    (ns, pods).prop_map(|(ns, pods)| ClusterView {
        namespaces: NAMESPACES
            .iter()
            .zip(ns)
            .map(|(n, labels)| NamespaceView {
                name: n.to_string(),
                labels,
            })
            .collect(),
        pods: pods
            .into_iter()
            .enumerate()
            .map(|(i, (ns, labels, ports))| PodView {
                ip: pod_ip(i),
                namespace: ns.to_string(),
                labels,
                ports: ports
                    .into_iter()
                    .map(|(name, protocol, port)| NamedPort {
                        name: name.to_string(),
                        protocol,
                        port,
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    let op = prop::sample::select(
        &[
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ][..],
    );
    let req = (
        prop::sample::select(&[KEYS[0], KEYS[1], KEYS[2], NAMESPACE_NAME_LABEL][..]),
        op,
        prop::collection::vec(
            prop::sample::select(&[VALUES[0], VALUES[1], "x", "y"][..]),
            1..3,
        ),
    )
        .prop_map(|(key, operator, values)| Requirement {
            key: key.to_string(),
            operator,
            values: match operator {
                Operator::In | Operator::NotIn => values.into_iter().map(String::from).collect(),
                _ => Vec::new(),
            },
        });
    (labels(), prop::collection::vec(req, 0..2)).prop_map(|(match_labels, match_expressions)| {
        LabelSelector {
            match_labels,
            match_expressions,
        }
    })
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        (prop::option::of(selector()), prop::option::of(selector()))
            .prop_map(|(pods, namespaces)| Peer::Pods { pods, namespaces }),
        (
            any::<u8>(),
            22u8..33,
            prop::option::of((24u8..33, any::<u8>()))
        )
            .prop_map(|(host, len, ex)| {
                // Around the pods' addresses (10.0.{1,2}.10..18), so blocks and excepts hit them.
                let third = 1 + host % 2;
                let cidr =
                    Ipv4Network::new(Ipv4Addr::new(10, 0, third, 10 + host % 8), len).unwrap();
                let cidr = Ipv4Network::new(cidr.network(), len).unwrap();
                let except = ex
                    .filter(|&(e, _)| e >= len)
                    .map(|(e, h)| {
                        let net =
                            Ipv4Network::new(Ipv4Addr::new(10, 0, third, 10 + h % 8), e).unwrap();
                        Ipv4Network::new(net.network(), e).unwrap()
                    })
                    .filter(|e| cidr.contains(e.network()))
                    .into_iter()
                    .collect();
                Peer::IpBlock { cidr, except }
            }),
    ]
}

fn port() -> impl Strategy<Value = PolicyPort> {
    (
        prop::sample::select(&[PROTO_TCP, PROTO_UDP, PROTO_SCTP][..]),
        prop_oneof![
            Just(None),
            prop::sample::select(&PORTS[..]).prop_map(|p| Some(PortSpec::Number(p))),
            prop::sample::select(&PORT_NAMES[..]).prop_map(|n| Some(PortSpec::Name(n.into()))),
        ],
        prop::option::of(0u16..200),
    )
        .prop_map(|(protocol, port, span)| {
            let end_port = match port {
                Some(PortSpec::Number(p)) => span.map(|s| p.saturating_add(s)),
                _ => None,
            };
            PolicyPort {
                protocol,
                port,
                end_port,
            }
        })
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop::collection::vec(peer(), 0..3),
        prop::collection::vec(port(), 0..3),
    )
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

fn policy() -> impl Strategy<Value = NetworkPolicy> {
    (
        prop::sample::select(&NAMESPACES[..]),
        0u8..100,
        selector(),
        prop::option::of(prop::sample::subsequence(
            vec![Direction::Ingress, Direction::Egress],
            0..=2,
        )),
        prop::collection::vec(rule(), 0..3),
        prop::collection::vec(rule(), 0..3),
    )
        .prop_map(
            |(ns, n, pod_selector, policy_types, ingress, egress)| NetworkPolicy {
                namespace: ns.to_string(),
                name: format!("p{n}"),
                pod_selector,
                policy_types,
                ingress,
                egress,
            },
        )
}

fn flow(pods: usize) -> impl Strategy<Value = (usize, usize, u8, u16)> {
    (
        0..pods + 1,
        0..pods + 1,
        prop::sample::select(&[PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_SCTP][..]),
        prop_oneof![prop::sample::select(&PORTS[..]), 1u16..300],
    )
}

/// An address that is no pod's: an external client.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 200);

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn compiled_tables_agree_with_the_reference(
        c in cluster(),
        policies in prop::collection::vec(policy(), 0..5),
        flows in prop::collection::vec(flow(8), 1..40),
    ) {
        let node = |third: u8| {
            PolicyTable::compile(&c, &policies, move |ip| ip.octets()[2] == third)
        };
        let nodes = [node(1), node(2)];
        let at = |i: usize| if i < c.pods.len() { c.pods[i].ip } else { OUTSIDE };
        for (s, d, proto, port) in flows {
            let (src, dst) = (at(s), at(d));
            if src == dst {
                continue;
            }
            let dport = if proto == PROTO_ICMP { 0 } else { port };
            let key = FlowKey { proto, src, dst, dport };
            // The flow passes the source's node, then the destination's.
            let of = |ip: Ipv4Addr| &nodes[(ip.octets()[2] - 1) as usize];
            let same_node = src.octets()[2] == dst.octets()[2];
            let got = of(src).check(&key).is_ok() && (same_node || of(dst).check(&key).is_ok());
            let want = policy_reference::allowed(&c, &policies, src, dst, proto, dport);
            prop_assert_eq!(got, want, "flow {:?}", key);
        }
    }
}

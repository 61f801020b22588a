//! Differential scenarios: generated small clusters run end to end through the simulator
//! (real smoltcp stacks on the real switch core), and the report must agree with the
//! reference model (crate podnet-model, model/src/reference.rs) on what is delivered: which traffic
//! gets everything through and which nothing, which endpoints may answer, which source
//! address they see.
//!
//! Each case is a whole simulation, so the case count is small and set apart from
//! PROPTEST_CASES: `DIFFERENTIAL_CASES` (default 256, a few seconds in release).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

use podnet_model::{reference, strategy};
use podnet_sim::run::{run, RunOptions};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use reference::{Cluster, Expect, Packet, Place, PodRef, Proto};
use strategy::{cluster_with, pick_pod, TCP_TARGET, UDP_TARGET};

fn config() -> ProptestConfig {
    let cases = std::env::var("DIFFERENTIAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "switch/proptest-regressions/differential.txt",
        ))),
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// One traffic entry, by what it names (resolved against the cluster).
#[derive(Clone, Debug)]
enum Flow {
    PodToPod(Index, Index),
    PodToService(Index, Index, Index),
    ExternalToNodePort(Index, Index, Index),
    /// To an address in the pod CIDR that is in no node's subnet.
    PodToNowhere(Index),
    /// From a node's own stack to a pod.
    NodeToPod(Index, Index),
}

fn flow() -> impl Strategy<Value = Flow> {
    let i = || any::<Index>();
    prop_oneof![
        2 => (i(), i()).prop_map(|(a, b)| Flow::PodToPod(a, b)),
        3 => (i(), i(), i()).prop_map(|(a, b, c)| Flow::PodToService(a, b, c)),
        3 => (i(), i(), i()).prop_map(|(a, b, c)| Flow::ExternalToNodePort(a, b, c)),
        1 => i().prop_map(Flow::PodToNowhere),
        1 => (i(), i()).prop_map(|(n, p)| Flow::NodeToPod(n, p)),
    ]
}

fn pod_name(p: PodRef) -> String {
    format!("n{}p{}", p.node, p.index)
}

/// A traffic entry of the scenario and what the model expects of it.
struct Planned {
    yaml: String,
    name: String,
    expect: Expect,
}

fn plan(c: &Cluster, i: usize, f: &Flow) -> Option<Planned> {
    let name = format!("t{i}");
    let start = format!("{}ms", 100 + 300 * i);
    let packet = |proto, src, dst, dport| Packet {
        proto,
        src,
        sport: 49152,
        dst,
        dport,
        ttl: 64,
        len: 100,
        df: true,
    };
    let entry = |from: &str, to: &str, kind: &str| {
        format!("  - {{name: {name}, from: {from}, to: \"{to}\", kind: {kind}, count: 3, start: {start}, timeout: 500ms}}\n")
    };
    match f {
        Flow::PodToPod(a, b) => {
            let (a, b) = (pick_pod(c, a)?, pick_pod(c, b)?);
            if a == b {
                return None;
            }
            let p = packet(Proto::Tcp, c.pod_ip(a), c.pod_ip(b), TCP_TARGET);
            Some(Planned {
                yaml: entry(&pod_name(a), &pod_name(b), "tcp"),
                name,
                expect: c.forward(Place::Pod(a), &p),
            })
        }
        Flow::PodToService(a, s, pt) => {
            let a = pick_pod(c, a)?;
            if c.services.is_empty() {
                return None;
            }
            let k = s.index(c.services.len());
            let svc = &c.services[k];
            let port = &svc.ports[pt.index(svc.ports.len())];
            let kind = if port.proto == Proto::Tcp {
                "tcp"
            } else {
                "udp"
            };
            let p = packet(port.proto, c.pod_ip(a), svc.vip, port.port);
            Some(Planned {
                yaml: entry(&pod_name(a), &format!("svc:s{k}:{}", port.port), kind),
                name,
                expect: c.forward(Place::Pod(a), &p),
            })
        }
        Flow::ExternalToNodePort(x, n, s) => {
            let nps: Vec<_> = c
                .services
                .iter()
                .flat_map(|s| s.ports.iter())
                .filter(|p| p.node_port.is_some())
                .collect();
            if nps.is_empty() {
                return None;
            }
            let port = nps[s.index(nps.len())];
            let x = x.index(c.externals);
            let n = n.index(c.nodes.len());
            let np = port.node_port.unwrap();
            let kind = if port.proto == Proto::Tcp {
                "tcp"
            } else {
                "udp"
            };
            let p = packet(port.proto, c.external_ip(x), c.node_ip(n), np);
            Some(Planned {
                yaml: entry(&format!("x{x}"), &format!("node:node{n}:{np}"), kind),
                name,
                expect: c.forward(Place::External(x), &p),
            })
        }
        Flow::NodeToPod(n, b) => {
            let n = n.index(c.nodes.len());
            let b = pick_pod(c, b)?;
            let p = packet(Proto::Tcp, c.gateway(n), c.pod_ip(b), TCP_TARGET);
            Some(Planned {
                yaml: entry(&format!("node:node{n}"), &pod_name(b), "tcp"),
                name,
                expect: c.forward(Place::Node(n), &p),
            })
        }
        Flow::PodToNowhere(a) => {
            let a = pick_pod(c, a)?;
            let dst = Ipv4Addr::new(10, 2, 200, 7);
            let p = packet(Proto::Tcp, c.pod_ip(a), dst, TCP_TARGET);
            Some(Planned {
                yaml: entry(&pod_name(a), &format!("{dst}:{TCP_TARGET}"), "tcp"),
                name,
                expect: c.forward(Place::Pod(a), &p),
            })
        }
    }
}

/// The scenario file for `c` with `traffic` entries.
fn scenario(c: &Cluster, traffic: &[Planned], slots: usize) -> String {
    let mut y = String::new();
    writeln!(y, "name: differential").unwrap();
    writeln!(y, "seed: 7").unwrap();
    let end = 600 + 300 * slots;
    writeln!(y, "duration: {end}ms").unwrap();
    writeln!(y, "cluster: {{backend: {}}}", c.backend.name()).unwrap();
    writeln!(y, "nodes:").unwrap();
    for n in 0..c.nodes.len() {
        writeln!(
            y,
            "  - {{name: node{n}, subnet: {}/24, ip: {}}}",
            c.vtep(n),
            c.node_ip(n)
        )
        .unwrap();
    }
    let pods = c.pods();
    if !pods.is_empty() {
        writeln!(y, "pods:").unwrap();
    }
    for p in pods {
        let ip = c.pod_ip(p);
        let labels: Vec<String> = c
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.endpoints.contains(&ip))
            .map(|(k, _)| format!("s{k}: y"))
            .collect();
        writeln!(
            y,
            "  - {{name: {}, node: node{}, ip: {ip}, labels: {{{}}}, listen: [{{port: {TCP_TARGET}, protocol: tcp}}, {{port: {UDP_TARGET}, protocol: udp}}]}}",
            pod_name(p),
            p.node,
            labels.join(", ")
        )
        .unwrap();
    }
    if !c.services.is_empty() {
        writeln!(y, "services:").unwrap();
    }
    for (k, s) in c.services.iter().enumerate() {
        let node_port = s.ports.iter().any(|p| p.node_port.is_some());
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| {
                let proto = if p.proto == Proto::Tcp { "tcp" } else { "udp" };
                let np = p
                    .node_port
                    .map(|n| format!(", node_port: {n}"))
                    .unwrap_or_default();
                format!(
                    "{{port: {}, target_port: {}, protocol: {proto}{np}}}",
                    p.port, p.target
                )
            })
            .collect();
        writeln!(
            y,
            "  - {{name: s{k}, type: {}, cluster_ip: {}, selector: {{s{k}: y}}, ports: [{}], session_affinity: {}, external_traffic_policy: {}}}",
            if node_port { "NodePort" } else { "ClusterIP" },
            s.vip,
            ports.join(", "),
            if s.affinity { "ClientIP" } else { "None" },
            if s.local { "Local" } else { "Cluster" },
        )
        .unwrap();
    }
    writeln!(y, "externals:").unwrap();
    for x in 0..c.externals {
        writeln!(y, "  - {{name: x{x}, ip: {}}}", c.external_ip(x)).unwrap();
    }
    writeln!(y, "traffic:").unwrap();
    for t in traffic {
        y.push_str(&t.yaml);
    }
    y
}

proptest! {
    #![proptest_config(config())]

    /// The simulator delivers what the model says, to whom it says, from the source it
    /// says: all requests where the model delivers, none where it drops.
    #[test]
    fn simulator_agrees_with_the_model(
        c in cluster_with(1..=4, 0..=4, 0..=3),
        flows in prop::collection::vec(flow(), 1..=5),
    ) {
        let planned: Vec<Planned> = flows
            .iter()
            .enumerate()
            .filter_map(|(i, f)| plan(&c, i, f))
            .collect();
        if planned.is_empty() {
            return Ok(());
        }
        let text = scenario(&c, &planned, flows.len());
        let sc = podnet_sim::scenario::parse("differential.yaml", &text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let report = run(sc, &RunOptions::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        if std::env::var_os("DIFFERENTIAL_VERBOSE").is_some() {
            for t in &report.traffic {
                eprintln!("{} {} -> {}: {}/{} {:?} {:?}", c.backend.name(), t.from, t.to, t.delivered, t.sent, t.by_endpoint, t.source_seen);
            }
        }
        for p in &planned {
            let t = report.traffic.iter().find(|t| t.name == p.name).unwrap();
            prop_assert_eq!(t.sent, 3, "{}: all requests started\n{}", p.name, text);
            match &p.expect {
                Expect::OneOf(alts) => {
                    prop_assert_eq!(t.delivered, t.sent, "{} must all arrive: {:?}\n{:?}\n{}", p.name, alts, t, text);
                    let names: BTreeSet<String> = alts
                        .iter()
                        .map(|a| match a.at {
                            Place::Pod(p) => pod_name(p),
                            Place::External(x) => format!("x{x}"),
                            Place::Node(n) => format!("node:node{n}"),
                        })
                        .collect();
                    let sources: BTreeSet<String> = alts.iter().map(|a| a.src.to_string()).collect();
                    for e in t.by_endpoint.keys() {
                        prop_assert!(names.contains(e), "{}: endpoint {} is none of {:?}\n{}", p.name, e, names, text);
                    }
                    for s in t.source_seen.keys() {
                        prop_assert!(sources.contains(s), "{}: source {} is none of {:?}\n{}", p.name, s, sources, text);
                    }
                }
                Expect::Dropped(why) => {
                    prop_assert_eq!(t.delivered, 0, "{} must not arrive ({:?}): {:?}\n{}", p.name, why, t, text);
                }
                Expect::OneOfOrDropped(..) => unreachable!("TTL 64 reaches every endpoint"),
            }
        }
    }
}

//! The policy stage's cost per new flow: `policy/new_flow_1k` judges new flows on a node
//! of a cluster with 1,000 NetworkPolicies over 10,000 pods (100 namespaces of 100 pods;
//! this node runs 1,000 of them), half of the flows allowed, half denied. It measures the
//! compiled lookup a new flow pays once (`PolicyTable::check`); conntrack then carries the
//! verdict (the pipeline benchmarks measure conntrack's own cost).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use podnet_switch::policy::{
    ClusterView, FlowKey, LabelSelector, NamespaceView, NetworkPolicy, Peer, PodView, PolicyPort,
    PolicyTable, PortSpec, Rule,
};
use podnet_switch::wire::PROTO_TCP;

const PODS: u32 = 10_000;
const PER_NS: u32 = 100;
const APPS: u32 = 10;

fn pod_ip(i: u32) -> Ipv4Addr {
    // 40 nodes of 250 pods: 10.(i / 250).(i % 250).
    Ipv4Addr::new(10, (i / 250) as u8, (i % 250) as u8, 10)
}

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn sel(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: Vec::new(),
    }
}

fn cluster() -> (ClusterView, Vec<NetworkPolicy>) {
    let namespaces = (0..PODS / PER_NS)
        .map(|n| NamespaceView {
            name: format!("ns-{n}"),
            labels: labels(&[("team", format!("team-{}", n % 10))]),
        })
        .collect();
    let pods = (0..PODS)
        .map(|i| PodView {
            ip: pod_ip(i),
            namespace: format!("ns-{}", i / PER_NS),
            labels: labels(&[("app", format!("app-{}", i % APPS))]),
            ports: Vec::new(),
        })
        .collect();
    // Ten policies per namespace: app-k accepts app-(k+1) of its namespace and every pod of
    // the namespaces of its team, on TCP 80 and 8000-8100.
    let mut policies = Vec::new();
    for n in 0..PODS / PER_NS {
        for k in 0..APPS {
            let mut p = NetworkPolicy::new(
                &format!("ns-{n}"),
                &format!("app-{k}"),
                sel(&[("app", format!("app-{k}"))]),
            );
            p.ingress = vec![Rule {
                peers: vec![
                    Peer::Pods {
                        pods: Some(sel(&[("app", format!("app-{}", (k + 1) % APPS))])),
                        namespaces: None,
                    },
                    Peer::Pods {
                        pods: None,
                        namespaces: Some(sel(&[("team", format!("team-{}", n % 10))])),
                    },
                ],
                ports: vec![
                    PolicyPort {
                        protocol: PROTO_TCP,
                        port: Some(PortSpec::Number(80)),
                        end_port: None,
                    },
                    PolicyPort {
                        protocol: PROTO_TCP,
                        port: Some(PortSpec::Number(8000)),
                        end_port: Some(8100),
                    },
                ],
            }];
            policies.push(p);
        }
    }
    (ClusterView { namespaces, pods }, policies)
}

fn bench(c: &mut Criterion) {
    let (view, policies) = cluster();
    // This node: 10.0.0.0/12's first four /16 ... the pods 0..1000.
    let table = PolicyTable::compile(&view, &policies, |ip| {
        u32::from(ip) < u32::from(pod_ip(1000))
    });
    // Flows to local pods from anywhere, every other one on a port no rule allows.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let flows: Vec<FlowKey> = (0..4096)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            FlowKey {
                proto: PROTO_TCP,
                src: pod_ip((x % PODS as u64) as u32),
                dst: pod_ip(((x >> 20) % 1000) as u32),
                dport: if i % 2 == 0 { 80 } else { 443 },
            }
        })
        .collect();
    let allowed = flows.iter().filter(|f| table.check(f).is_ok()).count();
    assert!(
        allowed > 0 && allowed < flows.len() / 2 + 1,
        "{allowed} of {} allowed",
        flows.len()
    );
    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(flows.len() as u64));
    g.bench_function("new_flow_1k", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for f in &flows {
                ok += table.check(std::hint::black_box(f)).is_ok() as usize;
            }
            ok
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

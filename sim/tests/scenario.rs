//! Scenario files end to end: defaults, `{i}` expansion, address allocation, units, the
//! SCENARIO.md example, and one test per kind of invalid input, each checking that the
//! message points at the right `file:line:col`.

use std::net::Ipv4Addr;
use std::path::Path;

use podnet_sim::scenario::{
    self, Action, Backend, Check, CompareOp, DropReason, FaultKind, HostMatch, Protocol, Role,
    RuleProtocol, Scenario, ServiceType, SessionAffinity, SourceSeen, TrafficKind, TrafficPolicy,
    TrafficSource, TrafficTarget,
};

fn parse(yaml: &str) -> Scenario {
    scenario::parse("t.yaml", yaml).unwrap_or_else(|error| panic!("{error}"))
}

/// Asserts that `yaml` is rejected with a message starting `t.yaml:LINE:COL: ` (`at`) and
/// containing each of `words`.
#[track_caller]
fn assert_rejected(yaml: &str, at: &str, words: &[&str]) {
    let message = match scenario::parse("t.yaml", yaml) {
        Ok(_) => panic!("accepted, expected an error at {at}:\n{yaml}"),
        Err(error) => error.to_string(),
    };
    assert!(
        message.starts_with(&format!("t.yaml:{at}: ")),
        "expected t.yaml:{at}, got: {message}"
    );
    for word in words {
        assert!(message.contains(word), "{word:?} not in: {message}");
    }
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn names<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    items.into_iter().map(String::as_str).collect()
}

#[test]
fn two_line_scenario_takes_every_default() {
    let scenario = parse("name: x\n");
    assert_eq!(scenario.name, "x");
    assert_eq!(scenario.description, "");
    assert_eq!(scenario.seed, 1);
    assert_eq!(scenario.duration_ns, 10_000_000_000);
    let cluster = &scenario.cluster;
    assert_eq!(cluster.backend, Backend::Vxlan);
    assert_eq!(cluster.pod_cidr.to_string(), "10.2.0.0/16");
    assert_eq!(cluster.node_subnet_len, 24);
    assert_eq!(cluster.service_cidr.to_string(), "10.3.0.0/24");
    assert_eq!(
        (cluster.node_port_range.first, cluster.node_port_range.last),
        (30000, 32767)
    );
    assert_eq!((cluster.vxlan.vni, cluster.vxlan.port), (1, 8472));
    assert_eq!(cluster.udp.port, 8285);
    assert!(cluster.hairpin);
    assert!(cluster.infrastructure.is_empty());
    let underlay = &scenario.underlay;
    assert_eq!(underlay.cidr.to_string(), "172.16.0.0/16");
    assert_eq!(underlay.mtu, 1500);
    assert_eq!(underlay.latency_ns, 50_000);
    assert_eq!(underlay.bandwidth_bps, 10_000_000_000);
    assert_eq!(underlay.loss, 0.0);
    assert_eq!(scenario.pod_mtu(), 1450);
    assert_eq!(scenario.firewall.default, Action::Allow);
    assert!(scenario.firewall.rules.is_empty());
    assert!(scenario.nodes.is_empty() && scenario.pods.is_empty());
    assert!(scenario.services.is_empty() && scenario.externals.is_empty());
    assert!(scenario.traffic.is_empty() && scenario.faults.is_empty());
    assert!(scenario.expect.is_empty());
}

#[test]
fn entry_defaults() {
    let scenario = parse(
        "name: x
nodes: [{name: n}]
pods: [{name: p, listen: [{port: 80}]}]
services: [{name: s, ports: [{port: 80}]}]
traffic: [{name: t, from: p, to: p}]
faults:
",
    );
    assert_eq!(scenario.nodes[0].role, Role::Worker);
    assert_eq!(scenario.pods[0].listen[0].protocol, Protocol::Tcp);
    let service = &scenario.services[0];
    assert_eq!(service.service_type, ServiceType::ClusterIp);
    assert_eq!(service.session_affinity, SessionAffinity::None);
    assert_eq!(service.affinity_timeout_ns, 10_800_000_000_000);
    assert_eq!(service.external_traffic_policy, TrafficPolicy::Cluster);
    let port = &service.ports[0];
    assert_eq!(
        (port.target_port, port.protocol, port.node_port),
        (80, Protocol::Tcp, None)
    );
    let traffic = &scenario.traffic[0];
    assert_eq!(traffic.kind, TrafficKind::Ping);
    assert_eq!(traffic.count, 1);
    assert_eq!(traffic.bytes, 64);
    assert_eq!(traffic.start_ns, 0);
    assert_eq!(traffic.interval_ns, 10_000_000);
    assert_eq!(traffic.timeout_ns, 1_000_000_000);
    assert_eq!(
        traffic.to,
        TrafficTarget::Pod {
            name: "p".into(),
            port: None
        }
    );
}

#[test]
fn count_expands_names_and_pods_spread_over_workers() {
    let scenario = parse(
        "name: x
nodes:
  - {name: master, role: master}
  - {name: \"worker-{i}\", count: 3}
  - {name: \"rack{i}-etcd\", count: 1, role: etcd}
externals:
  - {name: \"client-{i}\", count: 2}
pods:
  - {name: \"web-{i}\", count: 4}
  - {name: \"none-{i}\", count: 0}
",
    );
    assert_eq!(
        names(scenario.nodes.iter().map(|node| &node.name)),
        ["master", "worker-0", "worker-1", "worker-2", "rack0-etcd"]
    );
    assert_eq!(scenario.nodes[4].role, Role::Etcd);
    assert_eq!(
        names(scenario.externals.iter().map(|external| &external.name)),
        ["client-0", "client-1"]
    );
    let placed: Vec<(&str, &str)> = scenario
        .pods
        .iter()
        .map(|pod| (pod.name.as_str(), pod.node.as_str()))
        .collect();
    assert_eq!(
        placed,
        [
            ("web-0", "worker-0"),
            ("web-1", "worker-1"),
            ("web-2", "worker-2"),
            ("web-3", "worker-0")
        ]
    );
}

#[test]
fn pods_spread_over_all_nodes_without_workers() {
    let scenario = parse(
        "name: x
nodes: [{name: m, role: master}, {name: e, role: etcd}]
pods: [{name: \"p-{i}\", count: 3}]
",
    );
    let nodes: Vec<&str> = scenario.pods.iter().map(|pod| pod.node.as_str()).collect();
    assert_eq!(nodes, ["m", "e", "m"]);
}

#[test]
fn subnets_count_from_one_and_skip_explicit_ones() {
    let scenario = parse(
        "name: x
nodes:
  - {name: a}
  - {name: b, subnet: 10.2.2.0/24}
  - {name: \"c-{i}\", count: 2}
",
    );
    let subnets: Vec<String> = scenario
        .nodes
        .iter()
        .map(|node| node.subnet.to_string())
        .collect();
    assert_eq!(
        subnets,
        ["10.2.1.0/24", "10.2.2.0/24", "10.2.3.0/24", "10.2.4.0/24"]
    );
    assert_eq!(scenario.nodes[0].vtep_ip(), ip("10.2.1.0"));
    assert_eq!(scenario.nodes[0].gateway_ip(), ip("10.2.1.1"));
}

#[test]
fn subnets_follow_node_subnet_len() {
    let scenario = parse(
        "name: x
cluster: {pod_cidr: 10.244.0.0/16, node_subnet_len: 26}
nodes: [{name: \"n-{i}\", count: 5}]
",
    );
    let subnets: Vec<String> = scenario
        .nodes
        .iter()
        .map(|node| node.subnet.to_string())
        .collect();
    assert_eq!(
        subnets,
        [
            "10.244.0.64/26",
            "10.244.0.128/26",
            "10.244.0.192/26",
            "10.244.1.0/26",
            "10.244.1.64/26"
        ]
    );
}

#[test]
fn underlay_addresses_go_up_from_two_nodes_then_externals() {
    let scenario = parse(
        "name: x
nodes:
  - {name: a}
  - {name: b, ip: 172.16.0.3}
  - {name: c}
externals:
  - {name: e}
  - {name: f, ip: 172.16.0.2}
  - {name: g}
",
    );
    let node_ips: Vec<Ipv4Addr> = scenario.nodes.iter().map(|node| node.ip).collect();
    assert_eq!(
        node_ips,
        [ip("172.16.0.4"), ip("172.16.0.3"), ip("172.16.0.5")]
    );
    let external_ips: Vec<Ipv4Addr> = scenario
        .externals
        .iter()
        .map(|external| external.ip)
        .collect();
    assert_eq!(
        external_ips,
        [ip("172.16.0.6"), ip("172.16.0.2"), ip("172.16.0.7")]
    );
}

#[test]
fn pod_addresses_go_up_from_two_in_their_node_subnet() {
    let scenario = parse(
        "name: x
nodes: [{name: a}, {name: b}]
pods:
  - {name: \"p-{i}\", count: 2, node: a}
  - {name: q, node: a, ip: 10.2.1.4}
  - {name: r, node: a}
  - {name: s, node: b}
  - {name: t, ip: 10.2.2.9}
",
    );
    let placed: Vec<(&str, &str, Ipv4Addr)> = scenario
        .pods
        .iter()
        .map(|pod| (pod.name.as_str(), pod.node.as_str(), pod.ip))
        .collect();
    assert_eq!(
        placed,
        [
            ("p-0", "a", ip("10.2.1.2")),
            ("p-1", "a", ip("10.2.1.3")),
            ("q", "a", ip("10.2.1.4")),
            ("r", "a", ip("10.2.1.5")),
            ("s", "b", ip("10.2.2.2")),
            // An explicit address without a node places the pod on the node owning it.
            ("t", "b", ip("10.2.2.9")),
        ]
    );
}

#[test]
fn cluster_ips_come_from_the_top_skipping_api_server_and_dns() {
    let scenario = parse(
        "name: x
cluster: {service_cidr: 10.96.0.0/28}
services:
  - {name: a}
  - {name: b, cluster_ip: 10.96.0.13}
  - {name: c}
  - {name: d}
  - {name: e}
  - {name: dns, cluster_ip: 10.96.0.10}
",
    );
    let ips: Vec<Ipv4Addr> = scenario
        .services
        .iter()
        .map(|service| service.cluster_ip)
        .collect();
    assert_eq!(
        ips,
        [
            ip("10.96.0.14"),
            ip("10.96.0.13"),
            ip("10.96.0.12"),
            ip("10.96.0.11"),
            ip("10.96.0.9"),
            ip("10.96.0.10"),
        ]
    );
    let scenario = parse("name: x\nservices: [{name: a}, {name: b}]\n");
    assert_eq!(scenario.services[0].cluster_ip, ip("10.3.0.254"));
    assert_eq!(scenario.services[1].cluster_ip, ip("10.3.0.253"));
}

#[test]
fn node_ports_are_given_or_allocated_upward() {
    let scenario = parse(
        "name: x
services:
  - name: a
    type: NodePort
    ports: [{port: 80, target_port: 8080}, {port: 443, node_port: 30000}]
  - name: b
    type: LoadBalancer
    ports: [{name: dns, port: 53, protocol: udp}]
  - name: c
    ports: [{port: 80}]
",
    );
    let node_ports: Vec<Vec<Option<u16>>> = scenario
        .services
        .iter()
        .map(|service| service.ports.iter().map(|port| port.node_port).collect())
        .collect();
    assert_eq!(
        node_ports,
        [
            vec![Some(30001), Some(30000)],
            vec![Some(30002)],
            vec![None]
        ]
    );
    assert_eq!(scenario.services[0].ports[0].target_port, 8080);
    assert_eq!(scenario.services[1].ports[0].name.as_deref(), Some("dns"));
}

#[test]
fn units_everywhere() {
    let scenario = parse(
        r#"name: x
duration: 1m
cluster: {node_port_range: "31000-31999"}
underlay: {latency: 250ms, bandwidth: 100Mbit, loss: 0.5%, mtu: 9000}
nodes: [{name: n}]
pods: [{name: p, listen: [{port: 80}]}]
firewall:
  default: deny
  rules:
    - {action: allow, to: worker, from: all, protocol: tcp, ports: 30000-32767}
    - {action: allow, protocol: icmp}
    - {action: deny, from: external, protocol: udp, ports: 8472}
traffic:
  - {name: big, from: p, to: p, kind: bulk, bytes: 10MB, start: 1.5s, interval: 50us, timeout: 1h}
  - {name: small, from: p, to: "p:80", kind: tcp, bytes: 1KiB, interval: 1ns}
faults:
  - {at: 2s, kind: loss, node: n, loss: 2%}
  - {at: 1s, kind: latency, node: n, latency: 2ms}
"#,
    );
    assert_eq!(scenario.duration_ns, 60_000_000_000);
    assert_eq!(scenario.cluster.node_port_range.first, 31000);
    assert_eq!(scenario.underlay.latency_ns, 250_000_000);
    assert_eq!(scenario.underlay.bandwidth_bps, 100_000_000);
    assert_eq!(scenario.underlay.loss, 0.005);
    assert_eq!(scenario.underlay.mtu, 9000);
    assert_eq!(scenario.pod_mtu(), 8950);
    let firewall = &scenario.firewall;
    assert_eq!(firewall.default, Action::Deny);
    assert_eq!(firewall.rules[0].to, HostMatch::Role(Role::Worker));
    assert_eq!(firewall.rules[0].from, HostMatch::All);
    let ports = firewall.rules[0].ports.as_deref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!((ports[0].first, ports[0].last), (30000, 32767));
    assert_eq!(firewall.rules[1].protocol, RuleProtocol::Icmp);
    assert_eq!(firewall.rules[1].to, HostMatch::All);
    assert_eq!(firewall.rules[2].from, HostMatch::AnyExternal);
    assert!(firewall.rules[2].ports.as_deref().unwrap()[0].contains(8472));
    let big = &scenario.traffic[0];
    assert_eq!(big.bytes, 10_000_000);
    assert_eq!(big.start_ns, 1_500_000_000);
    assert_eq!(big.interval_ns, 50_000);
    assert_eq!(big.timeout_ns, 3_600_000_000_000);
    // Bulk to a pod without a port goes to its first tcp listen port.
    assert_eq!(
        big.to,
        TrafficTarget::Pod {
            name: "p".into(),
            port: Some(80)
        }
    );
    assert_eq!(scenario.traffic[1].bytes, 1024);
    assert_eq!(scenario.traffic[1].interval_ns, 1);
    // Faults come sorted by time.
    assert_eq!(scenario.faults[0].at_ns, 1_000_000_000);
    assert_eq!(
        scenario.faults[0].kind,
        FaultKind::Latency {
            node: "n".into(),
            latency_ns: 2_000_000
        }
    );
    assert_eq!(
        scenario.faults[1].kind,
        FaultKind::Loss {
            node: "n".into(),
            loss: 0.02
        }
    );
}

#[test]
fn traffic_targets_of_every_form() {
    let scenario = parse(
        r#"name: x
nodes: [{name: n}]
externals: [{name: laptop}]
pods: [{name: p, listen: [{port: 53, protocol: udp}]}]
services:
  - {name: dns, ports: [{name: dns, port: 53, protocol: udp}, {name: dns-tcp, port: 53}]}
  - {name: lbs, type: LoadBalancer, ports: [{port: 80}]}
traffic:
  - {name: a, from: laptop, to: "lb:lbs:80", kind: tcp}
  - {name: b, from: p, to: "svc:dns:53", kind: udp}
  - {name: c, from: p, to: "svc:dns:dns-tcp", kind: tcp}
  - {name: d, from: "node:n", to: "node:n:10250", kind: tcp}
  - {name: e, from: p, to: "10.3.0.254:53", kind: udp}
  - {name: f, from: p, to: 172.16.0.2}
  - {name: g, from: laptop, to: p, kind: udp}
"#,
    );
    let targets: Vec<&TrafficTarget> = scenario.traffic.iter().map(|traffic| &traffic.to).collect();
    assert_eq!(
        targets,
        [
            &TrafficTarget::Lb {
                name: "lbs".into(),
                port: 80
            },
            &TrafficTarget::Service {
                name: "dns".into(),
                port: 53
            },
            &TrafficTarget::Service {
                name: "dns".into(),
                port: 53
            },
            &TrafficTarget::Node {
                name: "n".into(),
                port: Some(10250)
            },
            &TrafficTarget::Ip {
                addr: ip("10.3.0.254"),
                port: Some(53)
            },
            &TrafficTarget::Ip {
                addr: ip("172.16.0.2"),
                port: None
            },
            &TrafficTarget::Pod {
                name: "p".into(),
                port: Some(53)
            },
        ]
    );
    assert_eq!(
        scenario.traffic[0].from,
        TrafficSource::External("laptop".into())
    );
    assert_eq!(scenario.traffic[1].from, TrafficSource::Pod("p".into()));
    assert_eq!(scenario.traffic[3].from, TrafficSource::Node("n".into()));
}

#[test]
fn expectations_one_check_each() {
    let scenario = parse(
        r#"name: x
nodes: [{name: n}]
pods: [{name: p}]
traffic: [{name: t, from: p, to: p}]
expect:
  - {traffic: t, delivered: ">= 95%", spread: even, sticky: false}
  - {traffic: t, delivered: "<= 5%", reason: timeout}
  - {traffic: t, source_seen: gateway}
"#,
    );
    let checks: Vec<&Check> = scenario.expect.iter().map(|expect| &expect.check).collect();
    assert_eq!(
        checks,
        [
            &Check::Delivered {
                op: CompareOp::AtLeast,
                share: 0.95,
                reason: None
            },
            &Check::SpreadEven,
            &Check::Sticky(false),
            &Check::Delivered {
                op: CompareOp::AtMost,
                share: 0.05,
                reason: Some(DropReason::Timeout)
            },
            &Check::SourceSeen(SourceSeen::Gateway),
        ]
    );
}

#[test]
fn deleted_pod_may_come_back_with_a_new_address() {
    let scenario = parse(
        "name: x
nodes: [{name: n}]
pods: [{name: web}]
faults:
  - {at: 2s, kind: pod_add, pod: {name: web, node: n}}
  - {at: 1s, kind: pod_delete, pod: web}
  - {at: 3s, kind: pod_add, pod: {name: \"extra-{i}\", count: 2}}
",
    );
    assert_eq!(
        scenario.faults[0].kind,
        FaultKind::PodDelete { pod: "web".into() }
    );
    let added: Vec<(u64, &str, Ipv4Addr)> = scenario
        .faults
        .iter()
        .filter_map(|fault| match &fault.kind {
            FaultKind::PodAdd { pod } => Some((fault.at_ns, pod.name.as_str(), pod.ip)),
            _ => None,
        })
        .collect();
    assert_eq!(
        added,
        [
            (2_000_000_000, "web", ip("10.2.1.3")),
            (3_000_000_000, "extra-0", ip("10.2.1.4")),
            (3_000_000_000, "extra-1", ip("10.2.1.5")),
        ]
    );
}

#[test]
fn scenario_md_example_resolves() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/full.yaml");
    let scenario = scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(scenario.name, "quickstart");
    assert_eq!(scenario.seed, 42);
    assert_eq!(
        scenario.cluster.infrastructure[0].to_string(),
        "192.168.0.0/16"
    );

    let nodes: Vec<(&str, Role, String, Ipv4Addr)> = scenario
        .nodes
        .iter()
        .map(|node| {
            (
                node.name.as_str(),
                node.role,
                node.subnet.to_string(),
                node.ip,
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            (
                "master",
                Role::Master,
                "10.2.100.0/24".into(),
                ip("172.16.0.20")
            ),
            (
                "worker-0",
                Role::Worker,
                "10.2.1.0/24".into(),
                ip("172.16.0.2")
            ),
            (
                "worker-1",
                Role::Worker,
                "10.2.2.0/24".into(),
                ip("172.16.0.3")
            ),
        ]
    );
    let pods: Vec<(&str, &str, Ipv4Addr)> = scenario
        .pods
        .iter()
        .map(|pod| (pod.name.as_str(), pod.node.as_str(), pod.ip))
        .collect();
    assert_eq!(
        pods,
        [
            ("web-0", "worker-0", ip("10.2.1.2")),
            ("web-1", "worker-0", ip("10.2.1.3")),
            ("web-2", "worker-0", ip("10.2.1.4")),
            ("client", "worker-1", ip("10.2.2.144")),
        ]
    );
    assert_eq!(scenario.pods[0].labels["app"], "web");
    assert_eq!(scenario.pods[0].listen.len(), 2);

    let web = scenario.service("web").unwrap();
    assert_eq!(web.service_type, ServiceType::NodePort);
    assert_eq!(web.cluster_ip, ip("10.3.0.50"));
    assert_eq!(web.ports[0].node_port, Some(30080));
    assert_eq!(web.ports[0].target_port, 8080);
    assert_eq!(web.affinity_timeout_ns, 10_800_000_000_000);

    assert_eq!(scenario.externals[0].ip, ip("172.16.9.9"));
    assert_eq!(scenario.firewall.rules.len(), 2);
    assert_eq!(
        scenario.firewall.rules[0].from,
        HostMatch::Role(Role::Master)
    );
    assert_eq!(scenario.firewall.rules[1].protocol, RuleProtocol::Udp);

    assert_eq!(scenario.traffic.len(), 3);
    assert_eq!(scenario.traffic[0].count, 10);
    assert_eq!(scenario.traffic[0].bytes, 100);
    assert_eq!(scenario.traffic[0].start_ns, 1_000_000_000);

    assert_eq!(scenario.faults.len(), 10);
    let FaultKind::PodAdd { pod } = &scenario.faults[9].kind else {
        panic!("last fault: {:?}", scenario.faults[9]);
    };
    assert_eq!(
        (pod.name.as_str(), pod.node.as_str()),
        ("web-9", "worker-1")
    );
    assert_eq!(pod.ip, ip("10.2.2.2"));
    assert_eq!(
        scenario.faults[6].kind,
        FaultKind::Partition {
            groups: vec![
                vec!["master".to_string(), "worker-0".to_string()],
                vec!["worker-1".to_string()]
            ]
        }
    );
    assert_eq!(scenario.expect.len(), 5);
    assert_eq!(
        scenario.expect[4].check,
        Check::Delivered {
            op: CompareOp::Equal,
            share: 0.0,
            reason: Some(DropReason::Firewall)
        }
    );
}

#[test]
fn the_shipped_quickstart_resolves_if_present() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/quickstart.yaml");
    if path.exists() {
        scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
    }
}

// ---- invalid input: each names the file, line and column of the offending value ----

#[test]
fn unreadable_file() {
    let error = scenario::load(Path::new("/nonexistent/podnet.yaml")).unwrap_err();
    assert_eq!(error.position, None);
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/podnet.yaml: cannot read"),
        "{error}"
    );
}

#[test]
fn yaml_syntax_error() {
    assert_rejected("name: x\nnodes: [{name: a}\n", "2:8", &["unclosed bracket"]);
    assert_rejected("name: x\n  seed: 2\n", "2:7", &[]);
}

#[test]
fn unknown_field() {
    assert_rejected("name: x\nsede: 4\n", "2:1", &["unknown field `sede`"]);
    assert_rejected(
        "name: x\nnodes:\n  - name: a\n    roles: master\n",
        "4:5",
        &["unknown field `roles`"],
    );
    assert_rejected(
        "name: x\nfaults:\n  - {at: 1s, kind: pod_add, pod: {name: a, nod: b}}\n",
        "3:44",
        &["unknown field `nod`"],
    );
}

#[test]
fn missing_name() {
    assert_rejected("seed: 3\n", "1:1", &["missing field `name`"]);
}

#[test]
fn unknown_word() {
    assert_rejected(
        "name: x\ncluster: {backend: vxlan2}\n",
        "2:20",
        &["vxlan2", "host-gw"],
    );
}

#[test]
fn bad_cidr() {
    assert_rejected(
        "name: x\ncluster:\n  pod_cidr: 10.2.0.0/33\n",
        "3:13",
        &["pod_cidr", "10.2.0.0/33"],
    );
    assert_rejected(
        "name: x\ncluster:\n  pod_cidr: 10.2.0.0\n",
        "3:13",
        &["not a CIDR"],
    );
    assert_rejected(
        "name: x\nunderlay: {cidr: 172.16.0.1/16}\n",
        "2:18",
        &["host bits", "172.16.0.0/16"],
    );
}

#[test]
fn bad_ip() {
    assert_rejected(
        "name: x\nnodes:\n  - {name: a, ip: 172.16.0.300}\n",
        "3:19",
        &["ip", "172.16.0.300", "not a valid IPv4 address"],
    );
    assert_rejected(
        "name: x\nnodes:\n  - {name: a, ip: 10.0.0.1}\n",
        "3:19",
        &["outside the underlay cidr 172.16.0.0/16"],
    );
}

#[test]
fn bad_duration() {
    assert_rejected(
        "name: x\nduration: 10 sec\n",
        "2:11",
        &["invalid duration", "10 sec"],
    );
    assert_rejected(
        "name: x\nunderlay:\n  latency: 5\n",
        "3:12",
        &["invalid duration", "unit"],
    );
}

#[test]
fn bad_rate() {
    assert_rejected(
        "name: x\nunderlay: {bandwidth: 10GB}\n",
        "2:23",
        &["invalid bandwidth", "10GB"],
    );
    assert_rejected(
        "name: x\nunderlay: {loss: 120%}\n",
        "2:18",
        &["invalid percentage", "120%"],
    );
    assert_rejected(
        "name: x\nnodes: [{name: n}]\npods: [{name: p}]\ntraffic: [{name: t, from: p, to: p, bytes: 10Mb}]\n",
        "4:44",
        &["invalid size", "10Mb"],
    );
}

#[test]
fn bad_port_range() {
    assert_rejected(
        "name: x\ncluster: {node_port_range: 32767-30000}\n",
        "2:28",
        &["port range", "above"],
    );
}

#[test]
fn pod_on_missing_node() {
    assert_rejected(
        "name: x\nnodes: [{name: worker-0}]\npods:\n  - name: web\n    node: worker-9\n",
        "5:11",
        &["no node named \"worker-9\""],
    );
}

#[test]
fn pod_ip_outside_its_node_subnet() {
    assert_rejected(
        "name: x\nnodes: [{name: a}, {name: b}]\npods:\n  - {name: p, node: a, ip: 10.2.2.5}\n",
        "4:28",
        &["10.2.2.5", "outside the subnet 10.2.1.0/24 of its node a"],
    );
    assert_rejected(
        "name: x\nnodes: [{name: a}]\npods:\n  - {name: p, node: a, ip: 10.2.1.1}\n",
        "4:28",
        &["reserved", "gateway"],
    );
    assert_rejected(
        "name: x\nnodes: [{name: a}]\npods:\n  - {name: p, ip: 10.9.1.1}\n",
        "4:19",
        &["in no node's pod subnet"],
    );
}

#[test]
fn node_subnet_outside_pod_cidr() {
    assert_rejected(
        "name: x\nnodes:\n  - {name: a, subnet: 10.9.1.0/24}\n",
        "3:23",
        &["outside pod_cidr 10.2.0.0/16"],
    );
}

#[test]
fn explicit_address_needs_count_one() {
    assert_rejected(
        "name: x\nnodes:\n  - {name: \"n-{i}\", count: 2, subnet: 10.2.5.0/24}\n",
        "3:39",
        &["subnet is only allowed for a single node", "count is 2"],
    );
    assert_rejected(
        "name: x\nnodes: [{name: n}]\npods:\n  - {name: \"p-{i}\", count: 3, ip: 10.2.1.9}\n",
        "4:35",
        &["ip is only allowed for a single pod"],
    );
}

#[test]
fn count_without_placeholder() {
    assert_rejected(
        "name: x\nnodes:\n  - {name: worker, count: 2}\n",
        "3:12",
        &["needs {i}"],
    );
}

#[test]
fn duplicate_names() {
    // Duplicates only visible after `{i}` expansion.
    assert_rejected(
        "name: x\nnodes:\n  - {name: \"worker-{i}\", count: 2}\n  - {name: worker-1}\n",
        "4:12",
        &["duplicate node name \"worker-1\"", "first at 3:12"],
    );
    assert_rejected(
        "name: x\nnodes: [{name: n}]\npods:\n  - {name: \"web-{i}\", count: 3}\n  - {name: web-2}\n",
        "5:12",
        &["duplicate pod name \"web-2\""],
    );
    assert_rejected(
        "name: x\nservices:\n  - {name: web}\n  - {name: web}\n",
        "4:12",
        &["duplicate service name \"web\""],
    );
    assert_rejected(
        "name: x\nexternals:\n  - {name: laptop}\n  - {name: laptop}\n",
        "4:12",
        &["duplicate external name \"laptop\""],
    );
    assert_rejected(
        "name: x\nnodes: [{name: n}]\npods: [{name: p}]\ntraffic:\n  - {name: t, from: p, to: p}\n  - {name: t, from: p, to: p}\n",
        "6:12",
        &["duplicate traffic name \"t\""],
    );
    // Nodes, pods and externals share one namespace.
    assert_rejected(
        "name: x\nnodes: [{name: a}]\nexternals:\n  - {name: a}\n",
        "4:12",
        &["duplicate name \"a\"", "node"],
    );
}

#[test]
fn duplicate_addresses() {
    assert_rejected(
        "name: x\nnodes:\n  - {name: a, ip: 172.16.0.9}\nexternals:\n  - {name: e, ip: 172.16.0.9}\n",
        "5:19",
        &["172.16.0.9", "already the address of node a"],
    );
    assert_rejected(
        "name: x\nservices:\n  - {name: a, cluster_ip: 10.3.0.7}\n  - {name: b, cluster_ip: 10.3.0.7}\n",
        "4:27",
        &["already the cluster IP of service a"],
    );
    assert_rejected(
        "name: x\nservices:\n  - {name: a, cluster_ip: 10.4.0.7}\n",
        "3:27",
        &["not a host address of service_cidr 10.3.0.0/24"],
    );
}

#[test]
fn traffic_from_missing() {
    let base = "name: x\nnodes: [{name: n}]\npods: [{name: p, listen: [{port: 80}]}]\nexternals: [{name: e}]\nservices: [{name: s, ports: [{port: 80}]}]\ntraffic:\n";
    assert_rejected(
        &format!("{base}  - {{name: t, from: q, to: p}}\n"),
        "7:21",
        &["no pod, external or node named \"q\""],
    );
    // A node's name alone means the node, as node:n does.
    let sc = parse(&format!("{base}  - {{name: t, from: n, to: p}}\n"));
    assert_eq!(sc.traffic[0].from, TrafficSource::Node("n".into()));
    assert_rejected(
        &format!("{base}  - {{name: t, from: \"node:m\", to: p}}\n"),
        "7:21",
        &["no node named \"m\""],
    );
}

#[test]
fn traffic_to_missing() {
    let base = "name: x\nnodes: [{name: n}]\npods: [{name: p, listen: [{port: 80}]}]\nexternals: [{name: e}]\nservices: [{name: s, ports: [{port: 80}]}]\ntraffic:\n";
    let cases = [
        ("q", "no pod named \"q\""),
        ("\"svc:t:80\"", "no service named \"t\""),
        ("\"svc:s:81\"", "service s has no port 81"),
        ("\"svc:s:http\"", "service s has no port http"),
        ("\"node:m:22\"", "no node named \"m\""),
        ("\"lb:s:80\"", "not of type LoadBalancer"),
        ("e", "no pod named \"e\""),
        ("10.2.1.300", "not a valid IPv4 address"),
    ];
    for (to, words) in cases {
        assert_rejected(
            &format!("{base}  - {{name: t, from: p, to: {to}, kind: tcp}}\n"),
            "7:28",
            &[words],
        );
    }
    assert_rejected(
        &format!("{base}  - {{name: t, from: p, to: \"svc:s:80\", kind: udp}}\n"),
        "7:28",
        &["port 80 of service s is tcp, but the traffic is udp"],
    );
    assert_rejected(
        &format!("{base}  - {{name: t, from: p, to: \"node:n\", kind: tcp}}\n"),
        "7:28",
        &["needs a port"],
    );
    assert_rejected(
        &format!("{base}  - {{name: t, from: p, to: p, kind: udp}}\n"),
        "7:28",
        &["listens on no udp port"],
    );
}

#[test]
fn expectation_naming_missing_traffic() {
    assert_rejected(
        "name: x\nnodes: [{name: n}]\npods: [{name: p}]\ntraffic: [{name: t, from: p, to: p}]\nexpect:\n  - {traffic: u, delivered: 100%}\n",
        "6:15",
        &["traffic \"u\"", "does not exist"],
    );
    assert_rejected(
        "name: x\nnodes: [{name: n}]\npods: [{name: p}]\ntraffic: [{name: t, from: p, to: p}]\nexpect:\n  - {traffic: t, delivered: most}\n",
        "6:29",
        &["invalid share", "most"],
    );
    assert_rejected(
        "name: x\nnodes: [{name: n}]\npods: [{name: p}]\ntraffic: [{name: t, from: p, to: p}]\nexpect:\n  - {traffic: t, reason: gremlins, delivered: 0%}\n",
        "6:26",
        &["gremlins", "no_route"],
    );
}

#[test]
fn fault_naming_missing_node_or_pod() {
    let base = "name: x\nnodes: [{name: n}]\npods: [{name: p}]\nfaults:\n";
    assert_rejected(
        &format!("{base}  - {{at: 1s, kind: link_down, node: m}}\n"),
        "5:37",
        &["no node named \"m\""],
    );
    assert_rejected(
        &format!("{base}  - {{at: 1s, kind: pod_delete, pod: q}}\n"),
        "5:37",
        &["no pod named \"q\""],
    );
    assert_rejected(
        &format!("{base}  - {{at: 1s, kind: pod_add, pod: {{name: q, node: m}}}}\n"),
        "5:50",
        &["no node named \"m\""],
    );
    assert_rejected(
        &format!("{base}  - {{at: 1s, kind: partition, groups: [[n], [z]]}}\n"),
        "5:46",
        &["no node or external named \"z\""],
    );
    assert_rejected(
        &format!("{base}  - {{at: 1s, kind: pod_delete, pod: p}}\n  - {{at: 2s, kind: pod_delete, pod: p}}\n"),
        "6:37",
        &["pod \"p\" does not exist at 2s"],
    );
    assert_rejected(
        &format!("{base}  - {{at: 1s, kind: pod_add, pod: {{name: p}}}}\n"),
        "5:41",
        &["pod \"p\" already exists at 1s"],
    );
}

#[test]
fn fault_fields_must_fit_the_kind() {
    let base = "name: x\nnodes: [{name: n}]\nfaults:\n";
    assert_rejected(
        &format!("{base}  - {{at: 1s, kind: link_down, node: n, loss: 5%}}\n"),
        "4:46",
        &["a link_down fault takes no loss"],
    );
    assert_rejected(
        &format!("{base}  - {{at: 1s, kind: loss, node: n}}\n"),
        "4:20",
        &["a loss fault needs loss"],
    );
    assert_rejected(
        &format!("{base}  - {{at: 1s, kind: explode}}\n"),
        "4:20",
        &["explode", "link_down"],
    );
}

#[test]
fn node_port_out_of_range() {
    assert_rejected(
        "name: x\nservices:\n  - name: web\n    type: NodePort\n    ports: [{port: 80, node_port: 8080}]\n",
        "5:35",
        &["node_port 8080 is outside node_port_range 30000-32767"],
    );
    assert_rejected(
        "name: x\nservices:\n  - name: web\n    ports: [{port: 80, node_port: 30080}]\n",
        "4:35",
        &["node_port needs type NodePort or LoadBalancer"],
    );
}

#[test]
fn more_nodes_than_subnets() {
    assert_rejected(
        "name: x\ncluster: {pod_cidr: 10.2.0.0/22}\nnodes:\n  - {name: \"n-{i}\", count: 4}\n",
        "4:12",
        &[
            "more nodes than pod_cidr 10.2.0.0/22 has /24 subnets",
            "n-3",
        ],
    );
}

#[test]
fn overlapping_explicit_subnets() {
    assert_rejected(
        "name: x\nnodes:\n  - {name: a, subnet: 10.2.8.0/22}\n  - {name: b, subnet: 10.2.9.0/24}\n",
        "4:23",
        &["subnet 10.2.9.0/24 of node b overlaps subnet 10.2.8.0/22 of node a at 3:23"],
    );
}

#[test]
fn bad_values_in_the_middle_of_a_document() {
    assert_rejected(
        "name: x\nunderlay: {mtu: 60}\n",
        "2:17",
        &["mtu 60", "vxlan"],
    );
    assert_rejected(
        "name: x\ncluster: {vxlan: {vni: 16777216}}\n",
        "2:24",
        &["24 bits"],
    );
    assert_rejected(
        "name: x\ncluster: {node_subnet_len: 8}\n",
        "2:28",
        &["node_subnet_len 8"],
    );
    assert_rejected(
        "name: x\nfirewall:\n  rules: [{action: allow, to: nobody}]\n",
        "3:31",
        &["\"nobody\" is not all, external, a role"],
    );
}

/// Wherever a node is meant, `NAME` and `node:NAME` name the same node: a pod's `node`,
/// firewall `to`/`from`, traffic `from`/`to`, a fault's `node` and partition groups.
#[test]
fn node_and_node_prefix_both_name_a_node() {
    let plain = parse(
        "name: t\nnodes:\n  - {name: master, role: master}\n  - {name: worker-0}\n\
         pods:\n  - {name: w, node: worker-0, listen: [{port: 80}]}\n\
         firewall:\n  rules:\n    - {action: deny, to: worker-0, from: master}\n\
         traffic:\n  - {name: t, from: master, to: w}\n  - {name: u, from: worker-0, to: \"master:30000\", kind: tcp}\n\
         faults:\n  - {at: 1s, kind: link_down, node: worker-0}\n  - {at: 2s, kind: partition, groups: [[master], [worker-0]]}\n",
    );
    let prefixed = parse(
        "name: t\nnodes:\n  - {name: master, role: master}\n  - {name: worker-0}\n\
         pods:\n  - {name: w, node: \"node:worker-0\", listen: [{port: 80}]}\n\
         firewall:\n  rules:\n    - {action: deny, to: \"node:worker-0\", from: \"node:master\"}\n\
         traffic:\n  - {name: t, from: \"node:master\", to: w}\n  - {name: u, from: \"node:worker-0\", to: \"node:master:30000\", kind: tcp}\n\
         faults:\n  - {at: 1s, kind: link_down, node: \"node:worker-0\"}\n  - {at: 2s, kind: partition, groups: [[\"node:master\"], [\"node:worker-0\"]]}\n",
    );
    assert_eq!(plain.pods, prefixed.pods);
    assert_eq!(plain.traffic, prefixed.traffic);
    assert_eq!(plain.faults, prefixed.faults);
    assert_eq!(plain.firewall.rules[0].to, prefixed.firewall.rules[0].to);
    assert_eq!(
        plain.firewall.rules[0].to,
        HostMatch::Node("worker-0".into())
    );
    // `node:master` is the node even where the bare word is the role.
    assert_eq!(
        prefixed.firewall.rules[0].from,
        HostMatch::Node("master".into())
    );
    assert_eq!(plain.firewall.rules[0].from, HostMatch::Role(Role::Master));
    assert_eq!(plain.traffic[0].from, TrafficSource::Node("master".into()));
    assert_eq!(
        plain.traffic[1].to,
        TrafficTarget::Node {
            name: "master".into(),
            port: Some(30000)
        }
    );
    assert_eq!(plain.pods[0].node, "worker-0");
    assert_rejected(
        "name: t\nnodes: [{name: n}]\nfirewall:\n  rules:\n    - {action: deny, to: \"node:m\"}\n",
        "5:26",
        &["no node named \"m\""],
    );
}

/// Firewall `ports:` takes a number, a range or a list of either.
#[test]
fn firewall_ports_number_range_or_list() {
    let sc = parse(
        "name: t\nnodes: [{name: n}]\nfirewall:\n  rules:\n\
         \x20   - {action: deny, protocol: udp, ports: 8472}\n\
         \x20   - {action: deny, protocol: tcp, ports: 30000-32767}\n\
         \x20   - {action: deny, protocol: tcp, ports: [22, \"10250-10252\", 2379]}\n",
    );
    let ports = |i: usize| -> Vec<(u16, u16)> {
        sc.firewall.rules[i]
            .ports
            .as_deref()
            .unwrap()
            .iter()
            .map(|r| (r.first, r.last))
            .collect()
    };
    assert_eq!(ports(0), [(8472, 8472)]);
    assert_eq!(ports(1), [(30000, 32767)]);
    assert_eq!(ports(2), [(22, 22), (10250, 10252), (2379, 2379)]);
    assert_rejected(
        "name: t\nfirewall:\n  rules:\n    - {action: deny, ports: [22, http]}\n",
        "4:29",
        &["ports: expected a port", "or a list of them"],
    );
    assert_rejected(
        "name: t\nfirewall:\n  rules:\n    - {action: deny, ports: []}\n",
        "4:29",
        &["empty list"],
    );
}

/// An unquoted `{i}` inside a flow mapping is a YAML syntax error; the message says to
/// quote the name.
#[test]
fn unquoted_index_in_flow_mapping_says_quote_it() {
    for (yaml, at) in [
        ("name: t\nnodes:\n  - {name: api-{i}, count: 4}\n", "3:16"),
        ("name: t\nnodes: [{name: api-{i}, count: 2}]\n", "2:20"),
    ] {
        assert_rejected(yaml, at, &["must be quoted", "'web-{i}'"]);
    }
    // The quoted form is fine, and the block form needs no quotes.
    let sc = parse("name: t\nnodes:\n  - {name: 'api-{i}', count: 2}\n");
    assert_eq!(names(sc.nodes.iter().map(|n| &n.name)), ["api-0", "api-1"]);
    let sc = parse("name: t\nnodes:\n  - name: api-{i}\n    count: 2\n");
    assert_eq!(sc.nodes.len(), 2);
    // Other flow-mapping errors get no such hint.
    let error = scenario::parse("t.yaml", "name: t\nnodes:\n  - {name: a b: c}\n");
    assert!(!error.unwrap_err().to_string().contains("quoted"));
}

/// A missing `name:` is reported at line 1, where it belongs, not where parsing stopped.
#[test]
fn missing_name_at_line_1() {
    assert_rejected(
        "seed: 3\nnodes:\n  - name: a\n  - name: b\n",
        "1:1",
        &["missing field `name`"],
    );
}

//! One table test per rule of the semantics, each on the smallest cluster that shows it.

use super::*;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, last)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(last: u8, ns: &str, l: &[(&str, &str)]) -> PodView {
    PodView {
        ip: ip(last),
        namespace: ns.to_string(),
        labels: labels(l),
        ports: Vec::new(),
    }
}

fn sel(l: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(l),
        match_expressions: Vec::new(),
    }
}

fn tcp(src: u8, dst: u8, port: u16) -> FlowKey {
    FlowKey {
        proto: PROTO_TCP,
        src: ip(src),
        dst: ip(dst),
        dport: port,
    }
}

fn from_pods(pods: Option<LabelSelector>, namespaces: Option<LabelSelector>) -> Rule {
    Rule {
        peers: vec![Peer::Pods { pods, namespaces }],
        ports: Vec::new(),
    }
}

/// Pods a (.2), b (.3) in `x`; c (.4) in `y` (label team=y on the namespace).
fn cluster() -> ClusterView {
    ClusterView {
        namespaces: vec![NamespaceView {
            name: "y".into(),
            labels: labels(&[("team", "y")]),
        }],
        pods: vec![
            pod(2, "x", &[("pod", "a")]),
            pod(3, "x", &[("pod", "b")]),
            pod(4, "y", &[("pod", "c")]),
        ],
    }
}

fn table(policies: &[NetworkPolicy]) -> PolicyTable {
    PolicyTable::compile(&cluster(), policies, |_| true)
}

#[test]
fn no_policy_isolates_nothing() {
    let t = table(&[]);
    assert!(t.isolates_nothing() && !t.is_off());
    assert!(PolicyTable::default().is_off());
    assert_eq!(t.check(&tcp(2, 3, 80)), Ok(()));
}

#[test]
fn a_selecting_policy_isolates_for_ingress_only_by_default() {
    let p = NetworkPolicy::new("x", "deny-a", sel(&[("pod", "a")]));
    let t = table(&[p]);
    let denied = t.check(&tcp(3, 2, 80)).unwrap_err();
    assert_eq!(denied.direction, Direction::Ingress);
    assert_eq!(t.denial_name(&denied), "x/deny-a");
    // a's egress is not isolated; b is not selected.
    assert_eq!(t.check(&tcp(2, 3, 80)), Ok(()));
    assert_eq!(t.stats()[0].denied(), 1);
}

#[test]
fn a_policy_of_another_namespace_selects_nothing() {
    let p = NetworkPolicy::new("y", "deny", LabelSelector::default());
    let t = table(&[p]);
    assert_eq!(t.check(&tcp(3, 2, 80)), Ok(()));
    assert!(t.check(&tcp(2, 4, 80)).is_err());
}

#[test]
fn egress_rules_default_the_egress_type() {
    let mut p = NetworkPolicy::new("x", "a-out", sel(&[("pod", "a")]));
    p.egress = vec![from_pods(Some(sel(&[("pod", "b")])), None)];
    assert!(p.has_type(Direction::Ingress) && p.has_type(Direction::Egress));
    let t = table(&[p.clone()]);
    assert_eq!(t.check(&tcp(2, 3, 80)), Ok(()));
    assert_eq!(
        t.check(&tcp(2, 4, 80)).unwrap_err().direction,
        Direction::Egress
    );
    // Ingress is isolated too (no ingress rules): nothing reaches a.
    assert!(t.check(&tcp(3, 2, 80)).is_err());
    // policyTypes [Egress] only: ingress stays open.
    p.policy_types = Some(vec![Direction::Egress]);
    let t = table(&[p]);
    assert_eq!(t.check(&tcp(3, 2, 80)), Ok(()));
}

#[test]
fn the_union_of_selecting_policies_allows() {
    let mut from_b = NetworkPolicy::new("x", "from-b", sel(&[("pod", "a")]));
    from_b.ingress = vec![from_pods(Some(sel(&[("pod", "b")])), None)];
    let mut from_y = NetworkPolicy::new("x", "from-y", sel(&[("pod", "a")]));
    from_y.ingress = vec![from_pods(None, Some(sel(&[("team", "y")])))];
    let t = table(&[from_b, from_y]);
    assert_eq!(t.check(&tcp(3, 2, 80)), Ok(()));
    assert_eq!(t.check(&tcp(4, 2, 80)), Ok(()));
    assert_eq!(t.stats()[0].allowed(), 1);
    assert_eq!(t.stats()[1].allowed(), 1);
    // A peer neither allows: named default-deny, since two policies isolate a.
    let t2 = PolicyTable::compile(
        &ClusterView {
            pods: {
                let mut c = cluster().pods;
                c.push(pod(5, "z", &[]));
                c
            },
            ..cluster()
        },
        &[t_policy("from-b", "b"), t_policy("also-b", "b")],
        |_| true,
    );
    let d = t2.check(&tcp(5, 2, 80)).unwrap_err();
    assert_eq!(t2.denial_name(&d), "default-deny");
    // Each policy isolating a counts the refusal.
    assert_eq!((t2.stats()[0].denied(), t2.stats()[1].denied()), (1, 1));
    // A dry run judges alike and counts nothing.
    assert_eq!(t2.check_uncounted(&tcp(5, 2, 80)), Err(d));
    assert!(t2.check_uncounted(&tcp(3, 2, 80)).is_ok());
    assert_eq!((t2.stats()[0].denied(), t2.stats()[0].allowed()), (1, 0));
}

fn t_policy(name: &str, peer: &str) -> NetworkPolicy {
    let mut p = NetworkPolicy::new("x", name, sel(&[("pod", "a")]));
    p.ingress = vec![from_pods(Some(sel(&[("pod", peer)])), None)];
    p
}

#[test]
fn a_connection_needs_both_egress_and_ingress() {
    let mut a_out = NetworkPolicy::new("x", "a-out", sel(&[("pod", "a")]));
    a_out.policy_types = Some(vec![Direction::Egress]);
    a_out.egress = vec![Rule::default()];
    let b_in = NetworkPolicy::new("x", "b-in", sel(&[("pod", "b")]));
    let t = table(&[a_out, b_in]);
    let d = t.check(&tcp(2, 3, 80)).unwrap_err();
    assert_eq!(d.direction, Direction::Ingress);
    assert_eq!(t.denial_name(&d), "x/b-in");
}

#[test]
fn pod_and_namespace_selectors_together_are_and() {
    let mut p = NetworkPolicy::new("x", "p", sel(&[("pod", "a")]));
    p.ingress = vec![from_pods(
        Some(sel(&[("pod", "b")])),
        Some(sel(&[("team", "y")])),
    )];
    let t = table(&[p]);
    // b is in x (not team=y), c is team=y but not pod=b.
    assert!(t.check(&tcp(3, 2, 80)).is_err());
    assert!(t.check(&tcp(4, 2, 80)).is_err());
    // Two separate peers would be OR.
    let mut q = NetworkPolicy::new("x", "q", sel(&[("pod", "a")]));
    q.ingress = vec![Rule {
        peers: vec![
            Peer::Pods {
                pods: Some(sel(&[("pod", "b")])),
                namespaces: None,
            },
            Peer::Pods {
                pods: None,
                namespaces: Some(sel(&[("team", "y")])),
            },
        ],
        ports: Vec::new(),
    }];
    let t = table(&[q]);
    assert_eq!(t.check(&tcp(3, 2, 80)), Ok(()));
    assert_eq!(t.check(&tcp(4, 2, 80)), Ok(()));
}

#[test]
fn namespaces_carry_their_name_label() {
    let mut p = NetworkPolicy::new("x", "p", sel(&[("pod", "a")]));
    p.ingress = vec![from_pods(None, Some(sel(&[(NAMESPACE_NAME_LABEL, "y")])))];
    let t = table(&[p]);
    assert_eq!(t.check(&tcp(4, 2, 80)), Ok(()));
    assert!(t.check(&tcp(3, 2, 80)).is_err());
}

#[test]
fn match_expressions_in_notin_exists_doesnotexist() {
    let l = labels(&[("pod", "a"), ("tier", "web")]);
    let req = |key: &str, operator, values: &[&str]| LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }],
    };
    assert!(req("pod", Operator::In, &["a", "b"]).matches(&l));
    assert!(!req("pod", Operator::In, &["b"]).matches(&l));
    assert!(!req("pod", Operator::NotIn, &["a"]).matches(&l));
    assert!(req("nope", Operator::NotIn, &["a"]).matches(&l));
    assert!(req("tier", Operator::Exists, &[]).matches(&l));
    assert!(!req("tier", Operator::DoesNotExist, &[]).matches(&l));
    assert!(req("nope", Operator::DoesNotExist, &[]).matches(&l));
    assert!(LabelSelector::default().matches(&l));
}

#[test]
fn ip_block_with_except_matches_pod_ips_too() {
    let mut p = NetworkPolicy::new("x", "p", sel(&[("pod", "a")]));
    p.ingress = vec![Rule {
        peers: vec![Peer::IpBlock {
            cidr: "10.0.1.0/29".parse().unwrap(),
            except: vec!["10.0.1.4/32".parse().unwrap()],
        }],
        ports: Vec::new(),
    }];
    let t = table(&[p]);
    assert_eq!(t.check(&tcp(3, 2, 80)), Ok(()));
    assert!(t.check(&tcp(4, 2, 80)).is_err());
    assert!(t.check(&tcp(9, 2, 80)).is_err());
}

#[test]
fn ports_by_number_range_protocol_and_name() {
    let mut c = cluster();
    c.pods[0].ports = vec![NamedPort {
        name: "http".into(),
        protocol: PROTO_TCP,
        port: 8080,
    }];
    let port = |protocol, port, end_port| PolicyPort {
        protocol,
        port,
        end_port,
    };
    let mut p = NetworkPolicy::new("x", "p", sel(&[("pod", "a")]));
    p.ingress = vec![Rule {
        peers: Vec::new(),
        ports: vec![
            port(PROTO_TCP, Some(PortSpec::Number(80)), None),
            port(PROTO_UDP, Some(PortSpec::Number(9000)), Some(9100)),
            port(PROTO_TCP, Some(PortSpec::Name("http".into())), None),
        ],
    }];
    let t = PolicyTable::compile(&c, &[p], |_| true);
    let udp = |port| FlowKey {
        proto: PROTO_UDP,
        ..tcp(3, 2, port)
    };
    assert_eq!(t.check(&tcp(3, 2, 80)), Ok(()));
    assert!(t.check(&tcp(3, 2, 81)).is_err());
    assert_eq!(t.check(&udp(9050)), Ok(()));
    assert!(t.check(&udp(80)).is_err());
    assert!(t.check(&tcp(3, 2, 9050)).is_err());
    assert_eq!(t.check(&tcp(3, 2, 8080)), Ok(()));
    // ICMP has no port: a rule with ports never allows it.
    let ping = FlowKey {
        proto: 1,
        dport: 0,
        ..tcp(3, 2, 0)
    };
    assert!(t.check(&ping).is_err());
}

#[test]
fn egress_named_ports_resolve_at_the_destination() {
    let mut c = cluster();
    c.pods[1].ports = vec![NamedPort {
        name: "http".into(),
        protocol: PROTO_TCP,
        port: 8080,
    }];
    let mut p = NetworkPolicy::new("x", "p", sel(&[("pod", "a")]));
    p.policy_types = Some(vec![Direction::Egress]);
    p.egress = vec![Rule {
        peers: Vec::new(),
        ports: vec![PolicyPort {
            protocol: PROTO_TCP,
            port: Some(PortSpec::Name("http".into())),
            end_port: None,
        }],
    }];
    let t = PolicyTable::compile(&c, &[p], |_| true);
    assert_eq!(t.check(&tcp(2, 3, 8080)), Ok(()));
    assert!(t.check(&tcp(2, 4, 8080)).is_err());
}

#[test]
fn an_ingress_name_the_pod_lacks_allows_nothing() {
    let mut p = NetworkPolicy::new("x", "p", sel(&[("pod", "a")]));
    p.ingress = vec![Rule {
        peers: Vec::new(),
        ports: vec![PolicyPort {
            protocol: PROTO_TCP,
            port: Some(PortSpec::Name("nope".into())),
            end_port: None,
        }],
    }];
    let t = table(&[p]);
    assert!(t.check(&tcp(3, 2, 80)).is_err());
}

#[test]
fn a_node_enforces_for_its_own_pods_only() {
    let p = NetworkPolicy::new("x", "deny-all", LabelSelector::default());
    // This node runs only b (.3): a's ingress is a's node's business.
    let t = PolicyTable::compile(&cluster(), &[p], |a| a == ip(3));
    assert_eq!(t.check(&tcp(3, 2, 80)), Ok(()));
    assert!(t.check(&tcp(2, 3, 80)).is_err());
    assert_eq!(t.stats()[0].selected, 1);
}

#[test]
fn an_empty_rule_allows_everything() {
    let mut p = NetworkPolicy::new("x", "all", sel(&[("pod", "a")]));
    p.ingress = vec![Rule::default()];
    let t = table(&[p]);
    assert_eq!(t.check(&tcp(4, 2, 80)), Ok(()));
    assert!(!t.isolates_nothing());
}

//! Required flows against the firewall: the guide's table expanded into one flow per
//! receiving node and sender, each held against the scenario's firewall by
//! [`firewall_rule`], the function the simulated underlay filters with.
//!
//! A port range is checked exactly without trying each port: a rule's verdict can change
//! only where some rule's range starts or ends, so one port per piece between those edges
//! stands for the piece.
//!
//! Senders outside the cluster are the scenario's externals; a scenario with none is
//! checked with one notional external host (named `external`), which rules for `all` and
//! `external` match, since a cluster always has clients outside it.
//!
//! A scenario may block a flow on purpose to show what happens (scenarios/
//! firewall-blocks-overlay.yaml). When an expectation says traffic between the same two
//! hosts fails with reason `firewall`, the blocked flow is what the scenario demonstrates:
//! a warning, not an error.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::table::{required, Plan, Requirement, Source};
use super::{Finding, Kind, Severity};
use crate::scenario::{
    Action, Check, DropReason, FaultKind, FirewallRule, HostMatch, PortRange, Protocol,
    RuleProtocol, Scenario, Traffic, TrafficSource, TrafficTarget,
};
use crate::underlay::{firewall_rule, Flow, Member, MemberKind};

/// The name of the notional external host of a scenario that declares none.
const NOTIONAL_EXTERNAL: &str = "external";

/// Every required flow the firewall blocks, one finding each.
pub(super) fn blocked(scenario: &Scenario) -> Vec<Finding> {
    let nodes: Vec<Member> = scenario
        .nodes
        .iter()
        .map(|node| {
            let kind = MemberKind::Node { role: node.role };
            Member::new(&node.name, node.ip, kind, &scenario.underlay)
        })
        .collect();
    let mut externals: Vec<Member> = scenario
        .externals
        .iter()
        .map(|external| {
            Member::new(
                &external.name,
                external.ip,
                MemberKind::External,
                &scenario.underlay,
            )
        })
        .collect();
    if externals.is_empty() {
        externals.push(Member::new(
            NOTIONAL_EXTERNAL,
            Ipv4Addr::UNSPECIFIED,
            MemberKind::External,
            &scenario.underlay,
        ));
    }
    let expected = expected_blocks(scenario);
    let mut findings = Vec::new();
    for requirement in required(&Plan::of(scenario)) {
        for to in nodes
            .iter()
            .filter(|node| role(node) == Some(requirement.role))
        {
            let senders = nodes
                .iter()
                .chain(&externals)
                .filter(|from| from.name != to.name)
                .filter(|from| requirement.from.iter().any(|source| sends(source, from)));
            for from in senders {
                for (ports, rule) in blocked_ports(scenario, from, to, &requirement) {
                    let pair = pair(&to.name, &from.name);
                    let expected_by = expected
                        .iter()
                        .find(|(_, hosts)| *hosts == pair)
                        .map(|(traffic, _)| traffic.as_str());
                    findings.push(finding(
                        scenario,
                        &requirement,
                        (to, from),
                        ports,
                        rule,
                        expected_by,
                    ));
                }
            }
        }
    }
    findings
}

fn role(member: &Member) -> Option<crate::scenario::Role> {
    match member.kind {
        MemberKind::Node { role } => Some(role),
        MemberKind::External => None,
    }
}

fn sends(source: &Source, member: &Member) -> bool {
    match (source, &member.kind) {
        (Source::Role(wanted), MemberKind::Node { role }) => wanted == role,
        (Source::Nodes, MemberKind::Node { .. }) => true,
        (Source::Externals, MemberKind::External) => true,
        _ => false,
    }
}

/// The pieces of the requirement's ports that the firewall blocks from `from` into `to`,
/// each with the rule that blocks it (`None`: the default).
fn blocked_ports(
    scenario: &Scenario,
    from: &Member,
    to: &Member,
    requirement: &Requirement,
) -> Vec<(PortRange, Option<usize>)> {
    let firewall = &scenario.firewall;
    let wanted = requirement.ports;
    let mut edges: BTreeSet<u32> = BTreeSet::from([u32::from(wanted.first)]);
    for rule in &firewall.rules {
        for range in rule.ports.iter().flatten() {
            edges.insert(u32::from(range.first));
            edges.insert(u32::from(range.last) + 1);
        }
    }
    let end = u32::from(wanted.last) + 1;
    let edges: Vec<u32> = edges
        .into_iter()
        .filter(|&edge| edge >= u32::from(wanted.first) && edge < end)
        .chain([end])
        .collect();
    let protocol = match requirement.protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    };
    let mut blocked: Vec<(PortRange, Option<usize>)> = Vec::new();
    for piece in edges.windows(2) {
        // Both ends lie inside `wanted`, a range of u16 ports.
        let (Ok(first), Ok(last)) = (u16::try_from(piece[0]), u16::try_from(piece[1] - 1)) else {
            continue;
        };
        let flow = Flow {
            protocol,
            dst_port: Some(first),
        };
        let rule = firewall_rule(firewall, from, to, flow);
        let action = rule.map_or(firewall.default, |index| firewall.rules[index].action);
        if action == Action::Allow {
            continue;
        }
        match blocked.last_mut() {
            Some((range, previous)) if *previous == rule && range.last + 1 == first => {
                range.last = last;
            }
            _ => blocked.push((PortRange { first, last }, rule)),
        }
    }
    blocked
}

fn finding(
    scenario: &Scenario,
    requirement: &Requirement,
    (to, from): (&Member, &Member),
    ports: PortRange,
    rule: Option<usize>,
    expected_by: Option<&str>,
) -> Finding {
    let protocol = requirement.protocol.as_str();
    let blocker = match rule {
        Some(index) => format!(
            "blocked by firewall rule {} ({})",
            index + 1,
            describe(&scenario.firewall.rules[index])
        ),
        None => "blocked by the firewall's default (deny; no rule allows it)".to_string(),
    };
    let mut message = format!(
        "{} <- {} {protocol}/{ports} ({}): {blocker}",
        to.name, from.name, requirement.purpose
    );
    let allow = format!(
        "{{action: allow, to: {}, from: {}, protocol: {protocol}, ports: {}}}",
        word(to),
        word(from),
        yaml_ports(ports)
    );
    let mut fix = match rule {
        Some(index) => format!("add {allow} before rule {}", index + 1),
        None => format!("add {allow} to firewall.rules"),
    };
    let severity = match expected_by {
        Some(traffic) => {
            message.push_str(&format!(
                "; expected: traffic {traffic} is to fail with reason firewall"
            ));
            fix = format!("nothing if the block is what the scenario shows; otherwise {fix}");
            Severity::Warning
        }
        None => Severity::Error,
    };
    Finding {
        severity,
        kind: Kind::BlockedPort,
        message,
        fix,
        nodes: vec![to.name.clone(), from.name.clone()],
        protocol: Some(protocol),
        port: Some(ports),
        rule: rule.map(|index| index + 1),
    }
}

/// How a rule names a host in a fix: the role, or `external`.
fn word(member: &Member) -> &'static str {
    match member.kind {
        MemberKind::Node { role } => role.as_str(),
        MemberKind::External => "external",
    }
}

/// Ports as a rule's `ports:` takes them: a range quoted, for YAML.
fn yaml_ports(ports: PortRange) -> String {
    if ports.first == ports.last {
        ports.to_string()
    } else {
        format!("\"{ports}\"")
    }
}

/// A rule in words, e.g. `deny tcp 10000-11000 to worker from master`.
pub(crate) fn describe(rule: &FirewallRule) -> String {
    let action = match rule.action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    };
    let protocol = match rule.protocol {
        RuleProtocol::All => "all",
        RuleProtocol::Tcp => "tcp",
        RuleProtocol::Udp => "udp",
        RuleProtocol::Icmp => "icmp",
    };
    let mut words = format!("{action} {protocol}");
    let ports: Vec<String> = rule
        .ports
        .iter()
        .flatten()
        .map(|range| range.to_string())
        .collect();
    if !ports.is_empty() {
        words.push(' ');
        words.push_str(&ports.join(","));
    }
    words.push_str(&format!(" to {}", host_words(&rule.to)));
    if rule.from != HostMatch::All {
        words.push_str(&format!(" from {}", host_words(&rule.from)));
    }
    words
}

fn host_words(host: &HostMatch) -> &str {
    match host {
        HostMatch::All => "all",
        HostMatch::AnyExternal => "external",
        HostMatch::Role(role) => role.as_str(),
        HostMatch::Node(name) | HostMatch::External(name) => name,
    }
}

/// Two host names in a fixed order, for matching a flow with traffic either way.
pub(super) fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// Host pairs between which an expectation says traffic fails with reason firewall, with
/// the traffic's name.
fn expected_blocks(scenario: &Scenario) -> Vec<(String, (String, String))> {
    let mut pairs = Vec::new();
    for expectation in &scenario.expect {
        let Check::Delivered {
            reason: Some(DropReason::Firewall),
            ..
        } = expectation.check
        else {
            continue;
        };
        let Some(traffic) = scenario
            .traffic
            .iter()
            .find(|traffic| traffic.name == expectation.traffic)
        else {
            continue;
        };
        let (Some(source), targets) = ends(scenario, traffic) else {
            continue;
        };
        for target in targets {
            pairs.push((traffic.name.clone(), pair(&source, &target)));
        }
    }
    pairs
}

/// The underlay hosts a traffic runs between: the host its source sits on, and those its
/// requests may reach (a service's: the nodes of its endpoints).
pub(super) fn ends(scenario: &Scenario, traffic: &Traffic) -> (Option<String>, Vec<String>) {
    let source = match &traffic.from {
        TrafficSource::Pod(name) => pod_node(scenario, name),
        TrafficSource::External(name) | TrafficSource::Node(name) => Some(name.clone()),
    };
    let targets = match &traffic.to {
        TrafficTarget::Pod { name, .. } => pod_node(scenario, name).into_iter().collect(),
        TrafficTarget::Node { name, .. } => vec![name.clone()],
        TrafficTarget::Service { name, .. } | TrafficTarget::Lb { name, .. } => {
            let mut nodes: Vec<String> = scenario
                .service(name)
                .filter(|service| !service.selector.is_empty())
                .map(|service| {
                    scenario
                        .pods
                        .iter()
                        .filter(|pod| {
                            service
                                .selector
                                .iter()
                                .all(|(key, value)| pod.labels.get(key) == Some(value))
                        })
                        .map(|pod| pod.node.clone())
                        .collect()
                })
                .unwrap_or_default();
            nodes.sort();
            nodes.dedup();
            nodes
        }
        TrafficTarget::Ip { addr, .. } => scenario
            .nodes
            .iter()
            .filter(|node| node.ip == *addr || node.subnet.contains(*addr))
            .map(|node| node.name.clone())
            .chain(
                scenario
                    .externals
                    .iter()
                    .filter(|external| external.ip == *addr)
                    .map(|external| external.name.clone()),
            )
            .collect(),
    };
    (source, targets)
}

/// The node a pod runs on, whether present from the start or added by a fault.
fn pod_node(scenario: &Scenario, name: &str) -> Option<String> {
    scenario
        .pods
        .iter()
        .chain(
            scenario
                .faults
                .iter()
                .filter_map(|fault| match &fault.kind {
                    FaultKind::PodAdd { pod } => Some(pod),
                    _ => None,
                }),
        )
        .find(|pod| pod.name == name)
        .map(|pod| pod.node.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(firewall: &str) -> Vec<Finding> {
        let text = format!(
            "name: x\nnodes:\n  - {{name: m, role: master}}\n  - {{name: w}}\nfirewall:\n{firewall}"
        );
        blocked(&crate::scenario::parse_plan("x.yaml", &text).unwrap())
    }

    #[test]
    fn a_range_splits_where_rules_start_and_end() {
        let found = findings(
            "  rules:\n    - {action: allow, to: worker, protocol: tcp, ports: \"30000-30100\"}\n    - {action: deny, to: worker, protocol: tcp, ports: \"10250-31000\"}\n",
        );
        let pieces: Vec<(String, Option<usize>)> = found
            .iter()
            .map(|f| (format!("{}", f.port.unwrap()), f.rule))
            .collect();
        // 10250 from m, 10255 from m, 30101-31000 from the notional external; 31001-32767
        // falls to the default allow.
        assert_eq!(
            pieces,
            [
                ("10250".to_string(), Some(2)),
                ("10255".to_string(), Some(2)),
                ("30101-31000".to_string(), Some(2)),
            ]
        );
        assert_eq!(found[2].nodes, ["w", "external"]);
    }

    #[test]
    fn the_default_deny_blocks_what_no_rule_allows() {
        let found = findings("  default: deny\n  rules:\n    - {action: allow, protocol: udp}\n");
        let flows: Vec<(String, String, Option<usize>)> = found
            .iter()
            .map(|f| (f.nodes.join("<-"), format!("{}", f.port.unwrap()), f.rule))
            .collect();
        assert_eq!(
            flows,
            [
                ("m<-w".to_string(), "443".to_string(), None),
                ("m<-external".to_string(), "443".to_string(), None),
                ("w<-m".to_string(), "10250".to_string(), None),
                ("w<-m".to_string(), "10255".to_string(), None),
                ("w<-external".to_string(), "30000-32767".to_string(), None),
            ]
        );
    }

    #[test]
    fn rules_read_back_as_written() {
        let scenario = crate::scenario::parse_plan(
            "x.yaml",
            "name: x\nnodes: [{name: w}]\nfirewall:\n  rules:\n    - {action: deny, to: w, from: external, protocol: tcp, ports: \"1-9\"}\n    - {action: allow}\n",
        )
        .unwrap();
        let rules = &scenario.firewall.rules;
        assert_eq!(describe(&rules[0]), "deny tcp 1-9 to w from external");
        assert_eq!(describe(&rules[1]), "allow all to all");
    }
}

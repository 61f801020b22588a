//! The faults a user gives during a session (what-if), and the `faults:` snippet that
//! makes a scenario of them: the same entries, in the scenario format, at the simulated
//! times they were given.

use std::fmt::Write;

use podnet_sim::scenario::units::format_duration;
use podnet_sim::scenario::{FaultKind, Pod, Protocol};

/// One fault the user gave.
#[derive(Clone, Debug, PartialEq)]
pub struct UserFault {
    pub at_ns: u64,
    pub kind: FaultKind,
}

impl UserFault {
    /// In words, for the events pane: `node_crash node-b`.
    pub fn describe(&self) -> String {
        match &self.kind {
            FaultKind::LinkDown { node } => format!("link_down {node}"),
            FaultKind::LinkUp { node } => format!("link_up {node}"),
            FaultKind::NodeCrash { node } => format!("node_crash {node}"),
            FaultKind::NodeRestart { node } => format!("node_restart {node}"),
            FaultKind::Loss { node, loss } => format!("loss {node} {}%", loss * 100.0),
            FaultKind::Latency { node, latency_ns } => {
                format!("latency {node} {}", format_duration(*latency_ns))
            }
            FaultKind::Partition { groups } => format!("partition {groups:?}"),
            FaultKind::Heal => "heal".to_string(),
            FaultKind::PodDelete { pod } => format!("pod_delete {pod} (endpoint removed)"),
            FaultKind::PodAdd { pod } => format!("pod_add {} (endpoint restored)", pod.name),
            FaultKind::PodLabel { pod, labels } => format!("pod_label {pod} {labels:?}"),
            FaultKind::PolicyAdd { policy } => format!("policy_add {}", policy.key()),
            FaultKind::PolicyDelete { policy } => format!("policy_delete {policy}"),
        }
    }

    /// One entry of a scenario's `faults:` list, as a YAML flow mapping.
    pub fn yaml(&self) -> String {
        let at = seconds(self.at_ns);
        let node =
            |kind: &str, node: &str| format!("{{at: {at}, kind: {kind}, node: {}}}", quote(node));
        match &self.kind {
            FaultKind::LinkDown { node: n } => node("link_down", n),
            FaultKind::LinkUp { node: n } => node("link_up", n),
            FaultKind::NodeCrash { node: n } => node("node_crash", n),
            FaultKind::NodeRestart { node: n } => node("node_restart", n),
            FaultKind::Loss { node, loss } => format!(
                "{{at: {at}, kind: loss, node: {}, loss: {}%}}",
                quote(node),
                loss * 100.0
            ),
            FaultKind::Latency { node, latency_ns } => format!(
                "{{at: {at}, kind: latency, node: {}, latency: {}}}",
                quote(node),
                format_duration(*latency_ns)
            ),
            FaultKind::Partition { groups } => {
                let groups: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let names: Vec<String> = g.iter().map(|n| quote(n)).collect();
                        format!("[{}]", names.join(", "))
                    })
                    .collect();
                format!(
                    "{{at: {at}, kind: partition, groups: [{}]}}",
                    groups.join(", ")
                )
            }
            FaultKind::Heal => format!("{{at: {at}, kind: heal}}"),
            FaultKind::PodLabel { pod, labels } => {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
                    .collect();
                format!(
                    "{{at: {at}, kind: pod_label, pod: {}, labels: {{{}}}}}",
                    quote(pod),
                    labels.join(", ")
                )
            }
            FaultKind::PolicyDelete { policy } => {
                format!(
                    "{{at: {at}, kind: policy_delete, policy: {}}}",
                    quote(policy)
                )
            }
            // The TUI makes no policies; one from the scenario is already in its file.
            FaultKind::PolicyAdd { policy } => {
                format!(
                    "# {at}: policy_add {} (see the scenario's faults)",
                    policy.key()
                )
            }
            FaultKind::PodDelete { pod } => {
                format!("{{at: {at}, kind: pod_delete, pod: {}}}", quote(pod))
            }
            FaultKind::PodAdd { pod } => {
                format!("{{at: {at}, kind: pod_add, pod: {}}}", pod_yaml(pod))
            }
        }
    }
}

/// A time as decimal seconds, exact and readable: `2.02716s`, `1s`.
fn seconds(ns: u64) -> String {
    let (whole, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        return format!("{whole}s");
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}s", digits.trim_end_matches('0'))
}

/// A pod spec that resolves to exactly this pod: name, node, address, labels, ports.
fn pod_yaml(pod: &Pod) -> String {
    let labels: Vec<String> = pod
        .labels
        .iter()
        .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
        .collect();
    let listen: Vec<String> = pod
        .listen
        .iter()
        .map(|l| {
            let proto = match l.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            format!("{{port: {}, protocol: {proto}}}", l.port)
        })
        .collect();
    format!(
        "{{name: {}, node: {}, ip: {}, labels: {{{}}}, listen: [{}]}}",
        quote(&pod.name),
        quote(&pod.node),
        pod.ip,
        labels.join(", "),
        listen.join(", ")
    )
}

/// A YAML single-quoted scalar: safe for any name (`{i}`, `:`, `#`, leading digits).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The snippet `w` writes: a comment saying where it came from and a `faults:` list.
pub fn snippet(scenario: &str, seed: u64, faults: &[UserFault]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Faults given in a `podnet tui` session on scenario {scenario:?}, seed {seed}."
    );
    let _ = writeln!(
        out,
        "# Add these entries to the scenario's `faults:` list to replay the session."
    );
    if faults.is_empty() {
        out.push_str("faults: []\n");
        return out;
    }
    out.push_str("faults:\n");
    for f in faults {
        let _ = writeln!(out, "  - {}", f.yaml());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_sim::scenario::units::parse_duration;

    #[test]
    fn times_are_written_exactly_in_seconds() {
        for ns in [0, 1_000, 2_027_160_000, 3_000_000_000, 1_000_000_001] {
            assert_eq!(parse_duration(&seconds(ns)), Ok(ns), "{}", seconds(ns));
        }
        assert_eq!(seconds(2_027_160_000), "2.02716s");
        assert_eq!(seconds(3_000_000_000), "3s");
    }

    #[test]
    fn names_are_quoted_for_yaml() {
        assert_eq!(quote("it's"), "'it''s'");
        let f = UserFault {
            at_ns: 1_500_000_000,
            kind: FaultKind::Partition {
                groups: vec![vec!["node-a".into()]],
            },
        };
        assert_eq!(
            f.yaml(),
            "{at: 1.5s, kind: partition, groups: [['node-a']]}"
        );
    }
}

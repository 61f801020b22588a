//! Faults on the timeline.
//!
//! Faults are sorted by time (file order among equal times) before anything else looks at
//! them, because whether a pod exists depends on when: `pod_delete` needs a pod that is
//! there at that moment, and `pod_add` may bring back a deleted pod's name (a restarted pod,
//! with a new address) but not one that is still there.

use std::collections::BTreeSet;

use super::error::{Invalid, Position};
use super::model::{External, Fault, FaultKind, Node, Pod};
use podnet_switch::policy::NetworkPolicy;

use super::names;
use super::policies::{self, PolicyRef};
use super::raw::{FaultTag, PodRef, RawFault, RawPod};
use super::units::format_duration;

/// Sorts faults by time, keeping file order among equal times.
pub(crate) fn sort(faults: &mut [RawFault]) {
    faults.sort_by_key(|fault| fault.at.0);
}

/// The pod specs of `pod_add` faults, in (sorted) fault order.
pub(crate) fn added_pods(faults: &[RawFault]) -> Vec<&RawPod> {
    faults
        .iter()
        .filter(|fault| fault.kind.value == FaultTag::PodAdd)
        .filter_map(|fault| match fault.pod.as_ref().map(|pod| &pod.value) {
            Some(PodRef::Spec(spec)) => Some(&**spec),
            _ => None,
        })
        .collect()
}

/// Resolves sorted `faults`; `added` holds the resolved pods of each `pod_add` spec in the
/// same order as [`added_pods`] returned them.
pub(crate) fn faults(
    raw_faults: &[RawFault],
    added: Vec<Vec<Pod>>,
    nodes: &[Node],
    externals: &[External],
    initial: &[Pod],
    policies: &[NetworkPolicy],
    namespaces: &[String],
) -> Result<Vec<Fault>, Invalid> {
    let mut live_policies: BTreeSet<String> = policies.iter().map(NetworkPolicy::key).collect();
    let mut live: BTreeSet<String> = initial.iter().map(|pod| pod.name.clone()).collect();
    let ever: BTreeSet<String> = initial
        .iter()
        .chain(added.iter().flatten())
        .map(|pod| pod.name.clone())
        .collect();
    let mut added = added.into_iter();
    let mut faults = Vec::new();
    for raw in raw_faults {
        let tag = raw.kind.value;
        check_fields(raw)?;
        let at_ns = raw.at.0;
        let node = || -> Result<String, Invalid> {
            let written = raw.node.as_ref().ok_or_else(|| needs(raw, "node"))?;
            let name = names::node_name(&written.value);
            if nodes.iter().any(|node| node.name == name) {
                Ok(name.to_string())
            } else {
                Err(Invalid::at(written, format!("no node named {name:?}")))
            }
        };
        let kind = match tag {
            FaultTag::LinkDown => FaultKind::LinkDown { node: node()? },
            FaultTag::LinkUp => FaultKind::LinkUp { node: node()? },
            FaultTag::NodeCrash => FaultKind::NodeCrash { node: node()? },
            FaultTag::NodeRestart => FaultKind::NodeRestart { node: node()? },
            FaultTag::Loss => FaultKind::Loss {
                node: node()?,
                loss: raw.loss.as_ref().ok_or_else(|| needs(raw, "loss"))?.value.0,
            },
            FaultTag::Latency => FaultKind::Latency {
                node: node()?,
                latency_ns: raw
                    .latency
                    .as_ref()
                    .ok_or_else(|| needs(raw, "latency"))?
                    .value
                    .0,
            },
            FaultTag::Partition => FaultKind::Partition {
                groups: partition(raw, nodes, externals)?,
            },
            FaultTag::Heal => FaultKind::Heal,
            FaultTag::PodLabel => {
                let written = raw.pod.as_ref().ok_or_else(|| needs(raw, "pod"))?;
                let PodRef::Name(name) = &written.value else {
                    return Err(Invalid::at(written, "pod_label takes a pod name"));
                };
                let Some(pod) = names::find_pod(name, live.iter().map(String::as_str)) else {
                    return Err(Invalid::at(
                        written,
                        format!("no pod {name:?} at {}", format_duration(at_ns)),
                    ));
                };
                let labels = raw.labels.as_ref().ok_or_else(|| needs(raw, "labels"))?;
                FaultKind::PodLabel {
                    pod: pod.to_string(),
                    labels: labels.value.clone(),
                }
            }
            FaultTag::PolicyAdd => {
                let written = raw.policy.as_ref().ok_or_else(|| needs(raw, "policy"))?;
                let PolicyRef::Object(object) = &written.value else {
                    return Err(Invalid::at(
                        written,
                        "policy_add takes a NetworkPolicy object",
                    ));
                };
                let policy = policies::policy(object, namespaces)?;
                live_policies.insert(policy.key());
                FaultKind::PolicyAdd { policy }
            }
            FaultTag::PolicyDelete => {
                let written = raw.policy.as_ref().ok_or_else(|| needs(raw, "policy"))?;
                let PolicyRef::Name(key) = &written.value else {
                    return Err(Invalid::at(written, "policy_delete takes NAMESPACE/NAME"));
                };
                let key = if key.contains('/') {
                    key.clone()
                } else {
                    format!("default/{key}")
                };
                if !live_policies.remove(&key) {
                    return Err(Invalid::at(
                        written,
                        format!("no policy {key} at {}", format_duration(at_ns)),
                    ));
                }
                FaultKind::PolicyDelete { policy: key }
            }
            FaultTag::PodDelete => {
                let written = raw.pod.as_ref().ok_or_else(|| needs(raw, "pod"))?;
                let PodRef::Name(name) = &written.value else {
                    return Err(Invalid::at(
                        written,
                        "pod_delete takes a pod name, not a pod spec",
                    ));
                };
                let name = &names::find_pod(name, live.iter().map(String::as_str))
                    .unwrap_or(name)
                    .to_string();
                if !live.remove(name) {
                    let why = if ever.contains(name) {
                        format!("pod {name:?} does not exist at {}", format_duration(at_ns))
                    } else {
                        format!("no pod named {name:?}")
                    };
                    return Err(Invalid::at(written, why));
                }
                FaultKind::PodDelete { pod: name.clone() }
            }
            FaultTag::PodAdd => {
                let written = raw.pod.as_ref().ok_or_else(|| needs(raw, "pod"))?;
                let PodRef::Spec(spec) = &written.value else {
                    return Err(Invalid::at(
                        written,
                        "pod_add takes a pod spec, e.g. pod: {name: web-9, node: worker-1}",
                    ));
                };
                for pod in added.next().unwrap_or_default() {
                    if !live.insert(pod.name.clone()) {
                        return Err(Invalid::at(
                            &spec.name,
                            format!(
                                "pod {:?} already exists at {}",
                                pod.name,
                                format_duration(at_ns)
                            ),
                        ));
                    }
                    faults.push(Fault {
                        at_ns,
                        kind: FaultKind::PodAdd { pod },
                    });
                }
                continue;
            }
        };
        faults.push(Fault { at_ns, kind });
    }
    Ok(faults)
}

/// Rejects fields that the fault's kind does not take.
fn check_fields(raw: &RawFault) -> Result<(), Invalid> {
    let tag = raw.kind.value;
    let takes = |field: &str| match tag {
        FaultTag::LinkDown | FaultTag::LinkUp | FaultTag::NodeCrash | FaultTag::NodeRestart => {
            field == "node"
        }
        FaultTag::Loss => matches!(field, "node" | "loss"),
        FaultTag::Latency => matches!(field, "node" | "latency"),
        FaultTag::Partition => field == "groups",
        FaultTag::Heal => false,
        FaultTag::PodDelete | FaultTag::PodAdd => field == "pod",
        FaultTag::PodLabel => matches!(field, "pod" | "labels"),
        FaultTag::PolicyAdd | FaultTag::PolicyDelete => field == "policy",
    };
    let given = [
        ("node", raw.node.as_ref().map(Position::of)),
        ("loss", raw.loss.as_ref().map(Position::of)),
        ("latency", raw.latency.as_ref().map(Position::of)),
        ("groups", raw.groups.as_ref().map(Position::of)),
        ("pod", raw.pod.as_ref().map(Position::of)),
        ("policy", raw.policy.as_ref().map(Position::of)),
        ("labels", raw.labels.as_ref().map(Position::of)),
    ];
    for (field, position) in given {
        if let Some(position) = position {
            if !takes(field) {
                return Err(Invalid::at_position(
                    position,
                    format!("a {} fault takes no {field}", tag.as_str()),
                ));
            }
        }
    }
    Ok(())
}

/// The error for a field the fault's kind needs but lacks, pointing at the kind.
fn needs(raw: &RawFault, field: &str) -> Invalid {
    Invalid::at(
        &raw.kind,
        format!("a {} fault needs {field}", raw.kind.value.as_str()),
    )
}

/// A partition's groups: node and external names, each in at most one group.
fn partition(
    raw: &RawFault,
    nodes: &[Node],
    externals: &[External],
) -> Result<Vec<Vec<String>>, Invalid> {
    let groups = raw.groups.as_ref().ok_or_else(|| needs(raw, "groups"))?;
    let mut seen = BTreeSet::new();
    groups
        .value
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|written| {
                    let name = written.value.trim();
                    let name = match name.strip_prefix("node:") {
                        Some(node) if nodes.iter().any(|n| n.name == node) => node,
                        _ => name,
                    };
                    let known = nodes.iter().any(|node| node.name == name)
                        || externals.iter().any(|external| external.name == name);
                    if !known {
                        return Err(Invalid::at(
                            written,
                            format!("no node or external named {name:?}"),
                        ));
                    }
                    if !seen.insert(name) {
                        return Err(Invalid::at(
                            written,
                            format!("{name} is in more than one partition group"),
                        ));
                    }
                    Ok(name.to_string())
                })
                .collect()
        })
        .collect()
}

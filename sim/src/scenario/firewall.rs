//! The inbound firewall on each node's underlay interface.
//!
//! A rule's `to` and `from` are words: `all`, `external` (any external host), a role
//! (`master`, `worker`, `etcd`), a node's name (or `node:NAME`, as traffic writes it) or an
//! external's name, read in that order — so in `{name: master, role: master}` the word
//! `master` means the role, which includes that node anyway, while `node:master` means
//! the node. `ports:` is a number, a range or a list of them.

use serde_saphyr::Spanned;

use super::error::Invalid;
use super::model::{Action, External, Firewall, FirewallRule, HostMatch, Node, Role, RuleProtocol};
use super::raw::RawFirewall;

/// Resolves `firewall:`.
pub(crate) fn firewall(
    raw: RawFirewall,
    nodes: &[Node],
    externals: &[External],
) -> Result<Firewall, Invalid> {
    let rules = raw
        .rules
        .unwrap_or_default()
        .into_iter()
        .map(|rule| {
            let protocol = rule.protocol.unwrap_or(RuleProtocol::All);
            if let (Some(ports), RuleProtocol::Icmp) = (&rule.ports, protocol) {
                return Err(Invalid::at(ports, "an icmp rule takes no ports"));
            }
            Ok(FirewallRule {
                action: rule.action,
                to: host_match(rule.to.as_ref(), nodes, externals)?,
                from: host_match(rule.from.as_ref(), nodes, externals)?,
                protocol,
                ports: rule.ports.map(|ports| ports.value.0),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Firewall {
        default: raw.default.unwrap_or(Action::Allow),
        rules,
    })
}

fn host_match(
    written: Option<&Spanned<String>>,
    nodes: &[Node],
    externals: &[External],
) -> Result<HostMatch, Invalid> {
    let Some(written) = written else {
        return Ok(HostMatch::All);
    };
    let word = written.value.trim();
    if let Some(name) = word.strip_prefix("node:") {
        return if nodes.iter().any(|node| node.name == name) {
            Ok(HostMatch::Node(name.to_string()))
        } else {
            Err(Invalid::at(written, format!("no node named {name:?}")))
        };
    }
    Ok(match word {
        "all" => HostMatch::All,
        "external" => HostMatch::AnyExternal,
        "master" => HostMatch::Role(Role::Master),
        "worker" => HostMatch::Role(Role::Worker),
        "etcd" => HostMatch::Role(Role::Etcd),
        _ if nodes.iter().any(|node| node.name == word) => HostMatch::Node(word.to_string()),
        _ if externals.iter().any(|external| external.name == word) => {
            HostMatch::External(word.to_string())
        }
        _ => {
            return Err(Invalid::at(
                written,
                format!(
                    "{word:?} is not all, external, a role (master, worker, etcd), \
                     a node or an external"
                ),
            ))
        }
    })
}

//! The plan check's word on a run's firewall failures: for each traffic that failed with
//! reason `firewall`, the blocked required flow between the hosts it runs between, so
//! the report names the rule instead of only counting drops.
//!
//! [`firewall_findings`] fills the report's `firewall_findings` (and so the JSON);
//! [`render`] is the readable report's section for them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::flows::{self, pair};
use super::{Finding, Kind};
use crate::report::{Report, TrafficReport};
use crate::scenario::{DropReason, Scenario};

/// For each traffic with firewall failures that a blocked required flow explains, that
/// finding's message, by traffic name. The flow in the request's direction (into the
/// traffic's target) comes first; else the reply's.
pub fn firewall_findings(
    scenario: &Scenario,
    reports: &[TrafficReport],
) -> BTreeMap<String, String> {
    let failing: Vec<&TrafficReport> = reports
        .iter()
        .filter(|report| {
            report
                .failures
                .get(DropReason::Firewall.as_str())
                .is_some_and(|&count| count > 0)
        })
        .collect();
    if failing.is_empty() {
        return BTreeMap::new();
    }
    let blocked: Vec<Finding> = flows::blocked(scenario)
        .into_iter()
        .filter(|finding| finding.kind == Kind::BlockedPort)
        .collect();
    let mut explained = BTreeMap::new();
    for report in failing {
        let Some(traffic) = scenario.traffic.iter().find(|t| t.name == report.name) else {
            continue;
        };
        let (Some(source), targets) = flows::ends(scenario, traffic) else {
            continue;
        };
        let into_target = blocked.iter().find(|finding| {
            finding.nodes.len() == 2
                && finding.nodes[1] == source
                && targets.contains(&finding.nodes[0])
        });
        let either_way = || {
            blocked.iter().find(|finding| {
                finding.nodes.len() == 2
                    && targets.iter().any(|target| {
                        pair(&finding.nodes[0], &finding.nodes[1]) == pair(&source, target)
                    })
            })
        };
        if let Some(finding) = into_target.or_else(either_way) {
            explained.insert(report.name.clone(), finding.message.clone());
        }
    }
    explained
}

/// The readable report's lines for `report.firewall_findings`; nothing when empty.
pub fn render(out: &mut String, report: &Report) {
    if report.firewall_findings.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nfirewall failures, as podnet check finds them");
    for (traffic, message) in &report.firewall_findings {
        let _ = writeln!(out, "  {traffic}: {message}");
    }
}

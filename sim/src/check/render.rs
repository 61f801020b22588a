//! What `podnet check` and `podnet ports` print: findings grouped by severity with a fix
//! each, the port table aligned by role, and both as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::table::{required, Plan};
use super::{Finding, Severity};
use crate::scenario::PortRange;

/// Findings grouped by severity (errors, then warnings), each followed by its fix, and a
/// count line; `FILE: no findings` when there are none.
pub fn findings(file_name: &str, findings: &[Finding]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        let _ = writeln!(out, "{file_name}: no findings");
        return out;
    }
    let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    for severity in [Severity::Error, Severity::Warning] {
        let label = severity.as_str();
        for finding in findings.iter().filter(|f| f.severity == severity) {
            let _ = writeln!(out, "{label:<7}  {}", finding.message);
            let _ = writeln!(out, "{:<7}  fix: {}", "", finding.fix);
        }
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "{file_name}: {}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    out
}

/// `{"findings": [...]}`, pretty-printed, each finding's fields in the order
/// SCENARIO.md lists them.
pub fn findings_json(findings: &[Finding]) -> String {
    #[derive(Serialize)]
    struct Audit<'a> {
        findings: &'a [Finding],
    }
    to_json(&Audit { findings })
}

fn to_json(value: &impl Serialize) -> String {
    // Serialising these plain structs of strings and numbers cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn plan_words(plan: &Plan) -> String {
    let mut words = format!("backend {}", plan.backend.as_str());
    if plan.bgp {
        words.push_str(", BGP");
    }
    if plan.etcd {
        words.push_str(", flannel on etcd");
    }
    words
}

/// The required inbound ports by role, as an aligned table.
pub fn ports(plan: &Plan) -> String {
    let header = ["role", "protocol", "ports", "from", "purpose"];
    let rows: Vec<[String; 5]> = required(plan)
        .iter()
        .map(|row| {
            [
                row.role.as_str().to_string(),
                row.protocol.as_str().to_string(),
                row.ports.to_string(),
                row.from
                    .iter()
                    .map(|source| source.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                row.purpose.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|title| title.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = format!("inbound ports by node role ({})\n", plan_words(plan));
    let line = |out: &mut String, cells: &[&str]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "  {cell:<width$}");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, &header);
    for row in &rows {
        line(&mut out, &row.each_ref().map(String::as_str));
    }
    out
}

/// `{"backend", "bgp", "etcd", "ports": [{"role", "protocol", "ports", "from", "purpose"}]}`,
/// pretty-printed, with `ports` a number or a `"first-last"` string.
pub fn ports_json(plan: &Plan) -> String {
    #[derive(Serialize)]
    struct Table {
        backend: &'static str,
        bgp: bool,
        etcd: bool,
        ports: Vec<Row>,
    }
    #[derive(Serialize)]
    struct Row {
        role: &'static str,
        protocol: &'static str,
        #[serde(serialize_with = "super::port_json")]
        ports: Option<PortRange>,
        from: Vec<&'static str>,
        purpose: &'static str,
    }
    let ports = required(plan)
        .iter()
        .map(|row| Row {
            role: row.role.as_str(),
            protocol: row.protocol.as_str(),
            ports: Some(row.ports),
            from: row.from.iter().map(|source| source.as_str()).collect(),
            purpose: row.purpose,
        })
        .collect();
    to_json(&Table {
        backend: plan.backend.as_str(),
        bgp: plan.bgp,
        etcd: plan.etcd,
        ports,
    })
}

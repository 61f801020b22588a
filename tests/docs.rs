//! The documentation in docs/ stays true: every YAML scenario block parses, a complete
//! one (with expectations) runs with them holding, and every field the scenario loader
//! accepts is named in docs/scenario.md.

use std::path::{Path, PathBuf};

use podnet_sim::run::{run, RunOptions};
use podnet_sim::scenario;

fn docs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    files
}

/// The ```yaml blocks of a markdown file, with the line each starts on.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == "```yaml" => current = Some((n + 2, String::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    blocks
}

/// A scenario is a YAML document with a top-level `name:`; node files (`node:`) are
/// checked by the node-file docs test.
fn is_scenario(yaml: &str) -> bool {
    yaml.lines().any(|l| l.starts_with("name:"))
}

#[test]
fn every_scenario_block_in_docs_parses_and_complete_ones_hold() {
    let mut parsed = 0;
    let mut ran = 0;
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, yaml) in yaml_blocks(&text) {
            if !is_scenario(&yaml) {
                continue;
            }
            let at = format!("{}:{line}", file.display());
            let sc = scenario::parse(&at, &yaml).unwrap_or_else(|e| panic!("{e}"));
            parsed += 1;
            if sc.expect.is_empty() {
                continue;
            }
            let report = run(sc, &RunOptions::default()).expect("the run itself works");
            assert!(
                report.passed && report.expectations.iter().all(|e| e.judged),
                "{at}: expectations do not hold:\n{}",
                podnet_sim::render::render(&report, podnet_sim::render::Detail::Full)
            );
            ran += 1;
        }
    }
    assert!(parsed >= 3, "only {parsed} scenario blocks in docs/");
    assert!(
        ran >= 1,
        "no complete scenario (with expectations) in docs/"
    );
}

/// The fields the loader accepts at one place, as its "unknown field" error lists them:
/// `yaml` holds `zz_unknown: 1` where the probe goes.
fn accepted_fields(yaml: &str) -> Vec<String> {
    let error = scenario::parse("probe.yaml", yaml)
        .expect_err("the probe field is unknown")
        .to_string();
    let list = error
        .split("expected one of ")
        .nth(1)
        .or_else(|| error.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("no field list in: {error}"));
    list.split(',')
        .map(|f| f.trim().trim_matches('`').to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

#[test]
fn every_field_the_loader_accepts_is_documented() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scenario.md"))
            .unwrap();
    let probes = [
        ("top level", "name: t\nzz_unknown: 1\n"),
        ("cluster", "name: t\ncluster: {zz_unknown: 1}\n"),
        (
            "cluster.vxlan",
            "name: t\ncluster: {vxlan: {zz_unknown: 1}}\n",
        ),
        ("cluster.udp", "name: t\ncluster: {udp: {zz_unknown: 1}}\n"),
        ("underlay", "name: t\nunderlay: {zz_unknown: 1}\n"),
        ("nodes", "name: t\nnodes: [{name: n, zz_unknown: 1}]\n"),
        ("pods", "name: t\npods: [{name: p, zz_unknown: 1}]\n"),
        (
            "pods.listen",
            "name: t\npods: [{name: p, listen: [{port: 1, zz_unknown: 1}]}]\n",
        ),
        (
            "services",
            "name: t\nservices: [{name: s, zz_unknown: 1}]\n",
        ),
        (
            "services.ports",
            "name: t\nservices: [{name: s, ports: [{port: 1, zz_unknown: 1}]}]\n",
        ),
        (
            "externals",
            "name: t\nexternals: [{name: e, zz_unknown: 1}]\n",
        ),
        ("firewall", "name: t\nfirewall: {zz_unknown: 1}\n"),
        (
            "firewall.rules",
            "name: t\nfirewall: {rules: [{action: deny, zz_unknown: 1}]}\n",
        ),
        (
            "traffic",
            "name: t\ntraffic: [{name: x, from: a, to: b, zz_unknown: 1}]\n",
        ),
        (
            "faults",
            "name: t\nfaults: [{at: 1s, kind: heal, zz_unknown: 1}]\n",
        ),
        (
            "faults.pod",
            "name: t\nfaults: [{at: 1s, kind: pod_add, pod: {name: p, zz_unknown: 1}}]\n",
        ),
        ("expect", "name: t\nexpect: [{traffic: x, zz_unknown: 1}]\n"),
        (
            "namespaces",
            "name: t\nnamespaces: [{name: n, zz_unknown: 1}]\n",
        ),
        ("policies", "name: t\npolicies: [{zz_unknown: 1}]\n"),
        (
            "policies.metadata",
            "name: t\npolicies: [{metadata: {zz_unknown: 1}}]\n",
        ),
        (
            "policies.spec",
            "name: t\npolicies: [{spec: {zz_unknown: 1}}]\n",
        ),
        (
            "policies.ingress",
            "name: t\npolicies: [{spec: {ingress: [{zz_unknown: 1}]}}]\n",
        ),
        (
            "policies.egress",
            "name: t\npolicies: [{spec: {egress: [{zz_unknown: 1}]}}]\n",
        ),
        (
            "policies.peer",
            "name: t\npolicies: [{spec: {ingress: [{from: [{zz_unknown: 1}]}]}}]\n",
        ),
        (
            "policies.ipBlock",
            "name: t\npolicies: [{spec: {ingress: [{from: [{ipBlock: {zz_unknown: 1}}]}]}}]\n",
        ),
        (
            "policies.ports",
            "name: t\npolicies: [{spec: {ingress: [{ports: [{zz_unknown: 1}]}]}}]\n",
        ),
        (
            "policies.selector",
            "name: t\npolicies: [{spec: {podSelector: {zz_unknown: 1}}}]\n",
        ),
        (
            "policies.matchExpressions",
            "name: t\npolicies: [{spec: {podSelector: {matchExpressions: [{zz_unknown: 1}]}}}]\n",
        ),
    ];
    let mut missing = Vec::new();
    let mut checked = 0;
    for (place, yaml) in probes {
        let fields = accepted_fields(yaml);
        assert!(!fields.is_empty(), "{place}: {fields:?}");
        for field in fields {
            checked += 1;
            if !doc.contains(&format!("`{field}`")) {
                missing.push(format!("{place}: {field}"));
            }
        }
    }
    assert!(checked > 60, "only {checked} fields probed");
    assert!(
        missing.is_empty(),
        "fields the loader accepts that docs/scenario.md does not name: {missing:?}"
    );
}

#[test]
fn docs_point_nowhere_outside_the_repository() {
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("SCENARIO.md"), "{}", file.display());
    }
}

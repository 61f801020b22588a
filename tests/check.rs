//! `podnet check` and `podnet ports`: one small scenario per finding kind under
//! tests/check/, each with exactly that mistake; every file in scenarios/ passes; the
//! simulator agrees with the checker; `podnet sim` refuses address errors with the
//! check's message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use podnet_sim::check::{self, Finding, Kind, Severity};
use podnet_sim::run::{run, RunOptions};
use podnet_sim::scenario;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn podnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("podnet runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `podnet check --json FILE`: its exit status and its findings.
fn check_json(file: &str) -> (Option<i32>, Vec<Value>) {
    let output = podnet(&["check", "--json", file]);
    let json: Value = serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|e| panic!("{file}: not JSON ({e}): {}", stdout(&output)));
    let findings = json["findings"].as_array().expect("findings").clone();
    (output.status.code(), findings)
}

/// The one finding a test scenario must produce.
fn only_finding(file: &str) -> (Option<i32>, Value) {
    let (code, findings) = check_json(file);
    assert_eq!(findings.len(), 1, "{file}: {findings:#?}");
    (code, findings[0].clone())
}

fn audit(file: &str) -> Vec<Finding> {
    check::audit_file(&repo(file)).unwrap_or_else(|e| panic!("{e}"))
}

fn message(finding: &Value) -> &str {
    finding["message"].as_str().expect("message")
}

#[test]
fn overlap_names_both_ranges() {
    let (code, finding) = only_finding("tests/check/overlap.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(finding["severity"], "error");
    assert_eq!(finding["kind"], "overlap");
    assert!(
        message(&finding).contains("service_cidr 10.0.1.0/24 overlaps pod_cidr 10.0.0.0/16"),
        "{finding}"
    );
    assert!(finding["fix"].as_str().unwrap().contains("service_cidr"));
}

#[test]
fn overlap_with_infrastructure() {
    let findings = check::audit(
        "x.yaml",
        "name: x\ncluster: {infrastructure: [192.168.0.0/16, 172.16.4.0/24]}\n",
    )
    .unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].kind, Kind::Overlap);
    assert!(
        findings[0]
            .message
            .contains("infrastructure network 172.16.4.0/24 overlaps underlay cidr 172.16.0.0/16"),
        "{}",
        findings[0].message
    );
}

#[test]
fn too_few_node_subnets_counts_them() {
    let (code, finding) = only_finding("tests/check/node-subnets.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(finding["kind"], "node_subnets");
    assert_eq!(finding["nodes"], serde_json::json!(["worker-2"]));
    let text = message(&finding);
    assert!(
        text.contains("pod_cidr 10.2.0.0/22 holds 4 /24 subnets, 6 nodes"),
        "{text}"
    );
    assert!(text.contains("none left for node worker-2"), "{text}");
    assert!(
        text.starts_with("tests/check/node-subnets.yaml:6:"),
        "{text}"
    );
}

#[test]
fn node_subnet_outside_the_pod_range() {
    let (code, finding) = only_finding("tests/check/node-subnet.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(finding["kind"], "node_subnet");
    assert_eq!(finding["nodes"], serde_json::json!(["worker-1"]));
    assert!(
        message(&finding).contains("subnet 10.9.1.0/24 is outside pod_cidr 10.2.0.0/16"),
        "{finding}"
    );
}

#[test]
fn pod_ip_on_the_gateway() {
    let (code, finding) = only_finding("tests/check/pod-ip.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(finding["kind"], "pod_ip");
    assert_eq!(finding["nodes"], serde_json::json!(["worker-1"]));
    assert!(
        message(&finding)
            .contains("ip 10.2.2.1 of pod web is reserved in subnet 10.2.2.0/24 of node worker-1"),
        "{finding}"
    );
}

#[test]
fn cluster_ip_of_the_api_server() {
    let (code, finding) = only_finding("tests/check/cluster-ip.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(finding["kind"], "cluster_ip");
    assert!(
        message(&finding).contains("cluster_ip 10.3.0.1 of service web is the API server's"),
        "{finding}"
    );
    // The API server's own service and DNS may hold their addresses.
    let findings = check::audit(
        "x.yaml",
        "name: x\nservices:\n  - {name: kubernetes, cluster_ip: 10.3.0.1}\n  - {name: kube-dns, cluster_ip: 10.3.0.10}\n",
    )
    .unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
    let findings = check::audit(
        "x.yaml",
        "name: x\nservices:\n  - {name: web, cluster_ip: 10.3.0.10}\n",
    )
    .unwrap();
    assert_eq!(findings.len(), 1);
    assert!(findings[0].message.contains("cluster DNS's address"));
}

#[test]
fn node_port_used_twice() {
    let (code, finding) = only_finding("tests/check/node-port.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(finding["kind"], "node_port");
    assert!(
        message(&finding).contains("node_port tcp/30080 is already used by service web"),
        "{finding}"
    );
}

#[test]
fn mtu_below_the_ipv6_minimum_is_a_warning() {
    let (code, finding) = only_finding("tests/check/mtu.yaml");
    assert_eq!(code, Some(0), "a warning alone exits 0");
    assert_eq!(finding["severity"], "warning");
    assert_eq!(finding["kind"], "mtu");
    assert!(message(&finding).contains("pod MTU 1250"), "{finding}");
    assert!(message(&finding).contains("IPv6"), "{finding}");
    assert!(finding["fix"].as_str().unwrap().contains("1330"));
}

#[test]
fn blocked_port_names_nodes_port_and_rule() {
    let (code, finding) = only_finding("tests/check/blocked-port.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(finding["kind"], "blocked_port");
    assert_eq!(finding["nodes"], serde_json::json!(["worker-0", "master"]));
    assert_eq!(finding["protocol"], "tcp");
    assert_eq!(finding["port"], 10250);
    assert_eq!(finding["rule"], 2);
    assert_eq!(
        message(&finding),
        "worker-0 <- master tcp/10250 (kubelet API for exec and logs): blocked by firewall \
         rule 2 (deny tcp 10000-11000 to worker)"
    );
    // The readable output groups it under its severity, with its fix.
    let output = podnet(&["check", "tests/check/blocked-port.yaml"]);
    let text = stdout(&output);
    assert!(
        text.starts_with("error    worker-0 <- master tcp/10250"),
        "{text}"
    );
    assert!(text.contains("fix: add {action: allow, to: worker, from: master, protocol: tcp, ports: 10250} before rule 2"), "{text}");
    assert!(text.contains("1 error, 0 warnings"), "{text}");
}

#[test]
fn blocked_by_the_default_names_the_external_and_the_range() {
    let (code, finding) = only_finding("tests/check/blocked-default.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(finding["kind"], "blocked_port");
    assert_eq!(finding["nodes"], serde_json::json!(["worker-0", "laptop"]));
    assert_eq!(finding["port"], "32000-32767");
    assert_eq!(finding["rule"], Value::Null);
    assert!(message(&finding).contains("blocked by the firewall's default"));
}

#[test]
fn every_scenario_passes_check_without_errors() {
    let dir = repo("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    for path in &files {
        let findings = check::audit_file(path).unwrap_or_else(|e| panic!("{e}"));
        let errors: Vec<&Finding> = findings
            .iter()
            .filter(|finding| finding.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        let output = podnet(&["check", path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    }
}

#[test]
fn an_intended_block_is_a_warning() {
    let findings = audit("scenarios/firewall-blocks-overlay.yaml");
    assert_eq!(findings.len(), 2, "{findings:#?}");
    for finding in &findings {
        assert_eq!(finding.severity, Severity::Warning);
        assert_eq!(finding.kind, Kind::BlockedPort);
        assert_eq!(finding.rule, Some(1));
        assert!(finding.message.contains("expected: traffic across"));
    }
}

#[test]
fn the_simulator_agrees_with_the_checker() {
    let file = "tests/check/blocked-overlay.yaml";
    let findings = audit(file);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let blocked = &findings[0];
    assert_eq!(blocked.kind, Kind::BlockedPort);
    assert_eq!(blocked.nodes, ["worker-1", "worker-0"]);
    assert_eq!(
        (blocked.protocol, blocked.port.map(|p| p.first)),
        (Some("udp"), Some(8472))
    );

    let sc = scenario::load(&repo(file)).unwrap();
    let report = run(sc, &RunOptions::default()).unwrap();
    let across = &report.traffic[0];
    assert_eq!(across.delivered, 0);
    assert_eq!(across.failures.get("firewall"), Some(&across.sent));
    assert_eq!(
        report.firewall_findings.get("across"),
        Some(&blocked.message)
    );

    // The readable report and the JSON name the finding too.
    let text = stdout(&podnet(&["sim", file]));
    assert!(
        text.contains(&format!("across: {}", blocked.message)),
        "{text}"
    );
    let json: Value = serde_json::from_str(&stdout(&podnet(&["sim", "--json", file]))).unwrap();
    assert_eq!(
        json["firewall_findings"]["across"],
        blocked.message.as_str()
    );
}

#[test]
fn sim_refuses_address_errors_with_the_check_message() {
    for file in [
        "tests/check/overlap.yaml",
        "tests/check/cluster-ip.yaml",
        "tests/check/pod-ip.yaml",
    ] {
        let (_, finding) = only_finding(file);
        let output = podnet(&["sim", file]);
        assert_eq!(output.status.code(), Some(2), "{file}");
        let refused = stderr(&output);
        assert!(refused.contains(message(&finding)), "{file}: {refused}");
    }
    // Warnings and blocked ports do not stop a run.
    assert_eq!(
        podnet(&["sim", "tests/check/mtu.yaml"]).status.code(),
        Some(0)
    );
}

#[test]
fn an_invalid_file_exits_2() {
    let dir = std::env::temp_dir().join(format!("podnet-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "name: x\nnodez: []\n").unwrap();
    let output = podnet(&["check", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("bad.yaml:2:1: unknown field `nodez`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn ports_lists_the_guide_table() {
    let text = stdout(&podnet(&["ports"]));
    assert!(text.contains("backend vxlan"), "{text}");
    for row in [
        ["master", "tcp", "443", "workers, externals"],
        ["worker", "tcp", "10250", "masters"],
        ["worker", "tcp", "30000-32767", "externals"],
        ["worker", "udp", "8472", "all nodes"],
        ["etcd", "tcp", "2379-2380", "masters"],
    ] {
        assert!(
            text.lines().any(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                words.starts_with(&row[..3]) && line.contains(row[3])
            }),
            "{row:?} in\n{text}"
        );
    }
    assert!(!text.contains("179") && !text.contains("8285"), "{text}");

    let udp_bgp = stdout(&podnet(&["ports", "--backend", "udp", "--bgp"]));
    assert!(
        udp_bgp.contains("8285") && udp_bgp.contains("179"),
        "{udp_bgp}"
    );
    assert!(!udp_bgp.contains("8472"), "{udp_bgp}");
    assert!(!stdout(&podnet(&["ports", "--backend", "host-gw"])).contains("udp"));

    let json: Value =
        serde_json::from_str(&stdout(&podnet(&["ports", "--etcd", "--json"]))).unwrap();
    assert_eq!(json["backend"], "vxlan");
    let etcd = json["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["role"] == "etcd" && row["protocol"] == "tcp")
        .unwrap();
    assert_eq!(etcd["ports"], "2379-2380");
    assert_eq!(etcd["from"], serde_json::json!(["masters", "workers"]));
}

#[test]
fn docs_list_every_finding_kind() {
    let scenario_md = std::fs::read_to_string(repo("docs/scenario.md")).unwrap();
    let cli_md = std::fs::read_to_string(repo("docs/cli.md")).unwrap();
    assert!(scenario_md.contains("## Plan findings"));
    assert!(cli_md.contains("## podnet check") && cli_md.contains("## podnet ports"));
    for kind in Kind::ALL {
        assert!(
            scenario_md.contains(&format!("| `{}` |", kind.as_str())),
            "docs/scenario.md lists no `{}`",
            kind.as_str()
        );
    }
    // The example in cli.md is what the binary prints for tests/check/blocked-port.yaml.
    let (_, finding) = only_finding("tests/check/blocked-port.yaml");
    assert!(cli_md.contains(message(&finding)));
    assert!(cli_md.contains(finding["fix"].as_str().unwrap()));
}

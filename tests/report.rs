//! The report says where every request went: a traffic row adds up, each endpoint shows
//! its failures, node counters hold the underlay firewall's drops, source addresses are
//! named, and the cluster section lists nodes, pods and services. Each on the smallest
//! scenario that shows it.

use std::path::{Path, PathBuf};
use std::process::Command;

use podnet_sim::run::{run, RunOptions};
use podnet_sim::scenario;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn podnet(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn json(args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out) = podnet(&all);
    (code, serde_json::from_str(&out).expect("JSON report"))
}

fn traffic<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no traffic {name}"))
}

#[test]
fn stopped_early_rows_add_up_and_unfinished_traffic_is_not_judged() {
    let args = [
        "sim",
        "scenarios/quickstart.yaml",
        "--seed",
        "7",
        "--until",
        "1s",
    ];
    let (code, report) = json(&args);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["stopped_early"], true);
    for t in report["traffic"].as_array().unwrap() {
        let n = |f: &str| t[f].as_u64().unwrap();
        assert_eq!(
            n("sent"),
            n("delivered") + n("failed") + n("in_flight"),
            "{t:#}"
        );
    }
    let svc = traffic(&report, "pod-to-service");
    assert!(svc["in_flight"].as_u64().unwrap() > 0, "{svc:#}");
    let expectations = report["expectations"].as_array().unwrap();
    let not_judged: Vec<&Value> = expectations
        .iter()
        .filter(|e| e["judged"] == false)
        .collect();
    // The nodeport traffic starts at 1.5 s: nothing of it to judge at 1 s.
    assert_eq!(not_judged.len(), 2, "{expectations:#?}");
    assert!(not_judged
        .iter()
        .all(|e| e["expect"].as_str().unwrap().starts_with("nodeport")));
    let (code, text) = podnet(&args);
    assert_eq!(code, 0);
    assert!(text.starts_with("scenario quickstart: PASSED\n"), "{text}");
    assert!(
        text.contains("expectations: 4 of 4 hold, 2 not judged"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn firewall_failures_show_at_their_endpoint_and_on_the_dropping_node() {
    let sc = scenario::load(&repo("scenarios/firewall-blocks-overlay.yaml")).unwrap();
    let report = run(sc, &RunOptions::default()).unwrap();
    let across = report.traffic.iter().find(|t| t.name == "across").unwrap();
    let blocked = across.failures["firewall"];
    assert!(blocked > 0);
    let b0 = &across.by_endpoint["b-0"];
    assert_eq!(b0.delivered, 0);
    assert_eq!(b0.failed["firewall"], blocked);
    // The firewall sits on worker-1's underlay interface (b-0's node): its counters
    // hold every drop the traffic rows attribute to it; worker-0 dropped nothing.
    let drops = |node: &str| {
        let n = report.nodes.iter().find(|n| n.name == node).unwrap();
        n.counters.drops.get("firewall").copied().unwrap_or(0)
    };
    assert_eq!(drops("worker-1"), blocked);
    assert_eq!(drops("worker-0"), 0);
    let text = podnet_sim::render::render(&report, podnet_sim::render::Detail::Summary);
    assert!(
        text.contains(&format!(
            "b-0 {blocked} (100.0%, failed: firewall {blocked})"
        )),
        "{text}"
    );
}

#[test]
fn source_addresses_are_named() {
    let (code, report) = json(&["sim", "scenarios/quickstart.yaml"]);
    assert_eq!(code, 0);
    let svc = traffic(&report, "pod-to-service");
    assert_eq!(svc["source_names"]["10.0.1.2"], "client");
    let nodeport = traffic(&report, "nodeport");
    let names = nodeport["source_names"].as_object().unwrap();
    // SNAT to node-b's own addresses: its VTEP and its bridge.
    assert_eq!(names["10.0.2.0"], "node-b flannel.1");
    assert_eq!(names["10.0.2.1"], "node-b cni0");
    let (_, text) = podnet(&["sim", "scenarios/quickstart.yaml"]);
    assert!(text.contains("10.0.1.2 (client) 100 (100.0%)"), "{text}");
    assert!(text.contains("10.0.2.0 (node-b flannel.1) "), "{text}");
}

#[test]
fn cluster_section_lists_nodes_pods_services_and_summarises_big_clusters() {
    let (_, report) = json(&["sim", "scenarios/quickstart.yaml"]);
    let cluster = &report["cluster"];
    assert_eq!(cluster["nodes"][0]["name"], "node-a");
    assert_eq!(cluster["nodes"][0]["role"], "worker");
    assert_eq!(cluster["nodes"][0]["subnet"], "10.0.1.0/24");
    let pod_b = cluster["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "pod-b")
        .unwrap();
    assert_eq!(pod_b["node"], "node-b");
    assert_eq!(pod_b["ip"], "10.0.2.144");
    let web = &cluster["services"][0];
    assert_eq!(web["cluster_ip"], "10.3.0.50");
    assert_eq!(web["ports"][0]["node_port"], 30080);
    assert_eq!(web["endpoints"], serde_json::json!(["pod-a", "pod-b"]));

    let dir = std::env::temp_dir().join(format!("podnet-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("big.yaml");
    std::fs::write(
        &file,
        "name: big\nduration: 10ms\nnodes:\n  - {name: 'n-{i}', count: 3}\n\
         pods:\n  - {name: 'web-{i}', count: 60, labels: {app: web}}\n\
         services:\n  - {name: web, selector: {app: web}, ports: [{port: 80}]}\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (_, summary) = podnet(&["sim", path]);
    assert!(summary.contains("\n  web-9 "), "{summary}");
    assert!(!summary.contains("\n  web-59 "), "{summary}");
    assert!(summary.contains("  ... 50 more pods (--full lists them all)"));
    let (_, full) = podnet(&["sim", path, "--full"]);
    assert!(full.contains("\n  web-59 "), "{full}");
    assert!(!full.contains("more pods"));
    let _ = std::fs::remove_dir_all(&dir);
}

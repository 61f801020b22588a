//! The simulator at scale: 1,000 nodes and 30,000 pods, built from the scale generator's
//! scenario (`podnet sim --generate nodes=1000`), run to the end with every request
//! delivered. Meant for release builds (`cargo test --release --test scale`), where it
//! takes a few seconds; its speed is measured by benches/scale.sh, not here.

use podnet_sim::generate::{scenario_yaml, Shape};
use podnet_sim::run::{run, RunOptions};
use podnet_sim::scenario;

#[test]
fn a_thousand_nodes_deliver_every_request() {
    let shape = Shape::nodes(1000);
    assert_eq!((shape.pods, shape.services), (30_000, 200));
    let sc = scenario::parse("scale-1000.yaml", &scenario_yaml(&shape)).unwrap();
    assert_eq!(sc.nodes.len(), 1000);
    assert_eq!(sc.pods.len(), 30_000);
    let report = run(sc, &RunOptions::default()).expect("the run itself works");

    assert_eq!(report.traffic.len(), 400);
    for t in &report.traffic {
        assert_eq!(
            (t.sent, t.delivered, t.failed, t.in_flight),
            (5, 5, 0, 0),
            "{}",
            t.name
        );
    }
    let delivered: u64 = report.traffic.iter().map(|t| t.delivered).sum();
    assert_eq!(delivered, 2000);
    // Service traffic reached endpoints of its service only, and pings crossed the
    // underlay (their targets are half the cluster away), so nodes encapsulated.
    for t in report.traffic.iter().filter(|t| t.name.starts_with("svc-")) {
        let service = t.to.trim_start_matches("svc:").trim_end_matches(":80");
        let prefix = format!("p{}-", service.trim_start_matches("svc-"));
        assert!(
            t.by_endpoint.keys().all(|e| e.starts_with(&prefix)),
            "{}: {:?}",
            t.name,
            t.by_endpoint.keys()
        );
    }
    let encap: u64 = report.nodes.iter().map(|n| n.counters.encap).sum();
    assert!(encap >= 2000, "encapsulated {encap}");
    assert!(report.passed, "expectations");
    assert!(
        report.packet_hops > report.events,
        "{} hops, {} events",
        report.packet_hops,
        report.events
    );
    assert_eq!(report.cluster.pods.len(), 30_000);
    assert!(report
        .cluster
        .services
        .iter()
        .all(|s| s.endpoints.len() == 150));
}

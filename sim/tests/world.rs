//! The step API a live view drives: advance by one event or to a time, read the state.

use podnet_sim::run::QUICKSTART;
use podnet_sim::scenario;
use podnet_sim::world::{Options, World};

fn quickstart(log: bool) -> World {
    let sc = scenario::parse("quickstart.yaml", QUICKSTART).unwrap();
    World::new(
        sc,
        &Options {
            log,
            ..Options::default()
        },
    )
    .unwrap()
}

#[test]
fn stepping_one_event_at_a_time_is_the_same_run() {
    let mut whole = quickstart(false);
    whole.run();
    let mut stepped = quickstart(false);
    let mut steps = 0;
    while stepped.step() {
        steps += 1;
    }
    assert_eq!(steps, whole.events());
    assert_eq!(stepped.trace_hash(), whole.trace_hash());
}

#[test]
fn run_until_stops_at_the_time_and_state_is_readable() {
    let mut w = quickstart(true);
    w.run_until(600_000_000);
    assert_eq!(w.now(), 600_000_000);
    assert!(w.next_event_at().is_some_and(|t| t > 600_000_000));
    // Mid-run: the service traffic has started, the tables are filled.
    let node_a = &w.nodes()[0];
    assert_eq!(node_a.spec.name, "node-a");
    assert!(node_a.up);
    assert!(!node_a.switch.mac_entries(w.now()).is_empty());
    assert!(!node_a.switch.neighbour_entries(w.now()).is_empty());
    assert!(node_a.switch.counters().rx_packets > 0);
    assert!(w.records()[1].len() > 1, "pod-to-service requests started");
    assert!(w.recent().count() > 0, "recent events are logged");
    assert!(w.hosts().iter().any(|h| h.name == "pod-a" && h.alive));
    let before = w.events();
    assert!(w.step());
    assert_eq!(w.events(), before + 1);
    w.run();
    assert_eq!(w.now(), w.end_ns());
}

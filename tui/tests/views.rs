//! The app driven by keys and simulated time on ratatui's test backend: snapshots of
//! every view, what a what-if crash shows, and the faults snippet replaying the session.

use std::path::PathBuf;

use podnet_sim::run::{self, RunOptions, QUICKSTART};
use podnet_sim::scenario;
use podnet_tui::app::View;
use podnet_tui::{draw, App};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::Terminal;

fn snippet_path(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("podnet-tui-{test}.yaml"))
}

fn quickstart(test: &str) -> App {
    let sc = scenario::parse("quickstart.yaml", QUICKSTART).unwrap();
    App::new(sc, snippet_path(test)).unwrap()
}

fn press(app: &mut App, keys: &str) {
    for c in keys.chars() {
        app.key(KeyEvent::from(KeyCode::Char(c)));
    }
}

fn press_code(app: &mut App, code: KeyCode) {
    app.key(KeyEvent::from(code));
}

fn screen(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw::draw(f, app)).unwrap();
    terminal
}

/// The rendered text, one line per row.
fn text(app: &App, width: u16, height: u16) -> String {
    let t = screen(app, width, height);
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// The row of the screen that contains `needle`.
fn row_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle:?} in\n{screen}"))
}

#[test]
fn every_view_at_both_sizes() {
    let mut app = quickstart("snapshots");
    // Mid-run: service traffic under way, the NodePort traffic just started.
    app.run_to(1_600_000_000);
    for (key, view) in ('1'..='6').zip(View::ALL) {
        press(&mut app, &key.to_string());
        assert_eq!(app.view(), view);
        for (w, h) in [(80, 24), (160, 48)] {
            let name = format!("{}_{w}x{h}", view.name());
            insta::assert_snapshot!(name, screen(&app, w, h).backend());
        }
    }
    press(&mut app, "?");
    insta::assert_snapshot!("help_80x24", screen(&app, 80, 24).backend());
}

#[test]
fn time_keys_step_pause_and_change_speed() {
    let mut app = quickstart("time");
    assert!(app.is_paused());
    press(&mut app, "n");
    assert_eq!(app.world().events(), 1);
    let first = app.world().now();
    press(&mut app, "t");
    assert_eq!(app.world().now(), first + 1_000_000);
    let before = app.world().now();
    press(&mut app, "t");
    assert_eq!(app.world().now(), before + 1_000_000);
    // Paused: wall time buys nothing.
    app.tick(std::time::Duration::from_secs(1));
    assert_eq!(app.world().now(), before + 1_000_000);
    // Running at the start speed, 100 ms of simulated time per wall second.
    press(&mut app, " ");
    assert!(!app.is_paused());
    app.tick(std::time::Duration::from_millis(500));
    assert_eq!(app.world().now(), before + 1_000_000 + 50_000_000);
    press(&mut app, "+");
    let s = text(&app, 160, 48);
    assert!(row_with(&s, "speed").contains("speed 1s/s"), "{s}");
    press(&mut app, "--");
    assert!(row_with(&text(&app, 160, 48), "speed").contains("speed 10ms/s"));
    // The narrow status line keeps the speed, without its label.
    assert!(row_with(&text(&app, 80, 24), "pkt/s│").contains("│10ms/s│"));
}

#[test]
fn filter_and_command_switch_views_and_narrow_rows() {
    let mut app = quickstart("filter");
    press(&mut app, ":svc");
    press_code(&mut app, KeyCode::Enter);
    assert_eq!(app.view(), View::Services);
    press(&mut app, ":tr");
    press_code(&mut app, KeyCode::Enter);
    assert_eq!(app.view(), View::Traffic);
    press(&mut app, "/node");
    press_code(&mut app, KeyCode::Enter);
    let s = text(&app, 80, 24);
    assert!(s.contains("nodeport"), "{s}");
    assert!(!s.contains("pod-to-pod"), "{s}");
    // Esc clears the filter, the next Esc goes back.
    press_code(&mut app, KeyCode::Esc);
    assert!(text(&app, 80, 24).contains("pod-to-pod"));
    press_code(&mut app, KeyCode::Esc);
    assert_eq!(app.view(), View::Services);
}

#[test]
fn a_crash_shows_the_node_down_and_its_pods_traffic_failing_with_node_down() {
    let mut app = quickstart("crash");
    app.run_to(1_000_000_000);
    // Select node-b (second row) and crash it.
    press_code(&mut app, KeyCode::Down);
    press(&mut app, "x");
    let s = text(&app, 80, 24);
    assert!(row_with(&s, "node-b").contains("DOWN"), "{s}");
    assert!(!row_with(&s, "node-a").contains("DOWN"), "{s}");
    assert!(s.contains("1 down"), "{s}");
    // The service traffic that went to pod-b on node-b times out with node_down.
    app.run_to(2_600_000_000);
    press(&mut app, "4");
    let s = text(&app, 80, 24);
    assert!(row_with(&s, "pod-to-service").contains("node_down"), "{s}");
    assert!(row_with(&s, "nodeport").contains("node_down"), "{s}");
    assert!(row_with(&s, "pod-to-service").contains("✗"), "{s}");
    let failures = &app.report().traffic[1].failures;
    assert!(failures.get("node_down").copied().unwrap_or(0) > 0);
    // The events pane lists it as the user's fault.
    press(&mut app, "5/node_crash");
    press_code(&mut app, KeyCode::Enter);
    let s = text(&app, 160, 48);
    assert!(row_with(&s, "node_crash node-b").contains("you"), "{s}");
}

#[test]
fn every_what_if_key_changes_the_world_and_the_snippet_replays_it() {
    let mut app = quickstart("replay");
    app.run_to(600_000_000);
    press_code(&mut app, KeyCode::Down); // node-b
    press(&mut app, "x");
    assert!(!app.world().nodes()[1].up);
    app.run_to(700_000_000);
    press(&mut app, "x");
    assert!(app.world().nodes()[1].up);
    press_code(&mut app, KeyCode::Up); // node-a
    press(&mut app, "l");
    assert!(!app.world().underlay().members[0].up);
    app.run_to(800_000_000);
    press(&mut app, "l");
    assert!(app.world().underlay().members[0].up);
    press(&mut app, "p");
    assert!(app.world().underlay().members[0].group.is_some());
    assert!(row_with(&text(&app, 80, 24), "node-a").contains("part 0"));
    app.run_to(900_000_000);
    press(&mut app, "p");
    assert!(app.world().underlay().members[0].group.is_none());
    // Services: remove pod-a as an endpoint of web, then restore it.
    press(&mut app, "3");
    press(&mut app, "e");
    assert!(!app.world().pods().contains_key("pod-a"));
    assert!(row_with(&text(&app, 80, 24), "pod-a").contains("removed"));
    app.run_to(1_100_000_000);
    press(&mut app, "e");
    // Back, with a new address as a recreated pod gets.
    assert_eq!(app.world().pods()["pod-a"].ip.to_string(), "10.0.1.254");
    app.run_to(u64::MAX);
    assert!(app.ended());
    assert_eq!(app.faults().len(), 8);

    press(&mut app, "w");
    let written = std::fs::read_to_string(app.snippet_path()).unwrap();
    std::fs::remove_file(app.snippet_path()).unwrap();
    assert_eq!(written, app.snippet());
    assert!(
        written.contains("kind: node_crash, node: 'node-b'"),
        "{written}"
    );
    assert!(
        written.contains("kind: pod_add, pod: {name: 'pod-a'"),
        "{written}"
    );

    // The quickstart has no faults: the snippet's list is its faults.
    let replay = format!("{QUICKSTART}\n{written}");
    let sc = scenario::parse("replay.yaml", &replay).unwrap();
    assert_eq!(sc.faults.len(), 8);
    let report = run::run(sc, &RunOptions::default()).unwrap();
    let live = app.report();
    assert_eq!(
        report.trace_hash,
        app.world().trace_hash(),
        "the same run, delivery for delivery"
    );
    for (a, b) in report.traffic.iter().zip(&live.traffic) {
        assert_eq!(a.failures, b.failures, "{}", a.name);
        assert_eq!(a.delivered, b.delivered, "{}", a.name);
    }
    assert!(
        live.traffic.iter().any(|t| t.failed > 0),
        "the faults made something fail: {:?}",
        live.traffic
    );
}

#[test]
fn the_packet_pane_decodes_encapsulated_frames_and_follows_hops() {
    let mut app = quickstart("packets");
    app.run_to(1_000_000_000);
    press(&mut app, "6");
    assert_eq!(app.view(), View::Packets);
    let s = text(&app, 160, 48);
    // node-a's underlay side: VXLAN between the nodes, decoded down to the inner TCP.
    assert!(s.contains("tcp [S] len 0 (vxlan)"), "{s}");
    assert!(s.contains("vxlan  vni 1"), "{s}");
    assert!(s.contains("inner ipv4"), "{s}");
    // The hops of that packet: node-a's and node-b's underlay sides and a pod.
    let hops: Vec<&str> = s
        .lines()
        .skip_while(|l| !l.contains("hops"))
        .take(8)
        .collect();
    let hops = hops.join("\n");
    assert!(hops.contains("node-a") && hops.contains("node-b"), "{hops}");
    // → moves to the next place.
    press_code(&mut app, KeyCode::Right);
    assert!(text(&app, 80, 24).contains("packets at node-b"));
}

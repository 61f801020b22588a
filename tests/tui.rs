//! `podnet tui`'s faults snippet (`w`) added to the scenario makes `podnet sim` fail the
//! same way the session did; `podnet tui` rejects a bad scenario like `podnet sim`.

use std::path::PathBuf;
use std::process::Command;

use podnet_sim::run::QUICKSTART;
use podnet_sim::scenario;
use podnet_tui::crossterm::event::{KeyCode, KeyEvent};
use podnet_tui::App;

fn podnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podnet"))
}

fn press(app: &mut App, code: KeyCode) {
    app.key(KeyEvent::from(code));
}

#[test]
fn the_faults_snippet_reproduces_the_session_in_podnet_sim() {
    let dir = std::env::temp_dir().join(format!("podnet-tui-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snippet: PathBuf = dir.join("faults.yaml");
    let sc = scenario::parse("quickstart.yaml", QUICKSTART).unwrap();
    let mut app = App::new(sc, snippet.clone()).unwrap();
    // During the service traffic: crash node-b, bring it back, then take pod-a out of
    // the service's endpoints.
    app.run_to(1_000_000_000);
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('x'));
    app.run_to(1_250_000_000);
    press(&mut app, KeyCode::Char('x'));
    press(&mut app, KeyCode::Char('3'));
    press(&mut app, KeyCode::Char('e'));
    app.run_to(u64::MAX);
    press(&mut app, KeyCode::Char('w'));
    let live = app.report().clone();
    assert!(
        live.traffic[1]
            .failures
            .get("node_down")
            .copied()
            .unwrap_or(0)
            > 0,
        "the crash made service requests fail: {:?}",
        live.traffic[1]
    );

    let written = std::fs::read_to_string(&snippet).unwrap();
    let file = dir.join("replay.yaml");
    std::fs::write(&file, format!("{QUICKSTART}\n{written}")).unwrap();
    let out = podnet()
        .arg("sim")
        .arg(&file)
        .arg("--json")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expectations fail, as in the session"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["trace_hash"], app.world().trace_hash().as_str());
    for (i, t) in live.traffic.iter().enumerate() {
        let sim = &report["traffic"][i];
        assert_eq!(sim["name"], t.name.as_str());
        assert_eq!(sim["delivered"], t.delivered, "{}", t.name);
        assert_eq!(
            sim["failures"],
            serde_json::to_value(&t.failures).unwrap(),
            "{}",
            t.name
        );
    }
}

#[test]
fn a_bad_scenario_is_refused_before_the_terminal_is_touched() {
    let dir = std::env::temp_dir().join(format!("podnet-tui-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "name: x\nsede: 4\n").unwrap();
    let out = podnet().arg("tui").arg(&file).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:2:1: unknown field `sede`"), "{err}");
}

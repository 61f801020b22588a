//! The terminal loop: raw mode and the alternate screen while it runs, restored when it
//! ends, on a panic (ratatui's hook) and on SIGTERM, SIGHUP or SIGINT; keys to the app,
//! wall time to [`App::tick`]; a frame drawn only when something changed, at most 30 a
//! second.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use podnet_sim::scenario::Scenario;
use ratatui::crossterm::event::{self, Event};
use ratatui::DefaultTerminal;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::app::App;
use crate::draw;

/// The shortest time between two frames: 30 frames a second at most.
const FRAME: Duration = Duration::from_millis(33);

/// Runs a session on `sc` in this terminal until the user quits; `w` writes the faults
/// snippet to `snippet_path`.
pub fn run(sc: Scenario, snippet_path: PathBuf) -> Result<(), String> {
    let mut app = App::new(sc, snippet_path)?;
    app.set_paused(false);
    // A signal ends the session from a thread of its own: the loop may be inside a read
    // of a terminal that hung up, which never returns.
    let mut signals = Signals::new([SIGTERM, SIGHUP, SIGINT])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            ratatui::restore();
            std::process::exit(128 + signal);
        }
    });
    // Raw mode, alternate screen, and a panic hook that restores the terminal first.
    let mut terminal = ratatui::try_init().map_err(|e| format!("terminal: {e}"))?;
    let result = event_loop(&mut terminal, &mut app);
    ratatui::restore();
    result
}

fn event_loop(terminal: &mut DefaultTerminal, app: &mut App) -> Result<(), String> {
    let io = |e: std::io::Error| format!("terminal: {e}");
    let mut last_tick = Instant::now();
    let mut last_draw: Option<Instant> = None;
    let mut pending = true;
    while !app.should_quit() {
        pending |= app.take_dirty();
        let since = last_draw.map_or(FRAME, |t| t.elapsed());
        if pending && since >= FRAME {
            terminal.draw(|f| draw::draw(f, app)).map_err(io)?;
            last_draw = Some(Instant::now());
            pending = false;
        }
        let wait = if pending {
            FRAME.saturating_sub(since)
        } else {
            FRAME
        };
        if event::poll(wait).map_err(io)? {
            // Take the keys that are waiting, for at most a frame's time: a burst of keys
            // (each `t` runs the world on) must not freeze the screen.
            let start = Instant::now();
            loop {
                match event::read().map_err(io)? {
                    Event::Key(key) => app.key(key),
                    Event::Resize(..) => pending = true,
                    _ => {}
                }
                if app.should_quit()
                    || start.elapsed() >= FRAME
                    || !event::poll(Duration::ZERO).map_err(io)?
                {
                    break;
                }
            }
        }
        let now = Instant::now();
        app.tick(now - last_tick);
        last_tick = now;
    }
    Ok(())
}

//! The terminal loop: raw mode and the alternate screen while it runs, restored when it
//! ends, on a panic (ratatui's hook) and on SIGTERM, SIGHUP or SIGINT; keys to the app,
//! wall time to [`App::tick`]; a frame drawn only when something changed, at most 30 a
//! second.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podnet_sim::scenario::Scenario;
use ratatui::crossterm::event::{self, Event};
use ratatui::DefaultTerminal;

use crate::app::App;
use crate::draw;

/// The shortest time between two frames: 30 frames a second at most.
const FRAME: Duration = Duration::from_millis(33);

/// Runs a session on `sc` in this terminal until the user quits; `w` writes the faults
/// snippet to `snippet_path`.
pub fn run(sc: Scenario, snippet_path: PathBuf) -> Result<(), String> {
    let mut app = App::new(sc, snippet_path)?;
    app.set_paused(false);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
    }
    // Raw mode, alternate screen, and a panic hook that restores the terminal first.
    let mut terminal = ratatui::try_init().map_err(|e| format!("terminal: {e}"))?;
    let result = event_loop(&mut terminal, &mut app, &stop);
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    stop: &AtomicBool,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("terminal: {e}");
    let mut last_tick = Instant::now();
    let mut last_draw: Option<Instant> = None;
    let mut pending = true;
    while !app.should_quit() && !stop.load(Ordering::Relaxed) {
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
            // Take every key that is waiting before the next frame.
            loop {
                match event::read().map_err(io)? {
                    Event::Key(key) => app.key(key),
                    Event::Resize(..) => pending = true,
                    _ => {}
                }
                if app.should_quit() || !event::poll(Duration::ZERO).map_err(io)? {
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

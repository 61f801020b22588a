//! `podnet tui`: watch and steer a simulated cluster live.
//!
//! The app ([`app::App`]) drives the simulator's step API and holds every piece of state
//! the screens show; [`draw::draw`] turns it into a frame and nothing else; [`term`] is
//! the terminal loop that feeds it keys and wall time. Tests drive the app with key events
//! and simulated time on ratatui's test backend.

pub mod app;
pub mod capture;
pub mod decode;
pub mod draw;
pub mod history;
pub mod term;
pub mod whatif;

pub use app::App;
/// The key events [`App::key`] takes.
pub use ratatui::crossterm;

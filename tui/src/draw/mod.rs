//! Drawing: a pure function of the [`App`] onto a frame. The title line names the views
//! (the current one marked), the status line the simulated time, speed, events,
//! packets/s and trace hash; between them the current view.

mod cluster;
mod events;
mod node;
mod packets;
mod services;
mod traffic;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::app::{App, Input, View, SPEEDS};

/// The selected row's style and marker (the marker shows in text captures too).
pub(crate) const MARK: &str = "▶ ";

pub(crate) fn selected() -> Style {
    Style::default()
        .add_modifier(Modifier::REVERSED)
        .add_modifier(Modifier::BOLD)
}

pub(crate) fn header() -> Style {
    Style::default()
        .fg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}

pub(crate) fn bad() -> Style {
    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
}

pub(crate) fn good() -> Style {
    Style::default().fg(Color::Green)
}

pub(crate) fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}

/// A bordered block with a title.
pub(crate) fn block(title: impl Into<String>) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(format!(" {} ", title.into()), header()))
}

/// A table whose selected row is marked, scrolled to keep it in sight.
pub(crate) fn table_with_selection(
    f: &mut Frame,
    area: Rect,
    table: Table,
    selected_row: Option<usize>,
) {
    let table = table
        .row_highlight_style(selected())
        .highlight_symbol(MARK)
        .column_spacing(1);
    let mut state = TableState::default().with_selected(selected_row);
    f.render_stateful_widget(table, area, &mut state);
}

/// A header row.
pub(crate) fn head<'a>(cells: &[&'a str]) -> Row<'a> {
    Row::new(cells.to_vec()).style(header())
}

/// Simulated time in seconds with microseconds: `1.500000s`.
pub fn time(ns: u64) -> String {
    format!("{}.{:06}s", ns / 1_000_000_000, ns % 1_000_000_000 / 1000)
}

/// A simulated speed: `100ms/s`, `max`.
pub fn speed(ns_per_s: u64) -> String {
    if ns_per_s == u64::MAX {
        return "max".into();
    }
    format!(
        "{}/s",
        podnet_sim::scenario::units::format_duration(ns_per_s)
    )
}

/// A count with k/M suffixes: `950`, `12.3k`, `4.1M`.
pub fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// Bits per second in at most four characters: `950`, `1.2k`, `469k`, `4.1M`, `10G`.
pub fn bits(bps: u64) -> String {
    let scaled = |v: f64, unit: char| {
        if v < 10.0 {
            format!("{v:.1}{unit}")
        } else {
            format!("{v:.0}{unit}")
        }
    };
    match bps {
        0..=999 => bps.to_string(),
        1_000..=999_999 => scaled(bps as f64 / 1e3, 'k'),
        1_000_000..=999_999_999 => scaled(bps as f64 / 1e6, 'M'),
        _ => scaled(bps as f64 / 1e9, 'G'),
    }
}

/// A duration given in nanoseconds, short: `850ms`, `2.5s`, `12µs`.
pub fn short_duration(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.1}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{}µs", ns / 1000)
    }
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let [title, body, input, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_title(f, title, app);
    match app.view {
        View::Cluster => cluster::draw(f, body, app),
        View::Node => node::draw(f, body, app),
        View::Services => services::draw(f, body, app),
        View::Traffic => traffic::draw(f, body, app),
        View::Events => events::draw(f, body, app),
        View::Packets => packets::draw(f, body, app),
    }
    draw_input(f, input, app);
    draw_status(f, status, app);
    if app.help {
        draw_help(f);
    }
}

fn draw_title(f: &mut Frame, area: Rect, app: &App) {
    let sc = app.world.scenario();
    let name = if area.width >= 100 {
        format!(" podnet tui · {} · seed {} ", sc.name, app.world.seed())
    } else {
        format!(" {} ", sc.name)
    };
    let mut spans = vec![Span::styled(
        name,
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (i, v) in View::ALL.iter().enumerate() {
        let text = format!(" {}:{} ", i + 1, v.name());
        spans.push(if *v == app.view {
            Span::styled(text, selected())
        } else {
            Span::styled(text, dim())
        });
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_input(f: &mut Frame, area: Rect, app: &App) {
    let line = match &app.input {
        Input::Filter => Line::from(vec![
            Span::styled("/", header()),
            Span::raw(app.filter.clone()),
            Span::styled("█", dim()),
        ]),
        Input::Command(text) => Line::from(vec![
            Span::styled(":", header()),
            Span::raw(text.clone()),
            Span::styled("█  cluster node services traffic events packets", dim()),
        ]),
        Input::Normal => match (&app.message, app.filter.is_empty()) {
            (Some(m), _) => Line::from(Span::styled(m.clone(), header())),
            (None, false) => Line::from(vec![
                Span::styled("filter: ", dim()),
                Span::raw(app.filter.clone()),
                Span::styled("  (esc clears)", dim()),
            ]),
            (None, true) => Line::from(Span::styled(hint(app.view), dim())),
        },
    };
    f.render_widget(Paragraph::new(line), area);
}

/// The keys that matter most in a view, for the line above the status bar.
fn hint(view: View) -> &'static str {
    match view {
        View::Cluster => {
            "↑↓ node  enter details  x crash  l link  p partition  / filter  : view  ? help"
        }
        View::Node => "↑↓ node  ←→ table  x crash  l link  p partition  enter packets  esc back",
        View::Services => "↑↓ service  ←→ endpoint  e remove/restore endpoint  / filter  esc back",
        View::Traffic => "↑↓ traffic  enter its events  / filter  esc back",
        View::Events => "↑↓ scroll  / filter  esc back",
        View::Packets => "←→ place  ↑↓ packet  / filter  esc back",
    }
}

fn draw_status(f: &mut Frame, area: Rect, app: &App) {
    let w = &app.world;
    let state = if app.ended() {
        Span::styled(" ■ ended ", bad())
    } else if app.paused {
        Span::styled(" ⏸ paused ", header())
    } else {
        Span::styled(" ▶ run ", good())
    };
    let end = podnet_sim::scenario::units::format_duration(w.end_ns());
    let pps = count(app.history.packets_ps.last());
    let text = if area.width >= 100 {
        format!(
            " t {} / {end} │ speed {} │ events {} │ {pps} pkt/s │ trace hash {} │ ? help",
            time(w.now()),
            speed(SPEEDS[app.speed]),
            w.events(),
            w.trace_hash(),
        )
    } else {
        format!(
            "{}/{end}│{}│ev {}│{pps} pkt/s│{}",
            time(w.now()),
            speed(SPEEDS[app.speed]),
            count(w.events()),
            w.trace_hash(),
        )
    };
    let line = Line::from(vec![state, Span::raw(text)]);
    f.render_widget(
        Paragraph::new(line).style(Style::default().add_modifier(Modifier::REVERSED)),
        area,
    );
}

/// Every key, in a box over the view.
pub const HELP: &[(&str, &str)] = &[
    (
        "1..6, tab, :NAME",
        "views: cluster node services traffic events packets",
    ),
    ("↑↓ j k, pgup pgdn, g G", "select a row"),
    ("←→", "endpoint (services), table (node), place (packets)"),
    (
        "enter / esc",
        "drill down / back (esc first clears a filter)",
    ),
    ("/", "filter the view (enter keeps it, esc clears it)"),
    ("space", "pause / resume"),
    ("n / t", "one event / one simulated millisecond"),
    ("+ / -", "faster / slower (1µs/s .. max)"),
    ("x", "crash / restart the selected node"),
    ("l", "the selected node's underlay link down / up"),
    ("p", "partition the selected node from the rest / heal"),
    ("e", "remove / restore the selected endpoint (services)"),
    ("w", "write the session's faults as a faults: snippet"),
    ("", "(to --faults-out, default podnet-tui-faults.yaml)"),
    ("?", "this help"),
    ("q, ctrl-c", "quit"),
];

fn draw_help(f: &mut Frame) {
    let area = f.area();
    let width = area.width.min(76);
    let height = (HELP.len() as u16 + 4).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let rows: Vec<Row> = HELP
        .iter()
        .map(|(k, v)| Row::new(vec![k.to_string(), v.to_string()]))
        .collect();
    let table =
        Table::new(rows, [Constraint::Length(22), Constraint::Min(10)]).block(block("keys"));
    f.render_widget(Clear, rect);
    f.render_widget(table, rect);
}

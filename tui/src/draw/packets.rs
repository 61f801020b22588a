//! The packet pane: the last packets at the selected place (a node's underlay side or a
//! pod's interface), the selected one decoded layer by layer, and its hops: every place
//! the simulator captured the same packet (see [`crate::decode::PacketKey`]) around that
//! time.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;

use super::{block, dim, head, header, table_with_selection, time};
use crate::app::App;

/// How far apart in simulated time two captures of one packet may be.
const HOP_WINDOW_NS: u64 = 10_000_000;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let [places, list, detail] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length((area.height / 2).max(6)),
    ])
    .areas(area);

    // The place strip: neighbours of the selected place, ←→ to move.
    let all = app.places();
    let at = all.iter().position(|p| *p == app.sel.place).unwrap_or(0);
    let from = at.saturating_sub(3);
    let mut spans = vec![Span::styled(" place: ", dim())];
    for (k, p) in all.iter().enumerate().skip(from).take(7) {
        spans.push(if k == at {
            Span::styled(format!("[{p}]"), header())
        } else {
            Span::styled(format!(" {p} "), dim())
        });
    }
    f.render_widget(Paragraph::new(Line::from(spans)), places);

    let packets = app.packets();
    let rows: Vec<Row> = packets
        .iter()
        .map(|c| {
            Row::new(vec![
                time(c.at_ns),
                c.frame.len().to_string(),
                c.decode(&app.encap).summary(),
            ])
        })
        .collect();
    let n = rows.len();
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(5),
            Constraint::Min(20),
        ],
    )
    .header(head(&["TIME", "BYTES", "PACKET"]))
    .block(block(format!(
        "last {n} packets at {} (newest last)",
        app.sel.place
    )));
    let selected_row = n.checked_sub(1 + app.sel.packet);
    table_with_selection(f, list, table, selected_row);

    let [layers, hops] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(detail);
    let Some(c) = app.selected_packet() else {
        f.render_widget(
            Paragraph::new("no packets captured here yet: run the simulation (space, n, t)")
                .block(block("layers")),
            layers,
        );
        return;
    };
    let decoded = c.decode(&app.encap);
    let lines: Vec<Line> = decoded
        .layers
        .iter()
        .map(|l| {
            let indent = if l.inner { "  inner " } else { "" };
            Line::from(vec![
                Span::styled(format!("{indent}{:<6}", l.name), header()),
                Span::raw(format!(" {}", l.detail)),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(block(format!("layers · {} bytes", c.frame.len()))),
        layers,
    );

    let hop_lines: Vec<Line> = match c.key {
        Some(key) => app
            .captures
            .hops(key, c.at_ns, HOP_WINDOW_NS)
            .into_iter()
            .map(|h| {
                let mark = if std::ptr::eq(h.frame.as_ref(), c.frame.as_ref()) {
                    "▶"
                } else {
                    " "
                };
                Line::from(vec![
                    Span::raw(format!("{mark}{} ", time(h.at_ns))),
                    Span::styled(format!("{:<8}", h.place), header()),
                    Span::raw(format!(" {}", h.decode(&app.encap).summary())),
                ])
            })
            .collect(),
        None => vec![Line::styled("not an IPv4 packet", dim())],
    };
    f.render_widget(
        Paragraph::new(hop_lines).block(block("hops (captured by the simulator)")),
        hops,
    );
}

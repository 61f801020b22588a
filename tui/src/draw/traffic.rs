//! The traffic view: each traffic entry with sent / delivered / failures by reason, RTT
//! p50/p99 and whether its expectations hold so far; the selected one in detail below.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::{bad, block, dim, good, head, header, table_with_selection};
use crate::app::App;

/// Failures by reason in one cell: `node_down 12, timeout 3`.
fn failures(f: &std::collections::BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = f.iter().filter(|(_, &n)| n > 0).collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let sc = app.world.scenario();
    let visible = app.visible_traffic();
    let [list, detail] = Layout::vertical([Constraint::Min(4), Constraint::Length(9)]).areas(area);
    let wide = area.width >= 120;
    let rows: Vec<Row> = visible
        .iter()
        .map(|&i| {
            let t = &app.report.traffic[i];
            let (pending, _, _) = app.outcomes(i);
            let expects: Vec<bool> = sc
                .expect
                .iter()
                .zip(&app.report.expectations)
                .filter(|(e, _)| e.traffic == t.name)
                .map(|(_, r)| r.passed)
                .collect();
            let held = expects.iter().filter(|&&p| p).count();
            let verdict = if expects.is_empty() {
                Cell::from("-").style(dim())
            } else if held == expects.len() {
                Cell::from(format!("✓ {held}/{}", expects.len())).style(good())
            } else {
                Cell::from(format!("✗ {held}/{}", expects.len())).style(bad())
            };
            let mut cells = vec![Cell::from(t.name.clone()), Cell::from(t.kind.clone())];
            if wide {
                cells.push(Cell::from(format!("{} > {}", t.from, t.to)));
            }
            cells.extend([
                Cell::from(t.sent.to_string()),
                Cell::from(t.delivered.to_string()),
                Cell::from(pending.to_string()),
                Cell::from(failures(&t.failures)).style(if t.failed > 0 { bad() } else { dim() }),
                Cell::from(format!("{:.0}", t.rtt_us.p50)),
                Cell::from(format!("{:.0}", t.rtt_us.p99)),
                verdict,
            ]);
            Row::new(cells)
        })
        .collect();
    let mut headers = vec!["TRAFFIC", "KIND"];
    let mut widths = vec![Constraint::Length(14), Constraint::Length(4)];
    if wide {
        headers.push("FROM > TO");
        widths.push(Constraint::Length(30));
    }
    headers.extend(["SENT", "OK", "WAIT", "FAILED", "P50µs", "P99µs", "EXPECT"]);
    widths.extend([
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Min(12),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(6),
    ]);
    let table = Table::new(rows, widths)
        .header(head(&headers))
        .block(block(format!(
            "traffic ({} of {})",
            visible.len(),
            sc.traffic.len()
        )));
    let at = visible.iter().position(|&i| i == app.sel.traffic);
    table_with_selection(f, list, table, at);

    let Some(t) = app.report.traffic.get(app.sel.traffic) else {
        return;
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{} ", t.name), header()),
        Span::raw(format!("{} from {} to {}", t.kind, t.from, t.to)),
    ])];
    let by_endpoint: Vec<String> = t
        .by_endpoint
        .iter()
        .map(|(k, c)| {
            let failed = c.total() - c.delivered;
            if failed == 0 {
                format!("{k} {}", c.delivered)
            } else {
                format!("{k} {} ({failed} failed)", c.delivered)
            }
        })
        .collect();
    lines.push(Line::raw(format!("endpoints: {}", by_endpoint.join(", "))));
    let seen: Vec<String> = t
        .source_seen
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    lines.push(Line::raw(format!("source seen: {}", seen.join(", "))));
    let why = failures(&t.failures);
    lines.push(if why.is_empty() {
        Line::styled("failures: none", dim())
    } else {
        Line::styled(format!("failures: {why}"), bad())
    });
    for (e, r) in sc.expect.iter().zip(&app.report.expectations) {
        if e.traffic == t.name {
            let (mark, style) = if r.passed {
                ("✓", good())
            } else {
                ("✗", bad())
            };
            lines.push(Line::styled(
                format!("{mark} expect {} (so far: {})", r.expect, r.actual),
                style,
            ));
        }
    }
    f.render_widget(
        Paragraph::new(lines).block(block("selected traffic")),
        detail,
    );
}

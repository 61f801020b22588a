//! The events pane: the simulator's recent log (faults, drops with reasons, request
//! results), the user's faults and expectation results, newest at the bottom.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{bad, block, dim, header, selected, time};
use crate::app::{App, Source};

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let events = app.events();
    let height = area.height.saturating_sub(2) as usize;
    // `sel.event` counts up from the newest line; that line is shown highlighted.
    let newest_shown = events.len().saturating_sub(app.sel.event);
    let first = newest_shown.saturating_sub(height);
    let lines: Vec<Line> = events[first..newest_shown]
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let (who, style) = match e.source {
                Source::User => ("you   ", header()),
                Source::Expect => ("expect", ratatui::style::Style::default()),
                Source::Sim => ("sim   ", dim()),
            };
            let text_style = if e.text.contains("dropped")
                || e.text.contains("failed")
                || e.text.contains("fails")
            {
                bad()
            } else {
                style
            };
            let line = Line::from(vec![
                Span::styled(format!("{} ", time(e.at_ns)), dim()),
                Span::styled(format!("{who} "), style),
                Span::styled(e.text.clone(), text_style),
            ]);
            if app.sel.event > 0 && first + k + 1 == newest_shown {
                line.style(selected())
            } else {
                line
            }
        })
        .collect();
    let title = if app.filter.is_empty() {
        format!("events ({})", events.len())
    } else {
        format!("events matching {:?} ({})", app.filter, events.len())
    };
    f.render_widget(Paragraph::new(lines).block(block(title)), area);
}

//! The cluster view: a summary line, every node in a scrolling table (subnet, underlay
//! address, state, its link with load and down/partition marks, pods, packets/s, drops/s
//! and the top drop reason), and the pods of the selected node.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::{bad, bits, block, count, dim, good, head, table_with_selection};
use crate::app::App;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let w = &app.world;
    let pods_on = |name: &str| w.pods().values().filter(|p| p.node == name).count();
    let pod_rows = w
        .nodes()
        .get(app.sel.node)
        .map_or(0, |n| pods_on(&n.spec.name)) as u16;
    let pods_height = (pod_rows + 3).clamp(4, area.height / 3);
    let [summary, nodes, pods] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(pods_height),
    ])
    .areas(area);

    let up = w.nodes().iter().filter(|n| n.up).count();
    let down = w.nodes().len() - up;
    let line = Line::from(vec![
        Span::raw(format!(" nodes {up} up, ")),
        Span::styled(
            format!("{down} down"),
            if down > 0 { bad() } else { Style::default() },
        ),
        Span::raw(format!(
            " │ pods {} │ services {} │ {} pkt/s │ ",
            w.pods().len(),
            w.scenario().services.len(),
            count(app.history.packets_ps.last()),
        )),
        Span::styled(
            format!("{} drops/s", count(app.history.drops_ps.last())),
            if app.history.drops_ps.last() > 0 {
                bad()
            } else {
                Style::default()
            },
        ),
    ]);
    f.render_widget(Paragraph::new(line), summary);

    let wide = area.width >= 120;
    let visible = app.visible_nodes();
    let rows: Vec<Row> = visible
        .iter()
        .map(|&i| {
            let n = &w.nodes()[i];
            let rates = &app.history.nodes[i];
            // As of the last sample: reading every node's counters on every frame would
            // scan every conntrack table.
            let drops = &rates.drops;
            let top = drops
                .first()
                .map(|(r, c)| {
                    if wide {
                        format!("{r} {}", count(*c))
                    } else {
                        r.clone()
                    }
                })
                .unwrap_or_default();
            let link = app.link_word(i);
            // Load as bits per second through the node's link: at 10 Gbit/s a share
            // would read 0.0% for most of what a simulation sends.
            let link_text = if link == "up" {
                format!("up {}", bits(rates.underlay_bps.last()))
            } else {
                link.clone()
            };
            let mut pods: Vec<String> = w
                .pods()
                .values()
                .filter(|p| p.node == n.spec.name)
                .map(|p| {
                    if wide {
                        format!("{} {}", p.name, p.ip)
                    } else {
                        p.name.clone()
                    }
                })
                .collect();
            let pod_count = pods.len();
            pods.truncate(8);
            let drop_rate = rates.drops_ps.last();
            let cells = vec![
                Cell::from(n.spec.name.clone()),
                Cell::from(n.spec.subnet.to_string()),
                Cell::from(n.spec.ip.to_string()),
                if n.up {
                    Cell::from("up").style(good())
                } else {
                    Cell::from("DOWN").style(bad())
                },
                if link == "up" {
                    Cell::from(link_text)
                } else {
                    Cell::from(link_text).style(bad())
                },
                Cell::from(count(rates.rx_pps.last())),
                Cell::from(count(drop_rate)).style(if drop_rate > 0 { bad() } else { dim() }),
                Cell::from(top).style(if drops.is_empty() { dim() } else { bad() }),
                Cell::from(if wide {
                    format!("{pod_count}: {}", pods.join(", "))
                } else {
                    pod_count.to_string()
                }),
            ];
            Row::new(cells)
        })
        .collect();
    let widths = if wide {
        vec![
            Constraint::Length(14),
            Constraint::Length(15),
            Constraint::Length(13),
            Constraint::Length(5),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(16),
            Constraint::Min(10),
        ]
    } else {
        // 80 columns: 76 inside the border and the selection mark.
        vec![
            Constraint::Length(10),
            Constraint::Length(13),
            Constraint::Length(12),
            Constraint::Length(4),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Length(4),
        ]
    };
    let headers = if wide {
        [
            "NODE",
            "SUBNET",
            "UNDERLAY",
            "STATE",
            "LINK BIT/S",
            "PKT/S",
            "DROP/S",
            "TOP DROP",
            "PODS",
        ]
    } else {
        [
            "NODE", "SUBNET", "UNDERLAY", "STAT", "LINK", "PKT/S", "DR/S", "TOP DROP", "PODS",
        ]
    };
    let table = Table::new(rows, widths)
        .header(head(&headers))
        .block(block(format!(
            "nodes ({} of {})",
            visible.len(),
            w.nodes().len()
        )));
    let at = visible.iter().position(|&i| i == app.sel.node);
    table_with_selection(f, nodes, table, at);

    draw_pods(f, pods, app);
}

fn draw_pods(f: &mut Frame, area: Rect, app: &App) {
    let w = &app.world;
    let Some(node) = w.nodes().get(app.sel.node) else {
        return;
    };
    let rows: Vec<Row> = w
        .pods()
        .values()
        .filter(|p| p.node == node.spec.name)
        .map(|p| {
            let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let listen: Vec<String> = p
                .listen
                .iter()
                .map(|l| format!("{}/{}", l.port, l.protocol.as_str()))
                .collect();
            Row::new(vec![
                p.name.clone(),
                p.ip.to_string(),
                labels.join(","),
                listen.join(","),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(16),
            Constraint::Length(15),
            Constraint::Min(10),
            Constraint::Min(8),
        ],
    )
    .header(head(&["POD", "IP", "LABELS", "LISTEN"]))
    .block(block(format!("pods on {}", node.spec.name)));
    f.render_widget(table, area);
}

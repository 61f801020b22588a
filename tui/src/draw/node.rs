//! The node view: the selected node's counters, sparklines of its rates over simulated
//! time, drops by reason, and one of its tables (MAC, neighbours, peers and routes,
//! conntrack), chosen with ←→.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Sparkline, Table, Tabs};
use ratatui::Frame;

use super::{bad, bits, block, count, dim, good, head, header, selected, short_duration};
use crate::app::App;

/// The tables of the bottom pane, in ←→ order.
pub const TABLES: [&str; 4] = ["MAC table", "neighbours", "peers / routes", "conntrack"];

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let w = &app.world;
    let Some(node) = w.nodes().get(app.sel.node) else {
        return;
    };
    let i = app.sel.node;
    let [head_line, top, tabs, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(if area.height >= 30 { 14 } else { 9 }),
        Constraint::Length(1),
        Constraint::Min(3),
    ])
    .areas(area);

    let link = app.link_word(i);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(format!(" {} ", node.spec.name), header()),
            Span::raw(format!(
                "{} · {} · underlay {} · ",
                node.spec.role.as_str(),
                node.spec.subnet,
                node.spec.ip
            )),
            if node.up {
                Span::styled("up", good())
            } else {
                Span::styled("DOWN", bad())
            },
            Span::raw(" · link "),
            if link == "up" {
                Span::styled(
                    if area.width >= 100 {
                        format!(
                            "up {}bit/s ({:.3}% of its bandwidth)",
                            bits(app.history.nodes[i].underlay_bps.last()),
                            app.link_load(i) * 100.0
                        )
                    } else {
                        format!("up {}bit/s", bits(app.history.nodes[i].underlay_bps.last()))
                    },
                    good(),
                )
            } else {
                Span::styled(link, bad())
            },
        ])),
        head_line,
    );

    let [counters, drops, sparks] = Layout::horizontal([
        Constraint::Length(24),
        Constraint::Length(22),
        Constraint::Min(20),
    ])
    .areas(top);
    let c = node.switch.counters();
    let pairs = [
        ("rx packets", c.rx_packets),
        ("tx packets", c.tx_packets),
        ("encap", c.encap),
        ("decap", c.decap),
        ("dnat", c.dnat),
        ("snat", c.snat),
        ("forwarded", c.forwarded),
        ("generated", c.generated),
        ("queued (arp)", c.queued),
        ("mac entries", c.mac_entries),
        ("conntrack", c.conntrack_entries),
        ("mac table full", c.mac_table_full),
    ];
    let rows: Vec<Row> = pairs
        .iter()
        .map(|(k, v)| Row::new(vec![k.to_string(), count(*v)]))
        .collect();
    f.render_widget(
        Table::new(rows, [Constraint::Length(14), Constraint::Min(6)]).block(block("counters")),
        counters,
    );
    let drop_rows: Vec<Row> = app
        .node_drops(i)
        .into_iter()
        .map(|(r, n)| Row::new(vec![r, count(n)]).style(bad()))
        .collect();
    let drop_rows = if drop_rows.is_empty() {
        vec![Row::new(vec!["none".to_string(), String::new()]).style(dim())]
    } else {
        drop_rows
    };
    f.render_widget(
        Table::new(drop_rows, [Constraint::Length(13), Constraint::Min(5)])
            .block(block("drops by reason")),
        drops,
    );

    let rates = &app.history.nodes[i];
    let series = [
        ("rx pkt/s", &rates.rx_pps),
        ("tx pkt/s", &rates.tx_pps),
        ("drops/s", &rates.drops_ps),
    ];
    let rows = Layout::vertical([Constraint::Ratio(1, 3); 3]).split(sparks);
    let step = short_duration(app.history.interval_ns());
    for ((name, s), area) in series.into_iter().zip(rows.iter()) {
        let width = area.width.saturating_sub(2) as usize;
        let data = s.tail(width);
        let style = if name == "drops/s" { bad() } else { good() };
        f.render_widget(
            Sparkline::default()
                .block(block(format!("{name} {} (per {step})", count(s.last()))))
                .data(data)
                .style(style),
            *area,
        );
    }

    f.render_widget(
        Tabs::new(TABLES.to_vec())
            .select(app.sel.node_table)
            .highlight_style(selected())
            .divider("│"),
        tabs,
    );
    draw_table(f, bottom, app, i);
}

fn draw_table(f: &mut Frame, area: Rect, app: &App, i: usize) {
    let w = &app.world;
    let node = &w.nodes()[i];
    let now = w.now();
    let (headers, rows, widths): (Vec<&str>, Vec<Row>, Vec<Constraint>) = match app.sel.node_table {
        0 => {
            // Port numbers mean little to a reader: name the pod (or underlay, host).
            let snapshot = node.switch.control().load();
            let rows = node
                .switch
                .mac_entries(now)
                .into_iter()
                .map(|e| {
                    let port = snapshot
                        .port(podnet_switch::PortId(e.port))
                        .map(|p| p.name.clone())
                        .unwrap_or_else(|| e.port.to_string());
                    Row::new(vec![e.mac.to_string(), port, short_duration(e.age_ns)])
                })
                .collect();
            (
                vec!["MAC", "PORT", "AGE"],
                rows,
                vec![
                    Constraint::Length(18),
                    Constraint::Length(16),
                    Constraint::Min(6),
                ],
            )
        }
        1 => {
            let rows = node
                .switch
                .neighbour_entries(now)
                .into_iter()
                .map(|e| {
                    Row::new(vec![
                        e.ip.to_string(),
                        e.mac.to_string(),
                        short_duration(e.age_ns),
                    ])
                })
                .collect();
            (
                vec!["IP", "MAC", "AGE"],
                rows,
                vec![
                    Constraint::Length(16),
                    Constraint::Length(18),
                    Constraint::Min(6),
                ],
            )
        }
        2 => {
            let rows = w
                .nodes()
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, p)| {
                    let state = if !p.up {
                        "node down".to_string()
                    } else {
                        format!("link {}", app.link_word(j))
                    };
                    Row::new(vec![
                        p.spec.subnet.to_string(),
                        format!("via {}", p.spec.ip),
                        p.spec.name.clone(),
                        state,
                    ])
                })
                .collect();
            (
                vec!["SUBNET", "ROUTE", "PEER", "STATE"],
                rows,
                vec![
                    Constraint::Length(16),
                    Constraint::Length(18),
                    Constraint::Length(14),
                    Constraint::Min(8),
                ],
            )
        }
        _ => {
            let rows = node
                .switch
                .conntrack_entries(now)
                .into_iter()
                .map(|e| {
                    // Only what the translation changed: the new destination (DNAT), the
                    // new source (SNAT), or both.
                    let mut xlat = Vec::new();
                    if e.to_dst != e.dst {
                        xlat.push(format!("dnat {}", e.to_dst));
                    }
                    if e.to_src != e.src {
                        xlat.push(format!("snat {}", e.to_src));
                    }
                    Row::new(vec![
                        e.protocol.to_string(),
                        format!("{}>{}", e.src, e.dst),
                        xlat.join(" "),
                        e.state.to_string(),
                        short_duration(e.expires_in_ns),
                    ])
                })
                .collect();
            (
                vec!["PROTO", "TUPLE", "TRANSLATION", "STATE", "EXPIRES"],
                rows,
                vec![
                    Constraint::Length(5),
                    Constraint::Min(27),
                    Constraint::Min(20),
                    Constraint::Length(11),
                    Constraint::Length(7),
                ],
            )
        }
    };
    let n = rows.len();
    let title = format!("{} ({n})", TABLES[app.sel.node_table.min(3)]);
    f.render_widget(
        Table::new(rows, widths)
            .header(head(&headers))
            .block(block(title)),
        area,
    );
}

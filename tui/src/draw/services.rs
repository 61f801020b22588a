//! The services view: each service (VIP, ports, node ports, affinity, policy), and the
//! endpoints of the selected one with a bar of the connections each received.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use podnet_sim::scenario::{ServiceType, SessionAffinity, TrafficPolicy};

use super::{bad, block, dim, good, head, selected, table_with_selection, MARK};
use crate::app::App;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let sc = app.world.scenario();
    let visible = app.visible_services();
    let list_height = (visible.len() as u16 + 3).clamp(4, area.height / 2);
    let [list, endpoints] =
        Layout::vertical([Constraint::Length(list_height), Constraint::Min(4)]).areas(area);
    let rows: Vec<Row> = visible
        .iter()
        .map(|&i| {
            let s = &sc.services[i];
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| {
                    let mut t = format!("{}>{}/{}", p.port, p.target_port, p.protocol.as_str());
                    if let Some(np) = p.node_port {
                        t.push_str(&format!(" node:{np}"));
                    }
                    t
                })
                .collect();
            let eps = app.endpoints(s);
            let present = eps.iter().filter(|e| e.present).count();
            let kind = match s.service_type {
                ServiceType::ClusterIp => "ClusterIP",
                ServiceType::NodePort => "NodePort",
                ServiceType::LoadBalancer => "LoadBalancer",
            };
            let affinity = match s.session_affinity {
                SessionAffinity::None => "None",
                SessionAffinity::ClientIp => "ClientIP",
            };
            let policy = match s.external_traffic_policy {
                TrafficPolicy::Cluster => "Cluster",
                TrafficPolicy::Local => "Local",
            };
            Row::new(vec![
                Cell::from(s.name.clone()),
                Cell::from(kind),
                Cell::from(s.cluster_ip.to_string()),
                Cell::from(ports.join(", ")),
                Cell::from(affinity),
                Cell::from(policy),
                Cell::from(format!("{present}/{}", eps.len())).style(if present == 0 {
                    bad()
                } else {
                    good()
                }),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Min(14),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(4),
        ],
    )
    .header(head(&[
        "SERVICE", "TYPE", "VIP", "PORTS", "AFFINITY", "POLICY", "EPS",
    ]))
    .block(block(format!(
        "services ({} of {})",
        visible.len(),
        sc.services.len()
    )));
    let at = visible.iter().position(|&i| i == app.sel.service);
    table_with_selection(f, list, table, at);
    draw_endpoints(f, endpoints, app);
}

fn draw_endpoints(f: &mut Frame, area: Rect, app: &App) {
    let sc = app.world.scenario();
    let Some(svc) = sc.services.get(app.sel.service) else {
        f.render_widget(
            Paragraph::new("no services in this scenario").block(block("endpoints")),
            area,
        );
        return;
    };
    // Connections each endpoint received, from the traffic aimed at this service.
    let traffic = app.traffic_of(svc);
    let received = |pod: &str| -> u64 {
        traffic
            .iter()
            .filter_map(|&t| app.report.traffic.get(t))
            .map(|r| r.by_endpoint.get(pod).map_or(0, |c| c.delivered))
            .sum()
    };
    let eps = app.endpoints(svc);
    let most = eps.iter().map(|e| received(&e.pod.name)).max().unwrap_or(0);
    let total: u64 = eps.iter().map(|e| received(&e.pod.name)).sum();
    // What the columns before the bar and the share after it leave, inside the border.
    let bar_width = area.width.saturating_sub(2 + 64 + 5).max(3) as u64;
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "  {:<14} {:<15} {:<12} {:<9} {:>6}  CONNECTIONS",
            "ENDPOINT", "IP", "NODE", "STATE", "COUNT"
        ),
        super::header(),
    ))];
    // A window of rows that keeps the selected endpoint in sight.
    let rows = area.height.saturating_sub(3).max(1) as usize;
    let first = app.sel.endpoint.saturating_sub(rows - 1);
    for (k, e) in eps.iter().enumerate().skip(first).take(rows) {
        let n = received(&e.pod.name);
        let node_up = app
            .world
            .nodes()
            .iter()
            .find(|x| x.spec.name == e.pod.node)
            .is_none_or(|x| x.up);
        let state = match (e.present, node_up) {
            (false, _) => "removed",
            (true, false) => "node down",
            (true, true) => "ready",
        };
        let bar = if most == 0 {
            0
        } else {
            (n * bar_width).div_ceil(most)
        };
        let mark = if k == app.sel.endpoint { MARK } else { "  " };
        let share = if total == 0 {
            String::new()
        } else {
            format!(" {:.1}%", n as f64 * 100.0 / total as f64)
        };
        let text = format!(
            "{mark}{:<14} {:<15} {:<12} {:<9} {:>6}  ",
            e.pod.name, e.pod.ip, e.pod.node, state, n
        );
        let style = if k == app.sel.endpoint {
            selected()
        } else if state == "ready" {
            ratatui::style::Style::default()
        } else {
            bad()
        };
        lines.push(Line::from(vec![
            Span::styled(text, style),
            Span::styled("█".repeat(bar as usize), good()),
            Span::styled(share, dim()),
        ]));
    }
    if eps.is_empty() {
        lines.push(Line::from(Span::styled(
            "  no endpoints: connections to it are rejected (no_endpoints)",
            bad(),
        )));
    }
    let mut names: Vec<String> = traffic
        .iter()
        .take(3)
        .map(|&t| sc.traffic[t].name.clone())
        .collect();
    if traffic.len() > 3 {
        names.push(format!("{} more", traffic.len() - 3));
    }
    let title = if names.is_empty() {
        format!(
            "{} endpoints of {} (no traffic aims at it)",
            eps.len(),
            svc.name
        )
    } else {
        format!(
            "{} endpoints of {} · connections from {}",
            eps.len(),
            svc.name,
            names.join(", ")
        )
    };
    f.render_widget(Paragraph::new(lines).block(block(title)), area);
}

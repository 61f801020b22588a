//! The app's state and how keys and time change it; drawing lives in [`crate::draw`].
//!
//! Time is given, never read: [`App::tick`] takes the wall time that passed (the terminal
//! loop measures it, tests make it up), and the simulated time it buys follows from the
//! speed. So a test that sends the same keys and ticks sees the same screens.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use podnet_sim::inspect::EncapPorts;
use podnet_sim::report::{ExpectationReport, Outcome, TrafficReport};
use podnet_sim::run;
use podnet_sim::scenario::{FaultKind, Pod, Scenario, Service, TrafficTarget};
use podnet_sim::world::{Options, World};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::capture::{Captured, Captures};
use crate::history::History;
use crate::whatif::{self, UserFault};

/// Simulated time per wall second, slowest first; `u64::MAX` runs as fast as it can.
pub const SPEEDS: [u64; 9] = [
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    u64::MAX,
];

/// The speed a session starts with: 100 ms of simulated time per second.
const START_SPEED: usize = 5;

/// Events one tick may process, so that the screen stays responsive at any speed.
pub const TICK_EVENTS: u64 = 20_000;

/// Lines of the app's own events kept (user faults, expectation results).
const OWN_EVENTS: usize = 1000;

/// The views, in the order of their number keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Cluster,
    Node,
    Services,
    Traffic,
    Events,
    Packets,
}

impl View {
    pub const ALL: [View; 6] = [
        View::Cluster,
        View::Node,
        View::Services,
        View::Traffic,
        View::Events,
        View::Packets,
    ];

    pub fn name(self) -> &'static str {
        match self {
            View::Cluster => "cluster",
            View::Node => "node",
            View::Services => "services",
            View::Traffic => "traffic",
            View::Events => "events",
            View::Packets => "packets",
        }
    }

    /// The view a `:` command names: its name or a prefix of it (`:svc` too).
    fn from_command(word: &str) -> Option<View> {
        let word = word.trim();
        if word.is_empty() {
            return None;
        }
        if word == "svc" {
            return Some(View::Services);
        }
        View::ALL.into_iter().find(|v| v.name().starts_with(word))
    }
}

/// What keys go to: the views, or a line being typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Normal,
    /// `/`: the filter, applied as it is typed.
    Filter,
    /// `:`: a view's name.
    Command(String),
}

/// Who an event line is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The simulator's log: faults, drops, request results.
    Sim,
    /// A fault the user gave.
    User,
    /// An expectation's result changed.
    Expect,
}

/// One line of the events pane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLine {
    pub at_ns: u64,
    pub source: Source,
    pub text: String,
}

/// The selected row of each view (indices into the unfiltered lists).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub node: usize,
    pub service: usize,
    pub endpoint: usize,
    pub traffic: usize,
    /// Lines scrolled up from the newest event.
    pub event: usize,
    /// The packet pane's place: a node's or a pod's name.
    pub place: String,
    /// Packets up from the newest at the place.
    pub packet: usize,
    /// The node view's table: MAC, neighbours, peers, conntrack.
    pub node_table: usize,
}

/// An endpoint of a service: a pod that is, or was until the user removed it, selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub pod: Pod,
    /// False when the user removed it (`e`).
    pub present: bool,
}

/// The traffic results and expectations so far (the report without the nodes' counters,
/// which the views read live).
#[derive(Clone, Debug)]
pub struct Progress {
    pub traffic: Vec<TrafficReport>,
    pub expectations: Vec<ExpectationReport>,
}

impl Progress {
    fn of(world: &World) -> Progress {
        let (traffic, expectations) = run::traffic_and_expectations(world);
        Progress {
            traffic,
            expectations,
        }
    }
}

/// The whole app.
pub struct App {
    pub(crate) world: World,
    pub(crate) encap: EncapPorts,
    pub(crate) report: Progress,
    pub(crate) history: History,
    pub(crate) captures: Captures,
    pub(crate) faults: Vec<UserFault>,
    /// Pods the user removed as endpoints, to restore them as they were.
    removed: Vec<Pod>,
    own_events: VecDeque<EventLine>,
    expect_state: Vec<bool>,
    pub(crate) view: View,
    back: Vec<View>,
    pub(crate) paused: bool,
    pub(crate) speed: usize,
    owed_ns: f64,
    pub(crate) sel: Selection,
    pub(crate) filter: String,
    pub(crate) input: Input,
    pub(crate) help: bool,
    quit: bool,
    pub(crate) message: Option<String>,
    dirty: bool,
    snippet_path: PathBuf,
}

impl App {
    /// A session on `sc` at time 0, paused; `w` writes the faults snippet to
    /// `snippet_path`.
    pub fn new(sc: Scenario, snippet_path: PathBuf) -> Result<App, String> {
        let encap = EncapPorts::of(&sc.cluster);
        // Samples fine enough for a sparkline across the run, but not finer than 1 ms.
        let sample_ns = (sc.duration_ns / 200).max(1_000_000);
        let mut world = World::new(
            sc,
            &Options {
                log: true,
                ..Options::default()
            },
        )?;
        world.enable_capture();
        let history = History::new(&world, sample_ns);
        let report = Progress::of(&world);
        let expect_state = report.expectations.iter().map(|e| e.passed).collect();
        let place = world
            .nodes()
            .first()
            .map(|n| n.spec.name.clone())
            .unwrap_or_default();
        Ok(App {
            world,
            encap,
            report,
            history,
            captures: Captures::default(),
            faults: Vec::new(),
            removed: Vec::new(),
            own_events: VecDeque::new(),
            expect_state,
            view: View::Cluster,
            back: Vec::new(),
            paused: true,
            speed: START_SPEED,
            owed_ns: 0.0,
            sel: Selection {
                place,
                ..Selection::default()
            },
            filter: String::new(),
            input: Input::Normal,
            help: false,
            quit: false,
            message: None,
            dirty: true,
            snippet_path,
        })
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn report(&self) -> &Progress {
        &self.report
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub fn faults(&self) -> &[UserFault] {
        &self.faults
    }

    /// Where `w` writes the faults snippet.
    pub fn snippet_path(&self) -> &std::path::Path {
        &self.snippet_path
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        self.dirty = true;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether something changed since the last [`App::take_dirty`].
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Whether the run has reached its end.
    pub fn ended(&self) -> bool {
        self.world.now() >= self.world.end_ns() && self.world.next_event_at().is_none()
    }

    // ---- time --------------------------------------------------------------------------

    /// `wall` of real time passed: unless paused, runs the simulated time it buys at the
    /// current speed (at most [`TICK_EVENTS`] events).
    pub fn tick(&mut self, wall: Duration) {
        if self.paused || self.ended() {
            return;
        }
        let speed = SPEEDS[self.speed];
        let target = if speed == u64::MAX {
            self.world.end_ns()
        } else {
            self.owed_ns += speed as f64 * wall.as_secs_f64();
            let whole = self.owed_ns.floor();
            self.owed_ns -= whole;
            self.world.now().saturating_add(whole as u64)
        };
        if target > self.world.now() {
            self.advance(target, TICK_EVENTS);
        }
    }

    /// Runs to simulated time `t` (or the end), however many events that takes.
    pub fn run_to(&mut self, t: u64) {
        self.advance(t, u64::MAX);
    }

    /// Runs events up to `target`, at most `budget` of them, taking the rate samples that
    /// fall due on the way at their own times.
    fn advance(&mut self, target: u64, mut budget: u64) {
        let target = target.min(self.world.end_ns());
        loop {
            let next = self.world.next_event_at();
            let sample = self.history.next_ns();
            if sample <= target && next.is_none_or(|n| n > sample) {
                self.world.run_until(sample);
                self.history.sample(&self.world);
                continue;
            }
            match next {
                Some(n) if n <= target => {
                    if budget == 0 {
                        break;
                    }
                    budget -= 1;
                    self.world.step();
                }
                _ => {
                    self.world.run_until(target);
                    break;
                }
            }
        }
        self.refresh();
    }

    /// One event (`n`).
    fn step_event(&mut self) {
        if let Some(next) = self.world.next_event_at() {
            self.advance(next, 1);
        }
    }

    /// After the world changed: frames into the rings, the report, expectation results.
    fn refresh(&mut self) {
        let frames = self.world.take_captures();
        self.captures.add(frames, &self.encap);
        self.report = Progress::of(&self.world);
        let now = self.world.now();
        let ended = self.ended();
        let mut lines = Vec::new();
        for (i, e) in self.report.expectations.iter().enumerate() {
            let known = self.expect_state.get(i).copied();
            if known.is_some_and(|was| was != e.passed) || (ended && known.is_some()) {
                let verdict = if e.passed { "holds" } else { "fails" };
                let when = if ended { " at the end" } else { "" };
                lines.push(format!("{}: {verdict}{when} ({})", e.expect, e.actual));
            }
        }
        for text in lines {
            self.own_event(now, Source::Expect, text);
        }
        self.expect_state = self.report.expectations.iter().map(|e| e.passed).collect();
        if ended {
            // Reported once: from now on nothing changes.
            self.expect_state.clear();
            self.paused = true;
        }
        self.dirty = true;
    }

    fn own_event(&mut self, at_ns: u64, source: Source, text: String) {
        if self.own_events.len() == OWN_EVENTS {
            self.own_events.pop_front();
        }
        self.own_events.push_back(EventLine {
            at_ns,
            source,
            text,
        });
    }

    // ---- what-if -----------------------------------------------------------------------

    /// Gives `kind` at the next whole microsecond and runs to it, so it shows at once; a
    /// whole microsecond keeps the `faults:` snippet readable.
    pub fn inject(&mut self, kind: FaultKind) {
        if self.ended() {
            self.message = Some("the run is over: no more faults".into());
            self.dirty = true;
            return;
        }
        let at = (self.world.now() / 1000 + 1) * 1000;
        if at > self.world.end_ns() {
            self.message = Some("too close to the end of the run".into());
            self.dirty = true;
            return;
        }
        let fault = UserFault {
            at_ns: at,
            kind: kind.clone(),
        };
        self.own_event(at, Source::User, fault.describe());
        self.message = Some(format!("you: {}", fault.describe()));
        self.world.inject_fault(at, kind);
        self.faults.push(fault);
        self.advance(at, u64::MAX);
    }

    /// The node the what-if keys act on: the selected one.
    fn selected_node_name(&self) -> Option<String> {
        self.world
            .nodes()
            .get(self.sel.node)
            .map(|n| n.spec.name.clone())
    }

    fn crash_or_restart(&mut self) {
        let Some(n) = self.world.nodes().get(self.sel.node) else {
            return;
        };
        let node = n.spec.name.clone();
        let kind = if n.up {
            FaultKind::NodeCrash { node }
        } else {
            FaultKind::NodeRestart { node }
        };
        self.inject(kind);
    }

    fn link_down_or_up(&mut self) {
        let Some(n) = self.world.nodes().get(self.sel.node) else {
            return;
        };
        let node = n.spec.name.clone();
        let kind = if self.world.underlay().members[n.member].up {
            FaultKind::LinkDown { node }
        } else {
            FaultKind::LinkUp { node }
        };
        self.inject(kind);
    }

    fn partition_or_heal(&mut self) {
        let Some(n) = self.world.nodes().get(self.sel.node) else {
            return;
        };
        let kind = if self.world.underlay().members[n.member].group.is_some() {
            FaultKind::Heal
        } else {
            FaultKind::Partition {
                groups: vec![vec![n.spec.name.clone()]],
            }
        };
        self.inject(kind);
    }

    fn remove_or_restore_endpoint(&mut self) {
        let Some(svc) = self.world.scenario().services.get(self.sel.service) else {
            return;
        };
        let endpoints = self.endpoints(svc);
        let Some(ep) = endpoints.get(self.sel.endpoint) else {
            self.message = Some(format!("service {} has no endpoint to remove", svc.name));
            self.dirty = true;
            return;
        };
        let pod = ep.pod.clone();
        if ep.present {
            self.removed.push(pod.clone());
            self.inject(FaultKind::PodDelete { pod: pod.name });
        } else {
            let Some(ip) = self.fresh_pod_ip(&pod.node) else {
                self.message = Some(format!("no free address left on {}", pod.node));
                self.dirty = true;
                return;
            };
            self.removed.retain(|p| p.name != pod.name);
            self.inject(FaultKind::PodAdd {
                pod: Pod { ip, ..pod },
            });
        }
    }

    /// An address for a restored pod: as a recreated pod does, it gets a new one (a
    /// scenario never gives one address to two pods, even at different times). The
    /// highest one no pod of the scenario or the session ever had, so that the snippet's
    /// explicit address leaves every other pod's allocated address as it was.
    fn fresh_pod_ip(&self, node: &str) -> Option<std::net::Ipv4Addr> {
        let sc = self.world.scenario();
        let subnet = sc.node(node)?.subnet;
        let added = sc
            .faults
            .iter()
            .map(|f| &f.kind)
            .chain(self.faults.iter().map(|f| &f.kind))
            .filter_map(|k| match k {
                FaultKind::PodAdd { pod } => Some(pod.ip),
                _ => None,
            });
        let used: std::collections::BTreeSet<std::net::Ipv4Addr> =
            sc.pods.iter().map(|p| p.ip).chain(added).collect();
        let first = u32::from(subnet.network()) + 2;
        let last = u32::from(subnet.broadcast()).checked_sub(1)?;
        (first..=last)
            .rev()
            .map(std::net::Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
    }

    /// Writes the session's faults as a `faults:` snippet (`w`).
    fn write_snippet(&mut self) {
        let text = whatif::snippet(&self.world.scenario().name, self.world.seed(), &self.faults);
        self.message = Some(match std::fs::write(&self.snippet_path, text) {
            Ok(()) => format!(
                "wrote {} fault(s) to {}",
                self.faults.len(),
                self.snippet_path.display()
            ),
            Err(e) => format!("cannot write {}: {e}", self.snippet_path.display()),
        });
        self.dirty = true;
    }

    /// The `faults:` snippet of the session so far.
    pub fn snippet(&self) -> String {
        whatif::snippet(&self.world.scenario().name, self.world.seed(), &self.faults)
    }

    // ---- what the views list -----------------------------------------------------------

    fn matches(&self, text: &str) -> bool {
        self.filter.is_empty() || text.to_lowercase().contains(&self.filter.to_lowercase())
    }

    /// Indices of the nodes the filter lets through (by node name or a pod's name).
    pub fn visible_nodes(&self) -> Vec<usize> {
        let pods = self.world.pods();
        self.world
            .nodes()
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                self.filter.is_empty()
                    || self.matches(&n.spec.name)
                    || pods
                        .values()
                        .any(|p| p.node == n.spec.name && self.matches(&p.name))
            })
            .map(|(i, _)| i)
            .collect()
    }

    pub fn visible_services(&self) -> Vec<usize> {
        let sc = self.world.scenario();
        (0..sc.services.len())
            .filter(|&i| self.matches(&sc.services[i].name))
            .collect()
    }

    pub fn visible_traffic(&self) -> Vec<usize> {
        let sc = self.world.scenario();
        (0..sc.traffic.len())
            .filter(|&i| self.matches(&sc.traffic[i].name))
            .collect()
    }

    /// The service's endpoints: the live pods it selects and the ones the user removed,
    /// by name.
    pub fn endpoints(&self, svc: &Service) -> Vec<Endpoint> {
        let selects = |p: &Pod| {
            !svc.selector.is_empty() && svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
        };
        let mut out: Vec<Endpoint> = self
            .world
            .pods()
            .values()
            .filter(|p| selects(p))
            .map(|p| Endpoint {
                pod: p.clone(),
                present: true,
            })
            .chain(
                self.removed
                    .iter()
                    .filter(|p| selects(p) && !self.world.pods().contains_key(&p.name))
                    .map(|p| Endpoint {
                        pod: p.clone(),
                        present: false,
                    }),
            )
            .collect();
        out.sort_by(|a, b| a.pod.name.cmp(&b.pod.name));
        out
    }

    /// Indices of the traffic entries aimed at `svc` (its cluster IP, a load balancer or
    /// one of its node ports).
    pub fn traffic_of(&self, svc: &Service) -> Vec<usize> {
        let sc = self.world.scenario();
        (0..sc.traffic.len())
            .filter(|&i| match &sc.traffic[i].to {
                TrafficTarget::Service { name, .. } | TrafficTarget::Lb { name, .. } => {
                    *name == svc.name
                }
                TrafficTarget::Node { port: Some(p), .. } => {
                    svc.ports.iter().any(|sp| sp.node_port == Some(*p))
                }
                _ => false,
            })
            .collect()
    }

    /// Every event line the filter lets through, oldest first.
    pub fn events(&self) -> Vec<EventLine> {
        let mut out: Vec<EventLine> = self
            .world
            .recent()
            .map(|l| EventLine {
                at_ns: l.at_ns,
                source: Source::Sim,
                text: l.text.clone(),
            })
            .chain(self.own_events.iter().cloned())
            .filter(|l| self.matches(&l.text))
            .collect();
        // Stable: at equal times the simulator's lines come first.
        out.sort_by_key(|l| l.at_ns);
        out
    }

    /// Places frames are captured at: nodes (underlay side), then pods.
    pub fn places(&self) -> Vec<String> {
        self.world
            .nodes()
            .iter()
            .map(|n| n.spec.name.clone())
            .chain(self.world.pods().keys().cloned())
            .collect()
    }

    /// The frames at the selected place the filter lets through, oldest first.
    pub fn packets(&self) -> Vec<&Captured> {
        self.captures
            .at(&self.sel.place)
            .filter(|c| self.filter.is_empty() || self.matches(&c.decode(&self.encap).summary()))
            .collect()
    }

    /// The selected packet, if any.
    pub fn selected_packet(&self) -> Option<&Captured> {
        let list = self.packets();
        let i = list.len().checked_sub(1 + self.sel.packet)?;
        list.get(i).copied()
    }

    /// Node `i`'s drops so far by reason, most first: its switch's and those outside it
    /// (underlay, a crashed node). A restarted node's switch counts from zero again.
    pub fn node_drops(&self, i: usize) -> Vec<(String, u64)> {
        let node = &self.world.nodes()[i];
        let mut by: std::collections::BTreeMap<String, u64> = node
            .switch
            .counters()
            .drops
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        for (&(member, reason), &n) in self.world.sim_drops() {
            if member == node.member {
                *by.entry(reason.as_str().to_string()).or_default() += n;
            }
        }
        let mut out: Vec<(String, u64)> = by.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// Node `i`'s underlay link in a word: `up`, `DOWN`, or `part N` (partition group).
    pub fn link_word(&self, i: usize) -> String {
        let m = &self.world.underlay().members[self.world.nodes()[i].member];
        match (m.up, m.group) {
            (false, _) => "DOWN".into(),
            (true, Some(g)) => format!("part {g}"),
            (true, None) => "up".into(),
        }
    }

    /// Node `i`'s underlay load: bits per second through it over its bandwidth.
    pub fn link_load(&self, i: usize) -> f64 {
        let m = &self.world.underlay().members[self.world.nodes()[i].member];
        self.history.nodes[i].underlay_bps.last() as f64 / m.bandwidth_bps.max(1) as f64
    }

    /// Requests of traffic `t` by outcome: (pending, delivered, failed).
    pub fn outcomes(&self, t: usize) -> (usize, usize, usize) {
        let mut out = (0, 0, 0);
        for r in &self.world.records()[t] {
            match r.outcome {
                Outcome::Pending => out.0 += 1,
                Outcome::Delivered { .. } => out.1 += 1,
                Outcome::Failed(_) => out.2 += 1,
            }
        }
        out
    }

    // ---- keys --------------------------------------------------------------------------

    /// One key press.
    pub fn key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        self.dirty = true;
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return;
        }
        match self.input.clone() {
            Input::Filter => self.filter_key(key.code),
            Input::Command(line) => self.command_key(line, key.code),
            Input::Normal => self.normal_key(key.code),
        }
    }

    fn filter_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Enter => self.input = Input::Normal,
            KeyCode::Esc => {
                self.filter.clear();
                self.input = Input::Normal;
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) => self.filter.push(c),
            _ => {}
        }
        self.clamp_selection();
    }

    fn command_key(&mut self, mut line: String, code: KeyCode) {
        match code {
            KeyCode::Enter => {
                self.input = Input::Normal;
                match View::from_command(&line) {
                    Some(v) => self.go(v),
                    None => self.message = Some(format!("no view named {line:?}")),
                }
            }
            KeyCode::Esc => self.input = Input::Normal,
            KeyCode::Backspace => {
                line.pop();
                self.input = Input::Command(line);
            }
            KeyCode::Char(c) => {
                line.push(c);
                self.input = Input::Command(line);
            }
            _ => {}
        }
    }

    fn normal_key(&mut self, code: KeyCode) {
        self.message = None;
        if self.help {
            if matches!(code, KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')) {
                self.help = false;
            }
            return;
        }
        match code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char(':') => self.input = Input::Command(String::new()),
            KeyCode::Char('/') => self.input = Input::Filter,
            KeyCode::Char(c @ '1'..='6') => self.go(View::ALL[c as usize - '1' as usize]),
            KeyCode::Tab => {
                let i = View::ALL.iter().position(|&v| v == self.view).unwrap_or(0);
                self.go(View::ALL[(i + 1) % View::ALL.len()]);
            }
            KeyCode::Esc => {
                if !self.filter.is_empty() {
                    self.filter.clear();
                } else if let Some(v) = self.back.pop() {
                    self.view = v;
                }
            }
            KeyCode::Enter => self.drill(),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(-1_000_000),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(1_000_000),
            KeyCode::Left => self.move_across(-1),
            KeyCode::Right => self.move_across(1),
            KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Char('n') => {
                self.paused = true;
                self.step_event();
            }
            KeyCode::Char('t') => {
                self.paused = true;
                let t = self.world.now() + 1_000_000;
                self.run_to(t);
            }
            KeyCode::Char('+') | KeyCode::Char('=') => {
                self.speed = (self.speed + 1).min(SPEEDS.len() - 1);
            }
            KeyCode::Char('-') => self.speed = self.speed.saturating_sub(1),
            KeyCode::Char('x') => self.crash_or_restart(),
            KeyCode::Char('l') => self.link_down_or_up(),
            KeyCode::Char('p') => self.partition_or_heal(),
            KeyCode::Char('e') if self.view == View::Services => self.remove_or_restore_endpoint(),
            KeyCode::Char('w') => self.write_snippet(),
            _ => {}
        }
    }

    /// Switches to view `v`, remembering where Esc goes back to.
    fn go(&mut self, v: View) {
        if v == self.view {
            return;
        }
        if v == View::Packets {
            self.follow_selected_node();
        }
        self.back.push(self.view);
        self.view = v;
        self.filter.clear();
        self.clamp_selection();
    }

    /// The packet pane opens at the selected node.
    fn follow_selected_node(&mut self) {
        if let Some(name) = self.selected_node_name() {
            if self.sel.place != name {
                self.sel.place = name;
                self.sel.packet = 0;
            }
        }
    }

    /// Enter: from a node to its details; from traffic to its events; from the node view
    /// to its packets.
    fn drill(&mut self) {
        match self.view {
            View::Cluster => self.go(View::Node),
            View::Node => self.go(View::Packets),
            View::Traffic => {
                if let Some(t) = self.world.scenario().traffic.get(self.sel.traffic) {
                    let name = t.name.clone();
                    self.go(View::Events);
                    self.filter = name;
                }
            }
            View::Services | View::Events | View::Packets => {}
        }
    }

    fn move_selection(&mut self, delta: i64) {
        fn step(list: &[usize], current: usize, delta: i64) -> usize {
            if list.is_empty() {
                return current;
            }
            let at = list.iter().position(|&i| i == current).unwrap_or(0) as i64;
            list[(at + delta).clamp(0, list.len() as i64 - 1) as usize]
        }
        match self.view {
            View::Cluster | View::Node => {
                self.sel.node = step(&self.visible_nodes(), self.sel.node, delta)
            }
            View::Services => {
                let s = step(&self.visible_services(), self.sel.service, delta);
                if s != self.sel.service {
                    self.sel.service = s;
                    self.sel.endpoint = 0;
                }
            }
            View::Traffic => {
                self.sel.traffic = step(&self.visible_traffic(), self.sel.traffic, delta)
            }
            // Up goes back in time: these lists count from the newest.
            View::Events => {
                let n = self.events().len();
                self.sel.event = up_from_newest(self.sel.event, delta, n);
            }
            View::Packets => {
                let n = self.packets().len();
                self.sel.packet = up_from_newest(self.sel.packet, delta, n);
            }
        }
    }

    /// Left and right: the endpoint of a service, the node view's table, the packet
    /// pane's place.
    fn move_across(&mut self, delta: i64) {
        let shift = |i: usize, n: usize| (i as i64 + delta).clamp(0, n.max(1) as i64 - 1) as usize;
        match self.view {
            View::Services => {
                if let Some(svc) = self.world.scenario().services.get(self.sel.service) {
                    let n = self.endpoints(svc).len();
                    self.sel.endpoint = shift(self.sel.endpoint, n);
                }
            }
            View::Node => self.sel.node_table = shift(self.sel.node_table, 4),
            View::Packets => {
                let places = self.places();
                let at = places
                    .iter()
                    .position(|p| *p == self.sel.place)
                    .unwrap_or(0);
                if let Some(p) = places.get(shift(at, places.len())) {
                    self.sel.place = p.clone();
                    self.sel.packet = 0;
                }
            }
            _ => {}
        }
    }

    /// Keeps selections on rows the filter shows.
    fn clamp_selection(&mut self) {
        let nodes = self.visible_nodes();
        if !nodes.contains(&self.sel.node) {
            if let Some(&first) = nodes.first() {
                self.sel.node = first;
            }
        }
        let services = self.visible_services();
        if !services.contains(&self.sel.service) {
            if let Some(&first) = services.first() {
                self.sel.service = first;
                self.sel.endpoint = 0;
            }
        }
        let traffic = self.visible_traffic();
        if !traffic.contains(&self.sel.traffic) {
            if let Some(&first) = traffic.first() {
                self.sel.traffic = first;
            }
        }
        self.sel.event = 0;
        self.sel.packet = 0;
    }
}

/// Moves a count-from-the-newest selection: up (negative) goes to older lines.
fn up_from_newest(current: usize, delta: i64, len: usize) -> usize {
    (current as i64 - delta).clamp(0, len.saturating_sub(1) as i64) as usize
}

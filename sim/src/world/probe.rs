//! The world's side of `podnet trace` ([`crate::trace`]): starting the probe, and the
//! hooks the event loop calls where frames move or die. Without a recorder (every normal
//! run) each hook is one check of an `Option` and changes nothing.

use podnet_switch::trace::{Recorded, Stage};

use super::*;
use crate::scenario::{Action, Traffic};
use crate::trace::{describe, format_time, Dir, Recorder, TraceHop};

impl World {
    /// Starts `probe` (a one-request traffic) now, followed by a [`Recorder`]. Fails when
    /// its source does not exist at this time.
    pub fn start_probe(&mut self, probe: Traffic) -> Result<RequestId, String> {
        let src = self
            .source_host(&probe.from)
            .ok_or_else(|| format!("--from: {:?} does not exist at this time", probe.from))?;
        let t = self.sc.traffic.len();
        self.sc.traffic.push(probe);
        self.records.push(Vec::new());
        let id = RequestId {
            traffic: t as u32,
            index: 0,
        };
        let mut recorder = Recorder::new(src);
        recorder.id = Some(id);
        self.recorder = Some(Box::new(recorder));
        self.start(t, 0);
        Ok(id)
    }

    /// The probe's recorder, while a trace runs.
    pub fn recorder(&self) -> Option<&Recorder> {
        self.recorder.as_deref()
    }

    pub fn take_recorder(&mut self) -> Option<Recorder> {
        self.recorder.take().map(|r| *r)
    }

    /// The outcome of request `id` (the probe's) so far.
    pub fn probe_outcome(&self, id: RequestId) -> Option<Outcome> {
        Some(
            self.records
                .get(id.traffic as usize)?
                .get(id.index as usize)?
                .outcome,
        )
    }

    fn hop(
        &self,
        place: &str,
        stage: &str,
        action: &str,
        detail: String,
        object: String,
    ) -> TraceHop {
        TraceHop {
            t_ns: self.now,
            place: place.to_string(),
            stage: stage.to_string(),
            action: action.to_string(),
            detail,
            object,
        }
    }

    /// Which way `frame` goes if it is of the probe's flow.
    fn probe_dir(&self, frame: &[u8]) -> Option<(Dir, Inspected)> {
        let r = self.recorder.as_deref()?;
        let i = inspect::inspect(frame, &self.encap)?;
        Some((r.direction(&i)?, i))
    }

    /// The probe's stack learned its own port.
    pub(super) fn probe_started(&mut self, id: RequestId, key: Option<(Ipv4Addr, u16, u8)>) {
        if let Some(r) = self.recorder.as_deref_mut() {
            r.started(id, key);
        }
    }

    /// Host `h` sends `frame`.
    pub(super) fn probe_sent(&mut self, h: usize, frame: &[u8]) {
        let Some((dir, i)) = self.probe_dir(frame) else {
            return;
        };
        let host = &self.hosts[h];
        let hop = self.hop(
            &host.name,
            "send",
            "send",
            describe(&i, dir),
            format!("stack of {}", host.name),
        );
        if let Some(r) = self.recorder.as_deref_mut() {
            r.push(dir, hop);
        }
    }

    /// Host `h` receives `frame`.
    pub(super) fn probe_received(&mut self, h: usize, frame: &[u8]) {
        let Some((dir, i)) = self.probe_dir(frame) else {
            return;
        };
        let host = &self.hosts[h];
        let hop = self.hop(
            &host.name,
            "delivery",
            "deliver",
            describe(&i, dir),
            format!("stack of {}", host.name),
        );
        let src = h == self.recorder.as_deref().map_or(usize::MAX, |r| r.src_host);
        if let Some(r) = self.recorder.as_deref_mut() {
            r.push(dir, hop);
            match dir {
                Dir::Forward => r.arrived(),
                Dir::Back if src => r.reached_src(&i),
                Dir::Back => {}
            }
        }
    }

    /// Runs `rx` through node `node`'s switch with a tracer when `frame` is of the probe's
    /// flow (or is SRC's first ARP for its gateway); `None` (nothing run) otherwise.
    pub(super) fn probe_switch(
        &mut self,
        node: usize,
        port: PortId,
        frame: &[u8],
        rx: &mut Vec<podnet_switch::PacketBuf>,
        tx: &mut Vec<(PortId, podnet_switch::PacketBuf)>,
    ) -> Option<Tally> {
        let r = self.recorder.as_deref()?;
        let dir = match self.probe_dir(frame) {
            Some((dir, _)) => dir,
            None => {
                let arp = podnet_switch::wire::parse_eth(frame)
                    .is_ok_and(|e| e.ethertype == podnet_switch::wire::ETHERTYPE_ARP);
                let from_src = self.hosts[r.src_host].attach == Attach::Pod { node, port };
                if !(arp && from_src && r.nothing_yet()) {
                    return None;
                }
                Dir::Forward
            }
        };
        let mut rec = Recorded::default();
        let first_tx = tx.len();
        let tally = self.nodes[node]
            .switch
            .process_traced(port, rx, self.now, tx, &mut rec);
        let learned: Vec<Inspected> = tx[first_tx..]
            .iter()
            .filter_map(|(_, buf)| inspect::inspect(buf.data(), &self.encap))
            .collect();
        let name = self.nodes[node].spec.name.clone();
        let hops: Vec<_> = rec
            .hops
            .iter()
            .map(|h| {
                let hop = self.hop(
                    &name,
                    h.stage.name(),
                    &h.action,
                    h.detail.clone(),
                    h.object.clone(),
                );
                (hop, h.drop, h.stage, h.action.as_str())
            })
            .collect();
        let r = self.recorder.as_deref_mut()?;
        if dir == Dir::Forward {
            for i in &learned {
                r.learn(i);
            }
        }
        // What a stage refused for (the MTU, the missing route, the service with no
        // endpoints), and then the answer it sent back (ICMP, RST), then the drop itself.
        let mut cause: Option<String> = None;
        for (hop, drop, stage, action) in hops {
            if let Some(reason) = drop {
                let reason = reason_of(reason);
                let explanation = match (&cause, reason) {
                    (Some(c), DropReason::NoEndpoints) => c.clone(),
                    (Some(c), r) => format!("{}: {c}", r.as_str()),
                    (None, r) => r.as_str().to_string(),
                };
                r.died(dir, hop, explanation);
                cause = None;
                continue;
            }
            match cause {
                Some(_) => r.push(Dir::Back, hop),
                None => {
                    let causes = matches!(
                        (stage, action),
                        (Stage::Route, "mtu" | "no route") | (Stage::Services, "reject")
                    );
                    if causes {
                        cause = Some(hop.detail.clone());
                    }
                    r.push(dir, hop);
                }
            }
        }
        Some(tally)
    }

    /// A frame of the probe reached node `node` while it is down.
    pub(super) fn probe_node_down(&mut self, node: usize, frame: &[u8]) {
        let Some((dir, _)) = self.probe_dir(frame) else {
            return;
        };
        let name = self.nodes[node].spec.name.clone();
        let crash = self.sc.faults.iter().enumerate().rev().find(|(_, f)| {
            f.at_ns <= self.now && matches!(&f.kind, FaultKind::NodeCrash { node } if *node == name)
        });
        let since = match crash {
            Some((i, f)) => format!(" since {} (fault {})", format_time(f.at_ns), i + 1),
            None => String::new(),
        };
        let explanation = format!("{name} is down{since}");
        let hop = self.hop(
            &name,
            "node",
            "drop",
            explanation.clone(),
            format!("node {name}"),
        );
        if let Some(r) = self.recorder.as_deref_mut() {
            r.died(dir, hop, explanation);
        }
    }

    /// The underlay carried (`Ok`: the member it reached) or refused a frame of member
    /// `from` to member `to` (`None`: no member has its MAC).
    pub(super) fn probe_underlay(
        &mut self,
        from: usize,
        to: Option<usize>,
        frame: &[u8],
        result: Result<u64, DropReason>,
    ) {
        let Some((dir, i)) = self.probe_dir(frame) else {
            return;
        };
        let a = self.fabric.members[from].name.clone();
        let Some(to) = to else {
            let explanation = format!("no_route: no underlay host has the frame's MAC ({})", i.dst);
            let hop = self.hop(
                &a,
                "underlay",
                "drop",
                explanation.clone(),
                "underlay".into(),
            );
            if let Some(r) = self.recorder.as_deref_mut() {
                r.died(dir, hop, explanation);
            }
            return;
        };
        let b = self.fabric.members[to].name.clone();
        let link = format!("{a} -> {b}");
        let to_node = matches!(self.fabric.members[to].kind, MemberKind::Node { .. });
        let rule = crate::underlay::flow_of(frame).and_then(|flow| {
            let m = &self.fabric.members;
            crate::underlay::firewall_rule(&self.sc.firewall, &m[from], &m[to], flow)
        });
        let fw = &self.sc.firewall;
        let rule_words = match rule {
            Some(n) => format!(
                "rule {} {}",
                n + 1,
                crate::check::flows::describe(&fw.rules[n])
            ),
            None => format!(
                "default {}",
                if fw.default == Action::Allow {
                    "allow"
                } else {
                    "deny"
                }
            ),
        };
        let mut hops = Vec::new();
        let death = match result {
            Ok(at) => {
                let detail = format!("{}, arrives at {}", describe(&i, dir), format_time(at));
                hops.push(self.hop(
                    &link,
                    "underlay",
                    "transmit",
                    detail,
                    format!("link {link}"),
                ));
                if to_node && (!fw.rules.is_empty() || fw.default != Action::Allow) {
                    let detail = format!("{b} firewall: {rule_words}");
                    hops.push(self.hop(&b, "firewall", "allow", detail, rule_words.clone()));
                }
                None
            }
            Err(DropReason::Firewall) => {
                let explanation = format!("firewall: {rule_words}");
                let hop = self.hop(
                    &b,
                    "firewall",
                    "deny",
                    format!("{b} firewall: {rule_words}"),
                    rule_words,
                );
                Some((hop, explanation))
            }
            Err(reason) => {
                let why = match reason {
                    DropReason::LinkDown if !self.fabric.members[from].up => {
                        format!("the underlay link of {a} is down")
                    }
                    DropReason::LinkDown => format!("the underlay link of {b} is down"),
                    DropReason::Partition => {
                        format!("{a} and {b} are in different partition groups")
                    }
                    DropReason::Loss => format!("lost on {link}"),
                    DropReason::Mtu => format!("{}-byte frame over the underlay MTU", frame.len()),
                    _ => link.clone(),
                };
                let explanation = format!("{}: {why}", reason.as_str());
                let hop = self.hop(
                    &link,
                    "underlay",
                    "drop",
                    explanation.clone(),
                    format!("link {link}"),
                );
                Some((hop, explanation))
            }
        };
        if let Some(r) = self.recorder.as_deref_mut() {
            for hop in hops {
                r.push(dir, hop);
            }
            if let Some((hop, explanation)) = death {
                r.died(dir, hop, explanation);
            }
        }
    }
}

//! The event loop: the queue in virtual time, and frames moving between hosts, switches
//! and the underlay.

use super::*;

impl World {
    pub(super) fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            event,
        });
    }

    /// Schedules `event` `delay` after now: the same as `schedule(now + delay, event)`,
    /// for delays that recur (see [`EventQueue`]).
    pub(super) fn schedule_after(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push_after(
            delay,
            Queued {
                at: self.now + delay,
                seq: self.seq,
                event,
            },
        );
    }

    pub(super) fn coin(&mut self) -> f64 {
        (splitmix(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Processes one event. False when the run is over.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.queue.peek_at() else {
            self.now = self.now.max(self.end_ns);
            return false;
        };
        if at > self.end_ns {
            self.now = self.end_ns;
            return false;
        }
        let q = self.queue.pop().expect("peeked");
        self.now = q.at;
        self.events += 1;
        self.handle(q.event);
        true
    }

    /// Runs every event up to and including time `t` (or the end).
    pub fn run_until(&mut self, t: u64) {
        while self
            .queue
            .peek_at()
            .is_some_and(|at| at <= t.min(self.end_ns))
        {
            self.step();
        }
        self.now = self.now.max(t.min(self.end_ns));
    }

    /// Runs to the end.
    pub fn run(&mut self) {
        while self.step() {}
    }

    pub(super) fn handle(&mut self, event: Event) {
        match event {
            Event::ToSwitch { node, port, frame } => self.switch_rx(node, port, frame),
            Event::ToHost { host, frame } => self.host_rx(host, frame),
            Event::HostPoll { host } => {
                if self.hosts[host].next_poll == Some(self.now) {
                    self.hosts[host].next_poll = None;
                    self.poll_host(host);
                }
            }
            Event::SwitchPoll { node } => self.switch_poll(node),
            Event::Start { traffic, index } => self.start(traffic, index),
            Event::Timeout { id } => self.timeout(id),
            Event::Fault(f) => {
                let kind = self.sc.faults[f].kind.clone();
                self.note(|| format!("fault: {kind:?}"));
                self.fault(kind);
            }
            Event::Inject(kind) => {
                self.note(|| format!("fault (injected): {kind:?}"));
                self.fault(*kind);
            }
        }
    }

    pub(super) fn switch_rx(&mut self, node: usize, port: PortId, frame: Vec<u8>) {
        self.trace_delivery(1 << 32 | (node as u64) << 16 | port.0 as u64, &frame);
        if port == self.nodes[node].underlay {
            self.capture_node(node, &frame);
        }
        if !self.nodes[node].up {
            let member = self.nodes[node].member;
            *self
                .sim_drops
                .entry((member, DropReason::NodeDown))
                .or_default() += 1;
            if self.log.is_some() {
                let name = self.nodes[node].spec.name.clone();
                self.note(|| format!("{name}: down, dropped a packet (node_down)"));
            }
            self.probe_node_down(node, &frame);
            self.dropped(&frame, DropReason::NodeDown);
            return;
        }
        self.hops += 1;
        let Some(buf) = self.nodes[node].switch.pool().alloc_from(&frame) else {
            self.dropped(&frame, DropReason::TableFull);
            return;
        };
        let mut rx = std::mem::take(&mut self.scratch_rx);
        let mut tx = std::mem::take(&mut self.scratch_tx);
        rx.push(buf);
        let tally = match self.probe_switch(node, port, &frame, &mut rx, &mut tx) {
            Some(tally) => tally,
            None => self.nodes[node]
                .switch
                .process(port, &mut rx, self.now, &mut tx),
        };
        self.switch_drops(node, &frame, &tally);
        self.switch_tx(node, &mut tx);
        self.scratch_rx = rx;
        self.scratch_tx = tx;
        crate::frames::recycle(frame);
    }

    pub(super) fn switch_poll(&mut self, node: usize) {
        self.nodes[node].poll_scheduled = false;
        if !self.nodes[node].up {
            return;
        }
        let mut tx = std::mem::take(&mut self.scratch_tx);
        self.nodes[node].switch.poll(self.now, &mut tx);
        self.switch_tx(node, &mut tx);
        self.scratch_tx = tx;
    }

    /// Attributes the drops of one switch call to the request whose frame it was.
    pub(super) fn switch_drops(&mut self, node: usize, frame: &[u8], tally: &Tally) {
        for &r in podnet_switch::DropReason::ALL {
            if tally.drops[r as usize] > 0 {
                if self.log.is_some() {
                    let name = self.nodes[node].spec.name.clone();
                    self.note(|| format!("{name}: switch dropped a packet ({})", r.name()));
                }
                self.dropped(frame, reason_of(r));
            }
        }
    }

    pub(super) fn switch_tx(
        &mut self,
        node: usize,
        tx: &mut Vec<(PortId, podnet_switch::PacketBuf)>,
    ) {
        let n = &self.nodes[node];
        let (underlay, host_port, stack, member) = (n.underlay, n.host_port, n.stack, n.member);
        for (port, buf) in tx.drain(..) {
            let frame = crate::frames::copy_of(buf.data());
            drop(buf);
            if port == underlay {
                self.capture_node(node, &frame);
                self.underlay_send(member, frame);
            } else if port == host_port {
                self.schedule_after(VETH_NS, Event::ToHost { host: stack, frame });
            } else if let Some(&h) = self.nodes[node].port_hosts.get(&port) {
                self.schedule_after(VETH_NS, Event::ToHost { host: h, frame });
            }
        }
        if self.nodes[node].switch.pending_len() > 0 && !self.nodes[node].poll_scheduled {
            self.nodes[node].poll_scheduled = true;
            self.schedule_after(SWITCH_POLL_NS, Event::SwitchPoll { node });
        }
    }

    pub(super) fn underlay_send(&mut self, from: usize, frame: Vec<u8>) {
        let Ok(eth) = podnet_switch::wire::parse_eth(&frame) else {
            return;
        };
        if eth.dst.is_broadcast() {
            self.underlay_arp(from, &frame);
            return;
        }
        let Some(&to) = self.macs.get(&eth.dst) else {
            self.probe_underlay(from, None, &frame, Err(DropReason::NoRoute));
            self.dropped(&frame, DropReason::NoRoute);
            return;
        };
        let coin = self.coin();
        match self
            .fabric
            .transmit(from, to, &frame, self.now, coin, &self.sc.firewall)
        {
            Ok((to, at)) => {
                self.probe_underlay(from, Some(to), &frame, Ok(at));
                if let Some(&h) = self.member_hosts.get(&to) {
                    self.schedule(at, Event::ToHost { host: h, frame });
                } else if let Some(node) = self.node_of_member(to) {
                    let port = self.nodes[node].underlay;
                    self.schedule(at, Event::ToSwitch { node, port, frame });
                }
            }
            Err(reason) => {
                self.probe_underlay(from, Some(to), &frame, Err(reason));
                if reason == DropReason::Firewall {
                    if let Some(node) = self.node_of_member(to) {
                        self.nodes[node].firewall_drops += 1;
                    }
                }
                let (a, b) = (
                    self.fabric.members[from].name.clone(),
                    self.fabric.members[to].name.clone(),
                );
                self.note(|| format!("underlay {a} -> {b}: dropped ({})", reason.as_str()));
                // Counted where the packet was refused: the receiver's firewall, the link
                // that is down, else the sender's link.
                let at = match reason {
                    DropReason::Firewall => to,
                    DropReason::LinkDown if self.fabric.members[from].up => to,
                    _ => from,
                };
                *self.sim_drops.entry((at, reason)).or_default() += 1;
                self.dropped(&frame, reason);
            }
        }
    }

    /// The underlay's address resolution: every member's MAC is derived from its
    /// address, so the world answers ARP for any member in its stead.
    pub(super) fn underlay_arp(&mut self, from: usize, frame: &[u8]) {
        let Ok(arp) = podnet_switch::wire::parse_arp(&frame[14.min(frame.len())..]) else {
            return;
        };
        if arp.operation != podnet_switch::wire::ARP_REQUEST {
            return;
        }
        let Some(target) = self.fabric.by_ip(arp.target_ip) else {
            return;
        };
        if self.fabric.members[target].group != self.fabric.members[from].group {
            return;
        }
        let Some(&h) = self.member_hosts.get(&from) else {
            return;
        };
        let mac = swctl::underlay_mac_for(arp.target_ip);
        let mut reply = vec![0u8; 60];
        podnet_switch::wire::write_eth(
            &mut reply,
            arp.sender_mac,
            mac,
            podnet_switch::wire::ETHERTYPE_ARP,
        );
        podnet_switch::wire::write_arp(
            &mut reply[14..],
            &podnet_switch::wire::Arp {
                operation: podnet_switch::wire::ARP_REPLY,
                sender_mac: mac,
                sender_ip: arp.target_ip,
                target_mac: arp.sender_mac,
                target_ip: arp.sender_ip,
            },
        );
        let at = self.now + 2 * self.sc.underlay.latency_ns;
        self.schedule(
            at,
            Event::ToHost {
                host: h,
                frame: reply,
            },
        );
    }

    pub(super) fn host_rx(&mut self, h: usize, frame: Vec<u8>) {
        if !self.hosts[h].alive {
            return;
        }
        self.trace_delivery(2 << 32 | h as u64, &frame);
        self.probe_received(h, &frame);
        if matches!(self.hosts[h].attach, Attach::Pod { .. }) {
            self.capture_host(h, &frame);
        }
        if let Some(i) = inspect::inspect(&frame, &self.encap) {
            self.observe(h, &i);
        }
        self.hosts[h].host.receive(frame);
        self.poll_host(h);
    }

    pub(super) fn poll_host(&mut self, h: usize) {
        let mut out = std::mem::take(&mut self.scratch_frames);
        self.hosts[h].host.poll(self.now, &mut out);
        let attach = self.hosts[h].attach;
        for frame in out.drain(..) {
            self.probe_sent(h, &frame);
            match attach {
                Attach::Pod { node, port } => {
                    self.capture_host(h, &frame);
                    self.schedule_after(VETH_NS, Event::ToSwitch { node, port, frame });
                }
                Attach::NodeStack { node } => {
                    let port = self.nodes[node].host_port;
                    self.schedule_after(VETH_NS, Event::ToSwitch { node, port, frame });
                }
                Attach::External { member } => self.underlay_send(member, frame),
            }
        }
        self.scratch_frames = out;
        for ev in self.hosts[h].host.take_events() {
            match ev {
                HostEvent::Completed { id, at_ns } => self.finish(id, |rec| Outcome::Delivered {
                    rtt_ns: at_ns.saturating_sub(rec.sent_at_ns),
                }),
                HostEvent::Refused { id, .. } => {
                    self.finish(id, |_| Outcome::Failed(DropReason::Refused));
                }
            }
        }
        if let Some(t) = self.hosts[h].host.poll_at(self.now) {
            let t = t.max(self.now + 1);
            if self.hosts[h].next_poll.is_none_or(|p| t < p) {
                self.hosts[h].next_poll = Some(t);
                self.schedule(t, Event::HostPoll { host: h });
            }
        }
    }
}

//! Faults and run-time changes: crashes, restarts, pod and endpoint changes, injection.

use super::*;

impl World {
    pub(super) fn fault(&mut self, kind: FaultKind) {
        let member = |w: &World, node: &str| w.node_index(node).map(|n| w.nodes[n].member);
        match kind {
            FaultKind::LinkDown { node } => {
                if let Some(m) = member(self, &node) {
                    self.fabric.members[m].up = false;
                }
            }
            FaultKind::LinkUp { node } => {
                if let Some(m) = member(self, &node) {
                    self.fabric.members[m].up = true;
                }
            }
            FaultKind::Loss { node, loss } => {
                if let Some(m) = member(self, &node) {
                    self.fabric.members[m].loss = loss;
                }
            }
            FaultKind::Latency { node, latency_ns } => {
                if let Some(m) = member(self, &node) {
                    self.fabric.members[m].latency_ns = latency_ns;
                }
            }
            FaultKind::Partition { groups } => self.fabric.partition(&groups),
            FaultKind::Heal => self.fabric.heal(),
            FaultKind::NodeCrash { node } => {
                if let Some(n) = self.node_index(&node) {
                    self.nodes[n].up = false;
                }
            }
            FaultKind::NodeRestart { node } => {
                if let Some(n) = self.node_index(&node) {
                    self.restart(n);
                }
            }
            FaultKind::PodDelete { pod } => {
                self.delete_pod(&pod);
                self.services_changed();
            }
            FaultKind::PodLabel { pod, labels } => {
                if let Some(p) = self.pods.get_mut(&pod) {
                    p.labels = labels;
                }
                self.services_changed();
            }
            FaultKind::PolicyAdd { policy } => {
                self.policies.retain(|p| p.key() != policy.key());
                self.policies.push(policy);
                self.configure_policies();
            }
            FaultKind::PolicyDelete { policy } => {
                self.policies.retain(|p| p.key() != policy);
                self.configure_policies();
            }
            FaultKind::PodAdd { pod } => {
                let name = pod.name.clone();
                if let Err(e) = self.add_pod(pod) {
                    self.note(|| format!("pod_add {name}: {e}"));
                }
                self.services_changed();
            }
        }
    }

    /// A crashed node comes back with a fresh switch: no MACs, neighbours or conntrack.
    pub(super) fn restart(&mut self, n: usize) {
        let Ok(sw) = self.build_switch(n) else {
            return;
        };
        let mut port_hosts = BTreeMap::new();
        let pods: Vec<usize> = self.nodes[n].port_hosts.values().copied().collect();
        let underlay = sw.add_port("underlay", PortKind::Underlay);
        let host_port = sw.add_port("host", PortKind::Host);
        for h in pods {
            let port = sw.add_port(&self.hosts[h].name, PortKind::Pod);
            self.hosts[h].attach = Attach::Pod { node: n, port };
            port_hosts.insert(port, h);
        }
        let node = &mut self.nodes[n];
        node.switch = sw;
        node.underlay = underlay;
        node.host_port = host_port;
        node.port_hosts = port_hosts;
        node.up = true;
        node.poll_scheduled = false;
        self.services_changed();
    }

    /// Reprograms the services after pods changed; a refusal (which the scenario loader
    /// rules out) is logged, leaving the previous services in place.
    pub(super) fn services_changed(&mut self) {
        if let Err(e) = self.configure_services() {
            self.note(|| e);
        }
        self.configure_policies();
    }

    /// Schedules a fault at `at_ns` (at least now), as if the scenario had it at that
    /// time: it runs before every event scheduled for that time, in the order injected,
    /// so the scenario with this fault in its `faults:` list gives the same run (unless
    /// one of the scenario's own faults or first requests is at that very nanosecond:
    /// those run first there). The scenario is not changed.
    pub fn inject_fault(&mut self, at_ns: u64, kind: FaultKind) {
        self.injected += 1;
        self.queue.push(Queued {
            at: at_ns.max(self.now),
            seq: self.injected,
            event: Event::Inject(Box::new(kind)),
        });
    }
}

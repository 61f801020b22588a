//! Requests and their outcomes: starting traffic, watching replies, timeouts and drops.

use super::*;

impl World {
    /// What a frame arriving at host `h` tells about requests: which endpoint a request
    /// reached and with which source address, and errors sent back to clients.
    pub(super) fn observe(&mut self, h: usize, i: &Inspected) {
        let host_ip = self.hosts[h].ip;
        if let Some(id) = i.marker {
            // The request, not the echo coming back to the client: replies go to the
            // client's own address and port (a pod may serve its own request: hairpin).
            let to_client = self
                .flights
                .get(&id)
                .and_then(|f| f.key)
                .is_some_and(|k| i.client_side()[1] == k);
            if i.dst == host_ip && !to_client {
                let rec = self
                    .records
                    .get_mut(id.traffic as usize)
                    .and_then(|r| r.get_mut(id.index as usize));
                if let Some(rec) = rec {
                    if rec.endpoint.is_none() {
                        rec.endpoint = Some(self.hosts[h].name.clone());
                        rec.source_seen = Some(i.src);
                    }
                }
            }
        }
        if let Some(err) = &i.icmp_error {
            let q = &err.quoted;
            let port = q.src_port.or(q.icmp_ident);
            if let Some(&id) = port.and_then(|p| self.clients.get(&(q.src, p, q.protocol))) {
                let reason = match (err.icmp_type, err.code) {
                    (3, 3) => None,
                    (3, 4) => Some(DropReason::Mtu),
                    (3, _) => Some(DropReason::NoRoute),
                    (11, _) => Some(DropReason::TtlExceeded),
                    _ => return,
                };
                if let Some(f) = self.flights.get_mut(&id) {
                    match reason {
                        None => f.refused = true,
                        Some(r) => f.last_drop = Some(r),
                    }
                }
            }
        }
    }

    pub(super) fn record_mut(&mut self, id: RequestId) -> Option<&mut RequestRecord> {
        self.records
            .get_mut(id.traffic as usize)?
            .get_mut(id.index as usize)
    }

    pub(super) fn source_host(&self, src: &TrafficSource) -> Option<usize> {
        match src {
            TrafficSource::Pod(name) => self.pod_hosts.get(name).copied(),
            TrafficSource::External(name) => self
                .member_hosts
                .values()
                .copied()
                .find(|&h| self.hosts[h].name == *name),
            TrafficSource::Node(name) => self.node_index(name).map(|n| self.nodes[n].stack),
        }
    }

    /// The address and port a request of this target goes to; `index` picks the node an
    /// external load balancer sends this connection to (round robin over all nodes).
    pub(super) fn target_addr(
        &self,
        to: &TrafficTarget,
        index: u32,
    ) -> Option<(Ipv4Addr, Option<u16>)> {
        match to {
            TrafficTarget::Pod { name, port } => self.pods.get(name).map(|p| (p.ip, *port)),
            TrafficTarget::Service { name, port } => {
                self.sc.service(name).map(|s| (s.cluster_ip, Some(*port)))
            }
            TrafficTarget::Node { name, port } => self.sc.node(name).map(|n| (n.ip, *port)),
            TrafficTarget::Lb { name, port } => {
                let svc = self.sc.service(name)?;
                let sp = svc.ports.iter().find(|p| p.port == *port)?;
                let node = &self.sc.nodes[index as usize % self.sc.nodes.len().max(1)];
                Some((node.ip, sp.node_port))
            }
            TrafficTarget::Ip { addr, port } => Some((*addr, *port)),
        }
    }

    /// The port a request reaches its endpoint on, after a service's DNAT: the target
    /// port of the service port it goes to (by cluster port, or by NodePort).
    pub(super) fn endpoint_port(&self, to: &TrafficTarget) -> Option<u16> {
        let target_of = |svc: &str, port: u16| {
            self.sc
                .service(svc)?
                .ports
                .iter()
                .find(|p| p.port == port)
                .map(|p| p.target_port)
        };
        match to {
            TrafficTarget::Service { name, port } | TrafficTarget::Lb { name, port } => {
                target_of(name, *port)
            }
            TrafficTarget::Node {
                port: Some(port), ..
            } => self
                .sc
                .services
                .iter()
                .flat_map(|s| &s.ports)
                .find(|p| p.node_port == Some(*port))
                .map(|p| p.target_port),
            _ => None,
        }
    }

    pub(super) fn start(&mut self, t: usize, index: u32) {
        let tr = &self.sc.traffic[t];
        let (count, interval_ns, timeout_ns) = (tr.count, tr.interval_ns, tr.timeout_ns);
        let (kind, bytes, source_port) = (tr.kind, tr.bytes, tr.source_port);
        if index + 1 < count {
            self.schedule_after(
                interval_ns,
                Event::Start {
                    traffic: t,
                    index: index + 1,
                },
            );
        }
        let id = RequestId {
            traffic: t as u32,
            index,
        };
        self.records[t].push(RequestRecord {
            sent_at_ns: self.now,
            outcome: Outcome::Pending,
            endpoint: None,
            source_seen: None,
            bytes,
        });
        let tr = &self.sc.traffic[t];
        let (Some(h), Some((dst, port))) =
            (self.source_host(&tr.from), self.target_addr(&tr.to, index))
        else {
            self.records[t][index as usize].outcome = Outcome::Failed(DropReason::NoRoute);
            return;
        };
        let ports: Vec<u16> = port.into_iter().chain(self.endpoint_port(&tr.to)).collect();
        let req = Request {
            id,
            kind,
            dst,
            port,
            bytes,
            local_port: source_port,
            framing: payload::framing(kind, &ports),
        };
        if let Err(e) = self.hosts[h].host.start(req, self.now) {
            let name = self.sc.traffic[t].name.clone();
            self.note(|| format!("{name}: cannot start request: {e}"));
            self.records[t][index as usize].outcome = Outcome::Failed(DropReason::NoRoute);
            return;
        }
        let proto = match kind.protocol() {
            None => 1,
            Some(Protocol::Tcp) => 6,
            Some(Protocol::Udp) => 17,
        };
        let key = self.hosts[h]
            .host
            .local_port(id)
            .map(|p| (self.hosts[h].ip, p, proto));
        if let Some(k) = key {
            self.clients.insert(k, id);
        }
        self.probe_started(id, key);
        self.flights.insert(
            id,
            Flight {
                host: h,
                key,
                refused: false,
                last_drop: None,
            },
        );
        self.schedule_after(timeout_ns, Event::Timeout { id });
        self.poll_host(h);
    }

    pub(super) fn finish(
        &mut self,
        id: RequestId,
        outcome: impl FnOnce(&RequestRecord) -> Outcome,
    ) {
        let Some(f) = self.flights.remove(&id) else {
            return;
        };
        if let Some(k) = f.key {
            self.clients.remove(&k);
        }
        let Some(rec) = self.record_mut(id) else {
            return;
        };
        rec.outcome = outcome(rec);
        let result = match rec.outcome {
            Outcome::Delivered { rtt_ns } => format!("delivered in {} µs", rtt_ns / 1000),
            Outcome::Failed(r) => format!("failed: {}", r.as_str()),
            Outcome::Pending => return,
        };
        if self.log.is_some() {
            let name = self.sc.traffic[id.traffic as usize].name.clone();
            self.note(|| format!("{name} #{}: {result}", id.index));
        }
    }

    pub(super) fn timeout(&mut self, id: RequestId) {
        let Some(f) = self.flights.get(&id) else {
            return;
        };
        let reason = if f.refused {
            DropReason::Refused
        } else {
            f.last_drop.unwrap_or(DropReason::Timeout)
        };
        let h = f.host;
        self.hosts[h].host.cancel(id);
        self.finish(id, |_| Outcome::Failed(reason));
    }

    /// Notes that `frame` was dropped for `reason`: the request it belongs to, if any,
    /// learns why.
    pub(super) fn dropped(&mut self, frame: &[u8], reason: DropReason) {
        let Some(i) = inspect::inspect(frame, &self.encap) else {
            return;
        };
        let [from_client, _] = i.client_side();
        for key in i.client_side() {
            if let Some(&id) = self.clients.get(&key) {
                if let Some(f) = self.flights.get_mut(&id) {
                    f.last_drop = Some(reason);
                }
                // A request dropped on its way to the endpoint still tells which one it
                // was headed for (after DNAT), so the report can show that endpoint's
                // failures instead of leaving it out.
                if key == from_client {
                    let endpoint = self
                        .hosts
                        .iter()
                        .find(|h| h.alive && h.ip == i.dst)
                        .map(|h| h.name.clone());
                    if let (Some(name), Some(rec)) = (endpoint, self.record_mut(id)) {
                        rec.endpoint.get_or_insert(name);
                    }
                }
            }
        }
    }
}

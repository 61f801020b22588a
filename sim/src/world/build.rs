//! Building the world from a scenario: nodes and their switches, hosts, pods, services.

use super::*;

impl World {
    /// Builds the world of `sc` at time 0, with the first events scheduled.
    pub fn new(sc: Scenario, opts: &Options) -> Result<World, String> {
        let seed = opts.seed.unwrap_or(sc.seed);
        let end_ns = opts.until_ns.unwrap_or(sc.duration_ns);
        let encap = match sc.cluster.backend {
            Backend::Vxlan => EncapPorts {
                vxlan: Some(sc.cluster.vxlan.port),
                udp: None,
            },
            Backend::Udp => EncapPorts {
                vxlan: None,
                udp: Some(sc.cluster.udp.port),
            },
            Backend::HostGw => EncapPorts {
                vxlan: None,
                udp: None,
            },
        };
        let mut members = Vec::new();
        for n in &sc.nodes {
            members.push(Member::new(
                &n.name,
                n.ip,
                MemberKind::Node { role: n.role },
                &sc.underlay,
            ));
        }
        for e in &sc.externals {
            members.push(Member::new(
                &e.name,
                e.ip,
                MemberKind::External,
                &sc.underlay,
            ));
        }
        let macs = members
            .iter()
            .enumerate()
            .map(|(i, m)| (swctl::underlay_mac_for(m.ip), i))
            .collect();
        let fabric = Fabric::new(members, sc.underlay.mtu);
        let mut w = World {
            seed,
            end_ns,
            now: 0,
            seq: INJECTED_SEQS,
            queue: EventQueue::default(),
            events: 0,
            hops: 0,
            rng: seed,
            trace: 0xcbf2_9ce4_8422_2325,
            nodes: Vec::new(),
            hosts: Vec::new(),
            fabric,
            member_hosts: BTreeMap::new(),
            macs,
            pod_hosts: BTreeMap::new(),
            pods: BTreeMap::new(),
            policies: sc.policies.clone(),
            records: vec![Vec::new(); sc.traffic.len()],
            flights: BTreeMap::new(),
            clients: HashMap::new(),
            encap,
            log: opts.log.then(VecDeque::new),
            pcap_out: None,
            injected: 0,
            sim_drops: BTreeMap::new(),
            scratch_rx: Vec::with_capacity(1),
            scratch_tx: Vec::with_capacity(64),
            scratch_frames: Vec::new(),
            peers: sc
                .nodes
                .iter()
                .map(|p| Peer::new(&p.name, p.ip, p.subnet))
                .collect(),
            service_generation: 0,
            endpoints: Vec::new(),
            recorder: None,
            sc,
        };
        for i in 0..w.sc.nodes.len() {
            let sw = w.build_switch(i)?;
            let spec = w.sc.nodes[i].clone();
            let underlay = sw.add_port("underlay", PortKind::Underlay);
            let host_port = sw.add_port("host", PortKind::Host);
            let stack = w.add_host(
                HostConfig {
                    name: format!("node:{}", spec.name),
                    mac: Mac::from_ip([0x02, 0x01], spec.ip),
                    addrs: vec![Ipv4Network::new(
                        spec.gateway_ip(),
                        w.sc.cluster.pod_cidr.prefix(),
                    )
                    .map_err(|e| e.to_string())?],
                    gateway: Some(spec.vtep_ip()),
                    // The host port is a plain 1500-byte (underlay MTU) link, so the
                    // node's own large DF packets meet the pod MTU at the switch.
                    mtu: w.sc.underlay.mtu,
                    seed: 0,
                },
                Attach::NodeStack { node: i },
            );
            w.nodes.push(NodeSim {
                spec,
                switch: sw,
                up: true,
                member: i,
                underlay,
                host_port,
                stack,
                port_hosts: BTreeMap::new(),
                poll_scheduled: false,
                firewall_drops: 0,
            });
        }
        for (j, e) in w.sc.externals.clone().iter().enumerate() {
            let member = w.sc.nodes.len() + j;
            let h = w.add_host(
                HostConfig {
                    name: e.name.clone(),
                    mac: swctl::underlay_mac_for(e.ip),
                    addrs: vec![Ipv4Network::new(e.ip, w.sc.underlay.cidr.prefix())
                        .map_err(|e| e.to_string())?],
                    gateway: None,
                    mtu: w.sc.underlay.mtu,
                    seed: 0,
                },
                Attach::External { member },
            );
            w.member_hosts.insert(member, h);
        }
        for pod in w.sc.pods.clone() {
            w.add_pod(pod)?;
        }
        w.configure_services()?;
        w.configure_policies();
        for t in 0..w.sc.traffic.len() {
            if w.sc.traffic[t].count > 0 {
                let at = w.sc.traffic[t].start_ns;
                w.schedule(
                    at,
                    Event::Start {
                        traffic: t,
                        index: 0,
                    },
                );
            }
        }
        for f in 0..w.sc.faults.len() {
            let at = w.sc.faults[f].at_ns;
            w.schedule(at, Event::Fault(f));
        }
        Ok(w)
    }

    pub(super) fn build_switch(&self, i: usize) -> Result<Switch, String> {
        let sc = &self.sc;
        let n = &sc.nodes[i];
        let backend = match sc.cluster.backend {
            Backend::Vxlan => podnet_switch::Backend::Vxlan {
                vni: sc.cluster.vxlan.vni,
                port: sc.cluster.vxlan.port,
            },
            Backend::Udp => podnet_switch::Backend::Udp {
                port: sc.cluster.udp.port,
            },
            Backend::HostGw => podnet_switch::Backend::HostGw,
        };
        let mut c = NodeConfig::new(&n.name, n.subnet, sc.cluster.pod_cidr, n.ip, backend);
        c.underlay_mtu = sc.underlay.mtu;
        let np = sc.cluster.node_port_range;
        c.snat_ports = podnet_switch::services::conntrack::SnatPorts::excluding(np.first, np.last);
        // The cluster-wide list, this node included (its switch skips itself).
        c.peers = self.peers.clone();
        let pool: Arc<Pool> = Pool::new(512, sc.underlay.mtu as usize + 128);
        let sw = Switch::new(c, pool).map_err(|e| format!("node {}: {e}", n.name))?;
        sw.set_seed(name_seed(self.seed, &n.name));
        Ok(sw)
    }

    pub(super) fn add_host(&mut self, mut config: HostConfig, attach: Attach) -> usize {
        config.seed = name_seed(self.seed, &config.name);
        let ip = config.addrs[0].ip();
        let name = config.name.clone();
        let host = Host::new(config, self.now);
        self.hosts.push(HostSim {
            host,
            name,
            ip,
            attach,
            alive: true,
            next_poll: None,
        });
        self.hosts.len() - 1
    }

    pub(super) fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.spec.name == name)
    }

    pub(super) fn add_pod(&mut self, pod: Pod) -> Result<(), String> {
        let node = self
            .node_index(&pod.node)
            .ok_or_else(|| format!("pod {} on unknown node {}", pod.name, pod.node))?;
        let subnet = self.nodes[node].spec.subnet;
        let gateway = self.nodes[node].spec.gateway_ip();
        let port = self.nodes[node].switch.add_port(&pod.name, PortKind::Pod);
        let h = self.add_host(
            HostConfig {
                name: pod.name.clone(),
                mac: Mac::from_ip([0x0a, 0x58], pod.ip),
                addrs: vec![Ipv4Network::new(pod.ip, subnet.prefix()).map_err(|e| e.to_string())?],
                gateway: Some(gateway),
                mtu: self.sc.pod_mtu(),
                seed: 0,
            },
            Attach::Pod { node, port },
        );
        for l in &pod.listen {
            self.hosts[h].host.listen(l.port, l.protocol);
        }
        self.nodes[node].port_hosts.insert(port, h);
        self.pod_hosts.insert(pod.name.clone(), h);
        self.pods.insert(pod.name.clone(), pod);
        Ok(())
    }

    pub(super) fn delete_pod(&mut self, name: &str) {
        let Some(h) = self.pod_hosts.remove(name) else {
            return;
        };
        self.pods.remove(name);
        self.hosts[h].alive = false;
        if let Attach::Pod { node, port } = self.hosts[h].attach {
            self.nodes[node].switch.remove_port(port);
            self.nodes[node].port_hosts.remove(&port);
        }
    }

    /// Compiles the policies in force for each node over the pods alive now and
    /// publishes them (nothing to do while there are no policies, and never were).
    pub(super) fn configure_policies(&mut self) {
        use podnet_switch::policy::{ClusterView, NamedPort, NamespaceView, PodView, PolicyTable};
        if self.policies.is_empty() && self.sc.policies.is_empty() && !self.policy_faults() {
            return;
        }
        let number = |p: Protocol| match p {
            Protocol::Tcp => podnet_switch::wire::PROTO_TCP,
            Protocol::Udp => podnet_switch::wire::PROTO_UDP,
        };
        let view = ClusterView {
            namespaces: self
                .sc
                .namespaces
                .iter()
                .map(|n| NamespaceView {
                    name: n.name.clone(),
                    labels: n.labels.clone(),
                })
                .collect(),
            pods: self
                .pods
                .values()
                .map(|p| PodView {
                    ip: p.ip,
                    namespace: p.namespace.clone(),
                    labels: p.labels.clone(),
                    ports: p
                        .port_names
                        .iter()
                        .map(|(name, l)| NamedPort {
                            name: name.clone(),
                            protocol: number(l.protocol),
                            port: l.port,
                        })
                        .collect(),
                })
                .collect(),
        };
        for n in &self.nodes {
            let subnet = n.spec.subnet;
            let table = PolicyTable::compile(&view, &self.policies, |ip| subnet.contains(ip));
            n.switch.control().set_policies(table);
        }
    }

    fn policy_faults(&self) -> bool {
        self.sc
            .faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::PolicyAdd { .. }))
    }

    /// Programs every node's service table from the scenario's services and the pods
    /// alive now: one table, built once and shared by every node's switch.
    pub(super) fn configure_services(&mut self) -> Result<(), String> {
        use podnet_switch::services as svc;
        // The pods of each label, in name order, so that a service's endpoints are found
        // without scanning every pod for every service.
        let mut by_label: HashMap<(&str, &str), Vec<&Pod>> = HashMap::new();
        for pod in self.pods.values() {
            for (k, v) in &pod.labels {
                by_label.entry((k, v)).or_default().push(pod);
            }
        }
        let mut endpoints = Vec::with_capacity(self.sc.services.len());
        let list: Vec<svc::Service> = self
            .sc
            .services
            .iter()
            .map(|s| {
                let mut out = svc::Service::new(&s.name, s.cluster_ip);
                for p in &s.ports {
                    let proto = match p.protocol {
                        Protocol::Tcp => svc::Protocol::Tcp,
                        Protocol::Udp => svc::Protocol::Udp,
                    };
                    let mut port = svc::ServicePort::new(proto, p.port, p.target_port);
                    port.name = p.name.clone().unwrap_or_default();
                    if let Some(np) = p.node_port {
                        port = port.with_node_port(np);
                    }
                    out = out.with_port(port);
                }
                // Endpoints follow the labels of the pods alive now, in name order, in the
                // service's namespace: those of the selector's first label that have all
                // the others too.
                let selected: Vec<&Pod> = match s.selector.iter().next() {
                    None => Vec::new(),
                    Some((k, v)) => by_label
                        .get(&(k.as_str(), v.as_str()))
                        .into_iter()
                        .flatten()
                        .copied()
                        .filter(|pod| {
                            pod.namespace == s.namespace
                                && s.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
                        })
                        .collect(),
                };
                for pod in &selected {
                    out = out.with_endpoint(pod.ip, &pod.node);
                }
                endpoints.push(selected.iter().map(|p| p.name.clone()).collect());
                out.session_affinity = match s.session_affinity {
                    crate::scenario::SessionAffinity::None => svc::SessionAffinity::None,
                    crate::scenario::SessionAffinity::ClientIp => svc::SessionAffinity::ClientIP,
                };
                out.affinity_timeout_ns = s.affinity_timeout_ns;
                out.external_traffic_policy = match s.external_traffic_policy {
                    crate::scenario::TrafficPolicy::Cluster => svc::TrafficPolicy::Cluster,
                    crate::scenario::TrafficPolicy::Local => svc::TrafficPolicy::Local,
                };
                out
            })
            .collect();
        svc::ServiceTable::validate(&list).map_err(|e| format!("services: {e}"))?;
        self.service_generation += 1;
        let table = Arc::new(svc::ServiceTable::new(list, self.service_generation));
        for n in &self.nodes {
            n.switch
                .control()
                .set_service_table(Arc::clone(&table))
                .map_err(|e| format!("services of {}: {e}", n.spec.name))?;
        }
        self.endpoints = endpoints;
        Ok(())
    }
}

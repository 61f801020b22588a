//! Kubernetes NetworkPolicy (networking.k8s.io/v1), compiled per node into a lookup that a
//! new flow pays once.
//!
//! The model ([`NetworkPolicy`], [`Rule`], [`Peer`], [`PolicyPort`], [`LabelSelector`]) is
//! the API object without its YAML: the simulator and the TAP runtime parse their files
//! into it. [`PolicyTable::compile`] resolves every selector against the cluster as the
//! node knows it ([`ClusterView`]: namespaces, pods, their labels and named ports) into
//! sets of pod IPs, keeping only the pods of this node: a node enforces egress for the pods
//! it sends from and ingress for the pods it delivers to, as Calico's agent does. A label
//! or policy change compiles a new table and publishes it in the control snapshot.
//!
//! The semantics, as the API defines them:
//! - a pod is isolated for ingress (egress) only when some policy of its namespace selects
//!   it and has that policy type; `policyTypes` defaults to Ingress, plus Egress when the
//!   policy has egress rules;
//! - an isolated pod's allowed set is the union of the rules of every policy selecting it;
//! - a rule allows a peer (empty `from`/`to`: every peer) on a port (empty `ports`: every
//!   port and protocol); peers are pods by `podSelector` (the policy's namespace),
//!   `namespaceSelector`, both (AND), or an `ipBlock` with `except`, which matches pod IPs
//!   too (as Calico and Cilium do);
//! - ports by number, range (`endPort`) or name (the destination pod's container port).
//!
//! Which flows reach the table, and what carries its verdict afterwards (conntrack, so
//! established flows and replies never come back here), is the pipeline's business:
//! [`crate::switch`].

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ipnetwork::Ipv4Network;

use crate::wire::{PROTO_TCP, PROTO_UDP};

/// SCTP's IP protocol number.
pub const PROTO_SCTP: u8 = 132;

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

// ---- the model ------------------------------------------------------------------------------

/// A `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One of `matchExpressions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// A label selector; the empty one selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// True when `labels` satisfy every label and every expression.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// A policy type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// One of a rule's `from` (ingress) or `to` (egress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector`. Only a pod selector: pods of the
    /// policy's namespace; only a namespace selector: every pod of those namespaces.
    Pods {
        pods: Option<LabelSelector>,
        namespaces: Option<LabelSelector>,
    },
    /// `ipBlock`: addresses in `cidr` but in none of `except`.
    IpBlock {
        cidr: Ipv4Network,
        except: Vec<Ipv4Network>,
    },
}

/// A port of a rule: `port` absent matches every port of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyPort {
    /// IP protocol number: TCP (the API's default), UDP or SCTP.
    pub protocol: u8,
    pub port: Option<PortSpec>,
    /// With a numeric `port`: the range `port..=end_port`.
    pub end_port: Option<u16>,
}

/// A port by number or by the name of a container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    Number(u16),
    Name(String),
}

/// One ingress or egress rule: `peers` empty allows every peer, `ports` empty every port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PolicyPort>,
}

/// A NetworkPolicy object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: LabelSelector,
    /// `spec.policyTypes` as written; `None` takes the API's default ([`Self::has_type`]).
    pub policy_types: Option<Vec<Direction>>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl NetworkPolicy {
    /// A policy selecting `pod_selector` in `namespace`, with no rules: it denies every
    /// ingress of the pods it selects.
    pub fn new(namespace: &str, name: &str, pod_selector: LabelSelector) -> NetworkPolicy {
        NetworkPolicy {
            namespace: namespace.to_string(),
            name: name.to_string(),
            pod_selector,
            policy_types: None,
            ingress: Vec::new(),
            egress: Vec::new(),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the policy has this type: as written, or by the API's default (Ingress
    /// always, Egress when there are egress rules).
    pub fn has_type(&self, d: Direction) -> bool {
        match &self.policy_types {
            Some(types) => types.contains(&d),
            None => d == Direction::Ingress || !self.egress.is_empty(),
        }
    }

    fn rules(&self, d: Direction) -> &[Rule] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A named container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
}

/// A pod as policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub ip: Ipv4Addr,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<NamedPort>,
}

/// A namespace and its labels (the `kubernetes.io/metadata.name` label is implied).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What selectors are resolved against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub namespaces: Vec<NamespaceView>,
    pub pods: Vec<PodView>,
}

impl ClusterView {
    /// The labels of namespace `name`, with its name label; a namespace nobody declared
    /// has only that.
    fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
        labels
    }
}

// ---- the compiled table -----------------------------------------------------------------------

/// Which addresses a rule allows.
#[derive(Debug)]
enum PeerSet {
    Any,
    Some {
        /// Pod IPs the selectors resolved to, sorted, deduplicated.
        pods: Vec<u32>,
        blocks: Vec<(Ipv4Network, Vec<Ipv4Network>)>,
    },
}

impl PeerSet {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        match self {
            PeerSet::Any => true,
            PeerSet::Some { pods, blocks } => {
                pods.binary_search(&u32::from(ip)).is_ok()
                    || blocks.iter().any(|(cidr, except)| {
                        cidr.contains(ip) && !except.iter().any(|e| e.contains(ip))
                    })
            }
        }
    }
}

/// A rule's port after compiling: names of ingress rules are resolved already (the
/// destination is the pod the rule protects); an egress rule's names are looked up in the
/// destination pod's ports when a flow comes.
#[derive(Debug)]
enum PortMatch {
    Range { proto: u8, first: u16, last: u16 },
    Named { proto: u8, name: String },
}

#[derive(Debug)]
struct CompiledRule {
    policy: u16,
    peers: PeerSet,
    /// Empty: every port and protocol.
    ports: Vec<PortMatch>,
}

/// One direction of one isolated local pod: the union of its policies' rules.
#[derive(Debug)]
struct Side {
    /// The policies that isolate it, by index; a denial names the one when it is alone.
    policies: Vec<u16>,
    rules: Vec<CompiledRule>,
}

#[derive(Debug, Default)]
struct LocalPod {
    ingress: Option<Side>,
    egress: Option<Side>,
}

/// A policy as the table keeps it, with how often it decided.
#[derive(Debug)]
pub struct PolicyStat {
    /// `namespace/name`.
    pub key: String,
    /// Local pods it selects.
    pub selected: usize,
    allowed: AtomicU64,
    denied: AtomicU64,
}

impl PolicyStat {
    /// New flows a rule of this policy allowed (the first matching rule counts).
    pub fn allowed(&self) -> u64 {
        self.allowed.load(Relaxed)
    }

    /// New flows refused at a pod this policy isolates (in the direction refused): no
    /// rule of any policy isolating it allowed them. With several isolating policies,
    /// each of them counts the refusal.
    pub fn denied(&self) -> u64 {
        self.denied.load(Relaxed)
    }
}

/// Hashes the IPv4 addresses that key the table: one multiply (Fibonacci hashing), since
/// the keys are not attacker-chosen in a way SipHash would help with (they are the pods'
/// own addresses, set by the control plane).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = (v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type AddrMap<V> = HashMap<u32, V, BuildHasherDefault<AddrHasher>>;

/// A new flow as the policy stage judges it: after service DNAT (the real endpoint), from
/// the client's real address. `dport` is 0 for protocols without ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

/// Why a new flow was refused: which side, and the isolating policy when only one
/// isolates that pod (else `default-deny`: several did and no rule of any matched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    pub direction: Direction,
    policy: Option<u16>,
}

/// The node's compiled policies. The default table is off: the pipeline skips the stage
/// and tracks nothing for it. A compiled one (even of no policy) is on: every new pod
/// flow is judged and tracked, so that a policy published later finds the flows that
/// were established before it and leaves them alone.
#[derive(Debug, Default)]
pub struct PolicyTable {
    on: bool,
    stats: Vec<PolicyStat>,
    local: AddrMap<LocalPod>,
    /// Named ports of every pod with one, for egress rules that name a port.
    named: AddrMap<Vec<NamedPort>>,
}

impl PolicyTable {
    /// Compiles `policies` over `cluster` for the pods `is_local` says run on this node.
    pub fn compile(
        cluster: &ClusterView,
        policies: &[NetworkPolicy],
        is_local: impl Fn(Ipv4Addr) -> bool,
    ) -> PolicyTable {
        let ns_labels: HashMap<&str, BTreeMap<String, String>> = cluster
            .pods
            .iter()
            .map(|p| p.namespace.as_str())
            .chain(cluster.namespaces.iter().map(|n| n.name.as_str()))
            .map(|n| (n, cluster.namespace_labels(n)))
            .collect();
        let mut table = PolicyTable {
            on: true,
            named: cluster
                .pods
                .iter()
                .filter(|p| !p.ports.is_empty())
                .map(|p| (u32::from(p.ip), p.ports.clone()))
                .collect(),
            ..PolicyTable::default()
        };
        for (i, policy) in policies.iter().enumerate() {
            let index = i as u16;
            let selected: Vec<&PodView> = cluster
                .pods
                .iter()
                .filter(|p| {
                    is_local(p.ip)
                        && p.namespace == policy.namespace
                        && policy.pod_selector.matches(&p.labels)
                })
                .collect();
            table.stats.push(PolicyStat {
                key: policy.key(),
                selected: selected.len(),
                allowed: AtomicU64::new(0),
                denied: AtomicU64::new(0),
            });
            for d in [Direction::Ingress, Direction::Egress] {
                if !policy.has_type(d) {
                    continue;
                }
                for pod in &selected {
                    let rules = policy
                        .rules(d)
                        .iter()
                        .map(|r| compile_rule(cluster, &ns_labels, policy, index, r, d, pod));
                    let local = table.local.entry(u32::from(pod.ip)).or_default();
                    let side = match d {
                        Direction::Ingress => &mut local.ingress,
                        Direction::Egress => &mut local.egress,
                    };
                    let side = side.get_or_insert_with(|| Side {
                        policies: Vec::new(),
                        rules: Vec::new(),
                    });
                    side.policies.push(index);
                    side.rules.extend(rules);
                }
            }
        }
        table
    }

    /// True for the default table: no policy enforcement on this node at all.
    pub fn is_off(&self) -> bool {
        !self.on
    }

    /// True when no local pod is isolated in either direction (every flow is allowed).
    pub fn isolates_nothing(&self) -> bool {
        self.local.is_empty()
    }

    /// The policies, in the order they were given, with their counts.
    pub fn stats(&self) -> &[PolicyStat] {
        &self.stats
    }

    /// Judges a new flow: the egress of its source when that is an isolated local pod,
    /// then the ingress of its destination likewise. Counts the decision.
    pub fn check(&self, f: &FlowKey) -> Result<(), Denied> {
        self.judge::<true>(f)
    }

    /// [`PolicyTable::check`] without counting: what a dry run (`podnet ctl trace`) asks.
    pub fn check_uncounted(&self, f: &FlowKey) -> Result<(), Denied> {
        self.judge::<false>(f)
    }

    fn judge<const COUNT: bool>(&self, f: &FlowKey) -> Result<(), Denied> {
        if let Some(side) = self
            .local
            .get(&u32::from(f.src))
            .and_then(|p| p.egress.as_ref())
        {
            self.side::<COUNT>(side, Direction::Egress, f.dst, f)?;
        }
        if let Some(side) = self
            .local
            .get(&u32::from(f.dst))
            .and_then(|p| p.ingress.as_ref())
        {
            self.side::<COUNT>(side, Direction::Ingress, f.src, f)?;
        }
        Ok(())
    }

    /// `namespace/name` of the policy a denial names, or `default-deny`.
    pub fn denial_name(&self, d: &Denied) -> &str {
        match d.policy {
            Some(i) => &self.stats[i as usize].key,
            None => "default-deny",
        }
    }

    fn side<const COUNT: bool>(
        &self,
        side: &Side,
        d: Direction,
        peer: Ipv4Addr,
        f: &FlowKey,
    ) -> Result<(), Denied> {
        for rule in &side.rules {
            if rule.peers.contains(peer) && self.ports_match(&rule.ports, f) {
                if COUNT {
                    self.stats[rule.policy as usize]
                        .allowed
                        .fetch_add(1, Relaxed);
                }
                return Ok(());
            }
        }
        if COUNT {
            for &i in &side.policies {
                self.stats[i as usize].denied.fetch_add(1, Relaxed);
            }
        }
        let policy = match side.policies[..] {
            [only] => Some(only),
            _ => None,
        };
        Err(Denied {
            direction: d,
            policy,
        })
    }

    fn ports_match(&self, ports: &[PortMatch], f: &FlowKey) -> bool {
        ports.is_empty()
            || ports.iter().any(|p| match p {
                PortMatch::Range { proto, first, last } => {
                    *proto == f.proto && (*first..=*last).contains(&f.dport)
                }
                PortMatch::Named { proto, name } => {
                    *proto == f.proto
                        && self.named.get(&u32::from(f.dst)).is_some_and(|ports| {
                            ports.iter().any(|n| {
                                n.protocol == f.proto && n.port == f.dport && n.name == *name
                            })
                        })
                }
            })
    }
}

fn compile_rule(
    cluster: &ClusterView,
    ns_labels: &HashMap<&str, BTreeMap<String, String>>,
    policy: &NetworkPolicy,
    index: u16,
    rule: &Rule,
    d: Direction,
    pod: &PodView,
) -> CompiledRule {
    let peers = if rule.peers.is_empty() {
        PeerSet::Any
    } else {
        let mut pods = Vec::new();
        let mut blocks = Vec::new();
        for peer in &rule.peers {
            match peer {
                Peer::Pods {
                    pods: pod_sel,
                    namespaces,
                } => pods.extend(
                    cluster
                        .pods
                        .iter()
                        .filter(|p| match namespaces {
                            None => p.namespace == policy.namespace,
                            Some(sel) => ns_labels
                                .get(p.namespace.as_str())
                                .is_some_and(|l| sel.matches(l)),
                        })
                        .filter(|p| pod_sel.as_ref().is_none_or(|s| s.matches(&p.labels)))
                        .map(|p| u32::from(p.ip)),
                ),
                Peer::IpBlock { cidr, except } => blocks.push((*cidr, except.clone())),
            }
        }
        pods.sort_unstable();
        pods.dedup();
        PeerSet::Some { pods, blocks }
    };
    let ports = rule
        .ports
        .iter()
        .filter_map(|p| match (&p.port, d) {
            (None, _) => Some(PortMatch::Range {
                proto: p.protocol,
                first: 0,
                last: u16::MAX,
            }),
            (Some(PortSpec::Number(n)), _) => Some(PortMatch::Range {
                proto: p.protocol,
                first: *n,
                last: p.end_port.unwrap_or(*n).max(*n),
            }),
            // The protected pod is the destination: resolve its name now (a name it does
            // not have matches nothing).
            (Some(PortSpec::Name(name)), Direction::Ingress) => pod
                .ports
                .iter()
                .find(|n| n.name == *name && n.protocol == p.protocol)
                .map(|n| PortMatch::Range {
                    proto: p.protocol,
                    first: n.port,
                    last: n.port,
                }),
            (Some(PortSpec::Name(name)), Direction::Egress) => Some(PortMatch::Named {
                proto: p.protocol,
                name: name.clone(),
            }),
        })
        .collect::<Vec<_>>();
    // Every port of the rule named a port the pod lacks: it allows nothing, which an
    // empty list would turn into everything.
    let ports = if ports.is_empty() && !rule.ports.is_empty() {
        vec![PortMatch::Range {
            proto: 0,
            first: 1,
            last: 0,
        }]
    } else {
        ports
    };
    CompiledRule {
        policy: index,
        peers,
        ports,
    }
}

/// The protocol word of the API (`TCP`, `UDP`, `SCTP`) as an IP protocol number.
pub fn protocol_number(word: &str) -> Option<u8> {
    match word {
        "TCP" => Some(PROTO_TCP),
        "UDP" => Some(PROTO_UDP),
        "SCTP" => Some(PROTO_SCTP),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

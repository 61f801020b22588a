//! The scenario file exactly as written: one struct per YAML mapping, every field optional
//! that SCENARIO.md gives a default, unknown fields rejected.
//!
//! Values that a later check may find wrong (a name that must exist, an address that must
//! lie in a subnet) are kept `Spanned`, so the error can point at the value's line and
//! column. Values whose format alone decides validity (units, enum words) are checked here,
//! by the parser, which also knows where they are. Lists are `Option<Vec<_>>` so that an
//! empty key (`faults:` with every entry commented out) means an empty list.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::{
    Action, Backend, DropReason, PortRange, Protocol, Role, RuleProtocol, ServiceType,
    SessionAffinity, SourceSeen, TrafficKind, TrafficPolicy,
};
use super::policies::{PolicyRef, RawPolicy};
use super::units::{BitsPerSecond, Bytes, Fraction, Nanos, Port};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScenario {
    /// Required; optional here so that its absence is reported at line 1, where a reader
    /// adds it, rather than wherever the parser happened to stop.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub duration: Option<Spanned<Nanos>>,
    #[serde(default)]
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub underlay: Option<RawUnderlay>,
    #[serde(default)]
    pub nodes: Option<Vec<RawNode>>,
    #[serde(default)]
    pub namespaces: Option<Vec<RawNamespace>>,
    #[serde(default)]
    pub pods: Option<Vec<RawPod>>,
    #[serde(default)]
    pub services: Option<Vec<RawService>>,
    #[serde(default)]
    pub policies: Option<Vec<RawPolicy>>,
    #[serde(default)]
    pub policy_files: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub externals: Option<Vec<RawExternal>>,
    #[serde(default)]
    pub firewall: Option<RawFirewall>,
    #[serde(default)]
    pub traffic: Option<Vec<RawTraffic>>,
    #[serde(default)]
    pub faults: Option<Vec<RawFault>>,
    #[serde(default)]
    pub expect: Option<Vec<RawExpectation>>,
}

/// `cluster:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCluster {
    pub backend: Option<Backend>,
    pub pod_cidr: Option<Spanned<String>>,
    pub node_subnet_len: Option<Spanned<u8>>,
    pub service_cidr: Option<Spanned<String>>,
    pub node_port_range: Option<PortRange>,
    pub vxlan: Option<RawVxlan>,
    pub udp: Option<RawUdp>,
    pub hairpin: Option<bool>,
    pub infrastructure: Option<Vec<Spanned<String>>>,
}

/// `cluster.vxlan`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawVxlan {
    pub vni: Option<Spanned<u32>>,
    pub port: Option<Spanned<Port>>,
}

/// `cluster.udp`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawUdp {
    pub port: Option<Spanned<Port>>,
}

/// `underlay:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawUnderlay {
    pub cidr: Option<Spanned<String>>,
    pub mtu: Option<Spanned<Bytes>>,
    pub latency: Option<Nanos>,
    pub bandwidth: Option<BitsPerSecond>,
    pub loss: Option<Fraction>,
}

/// One entry of `nodes:`; `count` makes several.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: Spanned<String>,
    #[serde(default)]
    pub count: Option<Spanned<u32>>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub subnet: Option<Spanned<String>>,
    #[serde(default)]
    pub ip: Option<Spanned<String>>,
}

/// One entry of `pods:` (and the spec a `pod_add` fault carries); `count` makes several.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPod {
    pub name: Spanned<String>,
    #[serde(default)]
    pub count: Option<Spanned<u32>>,
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    #[serde(default)]
    pub node: Option<Spanned<String>>,
    #[serde(default)]
    pub ip: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub listen: Option<Vec<RawListen>>,
}

/// One entry of a pod's `listen:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListen {
    pub port: Spanned<Port>,
    #[serde(default)]
    pub protocol: Option<Protocol>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
}

/// One entry of `namespaces:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNamespace {
    pub name: Spanned<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// One entry of `services:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Spanned<String>,
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    #[serde(default, rename = "type")]
    pub service_type: Option<Spanned<ServiceType>>,
    #[serde(default)]
    pub cluster_ip: Option<Spanned<String>>,
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub ports: Option<Vec<RawServicePort>>,
    #[serde(default)]
    pub session_affinity: Option<SessionAffinity>,
    #[serde(default)]
    pub affinity_timeout: Option<Spanned<Nanos>>,
    #[serde(default)]
    pub external_traffic_policy: Option<TrafficPolicy>,
}

/// One entry of a service's `ports:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServicePort {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    pub port: Spanned<Port>,
    #[serde(default)]
    pub target_port: Option<Spanned<Port>>,
    #[serde(default)]
    pub protocol: Option<Protocol>,
    #[serde(default)]
    pub node_port: Option<Spanned<Port>>,
}

/// One entry of `externals:`; `count` makes several.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExternal {
    pub name: Spanned<String>,
    #[serde(default)]
    pub count: Option<Spanned<u32>>,
    #[serde(default)]
    pub ip: Option<Spanned<String>>,
}

/// `firewall:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawFirewall {
    pub default: Option<Action>,
    pub rules: Option<Vec<RawRule>>,
}

/// One entry of `firewall.rules:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub action: Action,
    #[serde(default)]
    pub to: Option<Spanned<String>>,
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    #[serde(default)]
    pub protocol: Option<RuleProtocol>,
    #[serde(default)]
    pub ports: Option<Spanned<PortList>>,
}

/// A firewall rule's `ports:` — a number, a range `"30000-32767"`, or a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortList(pub Vec<PortRange>);

impl<'de> Deserialize<'de> for PortList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(PortRange),
            Many(Vec<PortRange>),
        }
        // Untagged buffering would hide which entry is wrong; the message says what fits.
        match Written::deserialize(deserializer) {
            Ok(Written::One(range)) => Ok(PortList(vec![range])),
            Ok(Written::Many(ranges)) if ranges.is_empty() => Err(de::Error::custom(
                "ports: an empty list matches nothing; leave ports out to match every port",
            )),
            Ok(Written::Many(ranges)) => Ok(PortList(ranges)),
            Err(_) => Err(de::Error::custom(
                "ports: expected a port (1 to 65535), a range such as \"30000-32767\" \
                 or a list of them, e.g. [22, 8472, \"30000-32767\"]",
            )),
        }
    }
}

/// One entry of `traffic:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTraffic {
    pub name: Spanned<String>,
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    #[serde(default)]
    pub kind: Option<TrafficKind>,
    #[serde(default)]
    pub count: Option<Spanned<u32>>,
    #[serde(default)]
    pub bytes: Option<Spanned<Bytes>>,
    #[serde(default)]
    pub start: Option<Nanos>,
    #[serde(default)]
    pub interval: Option<Spanned<Nanos>>,
    #[serde(default)]
    pub timeout: Option<Spanned<Nanos>>,
    #[serde(default)]
    pub source_port: Option<Spanned<u16>>,
}

/// One entry of `faults:`. One flat struct for every kind (rather than a tagged enum,
/// whose buffering would lose source positions); the resolver checks which fields a kind
/// needs and which it does not take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFault {
    pub at: Nanos,
    pub kind: Spanned<FaultTag>,
    #[serde(default)]
    pub node: Option<Spanned<String>>,
    #[serde(default)]
    pub loss: Option<Spanned<Fraction>>,
    #[serde(default)]
    pub latency: Option<Spanned<Nanos>>,
    #[serde(default)]
    pub groups: Option<Spanned<Vec<Vec<Spanned<String>>>>>,
    #[serde(default)]
    pub pod: Option<Spanned<PodRef>>,
    #[serde(default)]
    pub policy: Option<Spanned<PolicyRef>>,
    #[serde(default)]
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
}

/// A fault's `kind:` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultTag {
    LinkDown,
    LinkUp,
    NodeCrash,
    NodeRestart,
    Loss,
    Latency,
    Partition,
    Heal,
    PodDelete,
    PodAdd,
    PodLabel,
    PolicyAdd,
    PolicyDelete,
}

impl FaultTag {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultTag::LinkDown => "link_down",
            FaultTag::LinkUp => "link_up",
            FaultTag::NodeCrash => "node_crash",
            FaultTag::NodeRestart => "node_restart",
            FaultTag::Loss => "loss",
            FaultTag::Latency => "latency",
            FaultTag::Partition => "partition",
            FaultTag::Heal => "heal",
            FaultTag::PodDelete => "pod_delete",
            FaultTag::PodAdd => "pod_add",
            FaultTag::PodLabel => "pod_label",
            FaultTag::PolicyAdd => "policy_add",
            FaultTag::PolicyDelete => "policy_delete",
        }
    }
}

/// A fault's `pod:` — a name (`pod_delete`) or a whole pod spec (`pod_add`).
#[derive(Debug)]
pub(crate) enum PodRef {
    Name(String),
    Spec(Box<RawPod>),
}

impl<'de> Deserialize<'de> for PodRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PodRefVisitor;

        impl<'de> Visitor<'de> for PodRefVisitor {
            type Value = PodRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a pod name or a pod spec")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<PodRef, E> {
                Ok(PodRef::Name(name.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PodRef, A::Error> {
                // The map's values still go through the YAML deserializer, so the spec's
                // own `Spanned` fields keep their positions.
                RawPod::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|spec| PodRef::Spec(Box::new(spec)))
            }
        }

        deserializer.deserialize_any(PodRefVisitor)
    }
}

/// One entry of `expect:`. Several checks in one entry become several expectations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExpectation {
    pub traffic: Spanned<String>,
    #[serde(default)]
    pub delivered: Option<Spanned<String>>,
    #[serde(default)]
    pub reason: Option<Spanned<DropReason>>,
    #[serde(default)]
    pub spread: Option<Spread>,
    #[serde(default)]
    pub sticky: Option<bool>,
    #[serde(default)]
    pub source_seen: Option<SourceSeen>,
}

/// `spread:` — only `even` so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Spread {
    Even,
}

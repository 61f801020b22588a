//! NetworkPolicy objects in Kubernetes' own YAML (networking.k8s.io/v1), as
//! `kubectl get -o yaml` prints them, into the switch's model ([`podnet_switch::policy`]).
//!
//! One parser for every file that holds them: a scenario's `policies:` and
//! `policy_files:` (podnet-sim) and a TAP node file's `policies:` (podnet-tap). Each
//! deserializes [`RawPolicy`] with serde-saphyr inside its own file and turns it into the
//! model with [`policy`]; an [`Invalid`] carries the position of the value at fault, which
//! the caller puts behind its file name (`FILE:LINE:COL: message`).
//!
//! The object's server-side fields (`status`, `metadata.uid`, `resourceVersion`, ...) are
//! accepted and ignored, so a policy pasted from a cluster loads unchanged; any other
//! unknown field is an error with its position.

use std::collections::BTreeMap;
use std::fmt;

use ipnetwork::Ipv4Network;
use podnet_switch::policy::{
    protocol_number, Direction, LabelSelector, NetworkPolicy, Operator, Peer, PolicyPort, PortSpec,
    Requirement, Rule,
};
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

/// A NetworkPolicy object that is well-formed YAML but not a valid policy: where (the
/// value at fault, as the parser located it; `None` when no one value is) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub location: Option<Location>,
    pub message: String,
}

impl Invalid {
    /// An error at the place `spanned` was written (for an alias: where it is used).
    pub fn at<T>(spanned: &Spanned<T>, message: impl Into<String>) -> Invalid {
        Invalid {
            location: Some(spanned.referenced),
            message: message.into(),
        }
    }

    fn at_position(location: Option<Location>, message: impl Into<String>) -> Invalid {
        Invalid {
            location,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Invalid {}

/// One NetworkPolicy object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPolicy {
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub metadata: RawMetadata,
    #[serde(default)]
    pub spec: Option<RawSpec>,
    #[serde(default, rename = "status")]
    _status: Option<IgnoredAny>,
}

/// `metadata:`; only `name` and `namespace` mean anything here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMetadata {
    pub name: Spanned<String>,
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    #[serde(default, rename = "labels")]
    _labels: Option<IgnoredAny>,
    #[serde(default, rename = "annotations")]
    _annotations: Option<IgnoredAny>,
    #[serde(default, rename = "uid")]
    _uid: Option<IgnoredAny>,
    #[serde(default, rename = "resourceVersion")]
    _resource_version: Option<IgnoredAny>,
    #[serde(default, rename = "generation")]
    _generation: Option<IgnoredAny>,
    #[serde(default, rename = "creationTimestamp")]
    _creation_timestamp: Option<IgnoredAny>,
    #[serde(default, rename = "managedFields")]
    _managed_fields: Option<IgnoredAny>,
}

/// `spec:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSpec {
    #[serde(default)]
    pub pod_selector: Option<RawSelector>,
    #[serde(default)]
    pub policy_types: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub ingress: Option<Vec<RawIngress>>,
    #[serde(default)]
    pub egress: Option<Vec<RawEgress>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngress {
    #[serde(default)]
    pub from: Option<Vec<RawPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<RawPort>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    #[serde(default)]
    pub to: Option<Vec<RawPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<RawPort>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPeer {
    #[serde(default)]
    pub pod_selector: Option<RawSelector>,
    #[serde(default)]
    pub namespace_selector: Option<RawSelector>,
    #[serde(default)]
    pub ip_block: Option<RawIpBlock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSelector {
    #[serde(default)]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub match_expressions: Option<Vec<RawRequirement>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    pub key: String,
    pub operator: Spanned<String>,
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpBlock {
    pub cidr: Spanned<String>,
    #[serde(default)]
    pub except: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPort {
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<IntOrString>>,
    #[serde(default)]
    pub end_port: Option<Spanned<u32>>,
}

/// A port as the API writes it: a number or a name.
#[derive(Debug, Clone)]
pub enum IntOrString {
    Int(u64),
    Str(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                u64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("a port is 1 to 65535"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::Str(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Checks one object and turns it into the model; `namespaces` are the ones that exist
/// (a policy of another namespace is an error at its `metadata.namespace`).
pub fn policy(raw: &RawPolicy, namespaces: &[String]) -> Result<NetworkPolicy, Invalid> {
    if raw.api_version.value != "networking.k8s.io/v1" {
        return Err(Invalid::at(
            &raw.api_version,
            format!(
                "apiVersion {:?}: expected networking.k8s.io/v1",
                raw.api_version.value
            ),
        ));
    }
    if raw.kind.value != "NetworkPolicy" {
        return Err(Invalid::at(
            &raw.kind,
            format!("kind {:?}: expected NetworkPolicy", raw.kind.value),
        ));
    }
    let name = &raw.metadata.name;
    if name.value.is_empty() {
        return Err(Invalid::at(name, "metadata.name is empty"));
    }
    let namespace = match &raw.metadata.namespace {
        Some(ns) if !namespaces.contains(&ns.value) => {
            return Err(Invalid::at(
                ns,
                format!("namespace {:?} is not declared in namespaces:", ns.value),
            ))
        }
        Some(ns) => ns.value.clone(),
        None => "default".to_string(),
    };
    let default_spec = RawSpec::default();
    let spec = raw.spec.as_ref().unwrap_or(&default_spec);
    let mut p = NetworkPolicy::new(
        &namespace,
        &name.value,
        selector(spec.pod_selector.as_ref())?,
    );
    if let Some(types) = &spec.policy_types {
        let mut out = Vec::new();
        for t in types {
            out.push(match t.value.as_str() {
                "Ingress" => Direction::Ingress,
                "Egress" => Direction::Egress,
                other => {
                    return Err(Invalid::at(
                        t,
                        format!("policyTypes {other:?}: expected Ingress or Egress"),
                    ))
                }
            });
        }
        p.policy_types = Some(out);
    }
    for r in spec.ingress.iter().flatten() {
        p.ingress.push(rule(r.from.as_deref(), r.ports.as_deref())?);
    }
    for r in spec.egress.iter().flatten() {
        p.egress.push(rule(r.to.as_deref(), r.ports.as_deref())?);
    }
    Ok(p)
}

fn selector(raw: Option<&RawSelector>) -> Result<LabelSelector, Invalid> {
    let Some(raw) = raw else {
        return Ok(LabelSelector::default());
    };
    let mut s = LabelSelector {
        match_labels: raw.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for r in raw.match_expressions.iter().flatten() {
        let operator = match r.operator.value.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(Invalid::at(
                    &r.operator,
                    format!("operator {other:?}: expected In, NotIn, Exists or DoesNotExist"),
                ))
            }
        };
        let values = r.values.clone().unwrap_or_default();
        let needs_values = matches!(operator, Operator::In | Operator::NotIn);
        if needs_values == values.is_empty() {
            return Err(Invalid::at(
                &r.operator,
                if needs_values {
                    "In and NotIn need a non-empty values list"
                } else {
                    "Exists and DoesNotExist take no values"
                },
            ));
        }
        s.match_expressions.push(Requirement {
            key: r.key.clone(),
            operator,
            values,
        });
    }
    Ok(s)
}

fn cidr(raw: &Spanned<String>) -> Result<Ipv4Network, Invalid> {
    raw.value.parse::<Ipv4Network>().map_err(|_| {
        Invalid::at(
            raw,
            format!(
                "cidr {:?}: expected an IPv4 CIDR such as 10.0.0.0/16",
                raw.value
            ),
        )
    })
}

fn rule(peers: Option<&[RawPeer]>, ports: Option<&[RawPort]>) -> Result<Rule, Invalid> {
    let mut r = Rule::default();
    for peer in peers.unwrap_or_default() {
        r.peers.push(
            match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
                (Some(block), None, None) => {
                    let net = cidr(&block.cidr)?;
                    let mut except = Vec::new();
                    for e in block.except.iter().flatten() {
                        let x = cidr(e)?;
                        if !(net.contains(x.network()) && x.prefix() >= net.prefix()) {
                            return Err(Invalid::at(
                                e,
                                format!("except {} is not inside cidr {net}", e.value),
                            ));
                        }
                        except.push(x);
                    }
                    Peer::IpBlock { cidr: net, except }
                }
                (Some(block), _, _) => return Err(Invalid::at(
                    &block.cidr,
                    "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
                )),
                (None, None, None) => {
                    return Err(Invalid::at_position(
                        None,
                        "a peer needs podSelector, namespaceSelector or ipBlock",
                    ))
                }
                (None, pods, namespaces) => Peer::Pods {
                    pods: pods.as_ref().map(|s| selector(Some(s))).transpose()?,
                    namespaces: namespaces.as_ref().map(|s| selector(Some(s))).transpose()?,
                },
            },
        );
    }
    for port in ports.unwrap_or_default() {
        let protocol = match &port.protocol {
            None => podnet_switch::wire::PROTO_TCP,
            Some(p) => protocol_number(&p.value).ok_or_else(|| {
                Invalid::at(
                    p,
                    format!("protocol {:?}: expected TCP, UDP or SCTP", p.value),
                )
            })?,
        };
        let spec = match &port.port {
            None => None,
            Some(s) => Some(match &s.value {
                IntOrString::Int(n) if (1..=65535).contains(n) => PortSpec::Number(*n as u16),
                IntOrString::Int(n) => {
                    return Err(Invalid::at(s, format!("port {n}: expected 1 to 65535")))
                }
                IntOrString::Str(name) if name.parse::<u16>().is_ok() => {
                    PortSpec::Number(name.parse().unwrap_or_default())
                }
                IntOrString::Str(name) => PortSpec::Name(name.clone()),
            }),
        };
        let end_port = match (&port.end_port, &spec) {
            (None, _) => None,
            (Some(e), Some(PortSpec::Number(first)))
                if e.value >= *first as u32 && e.value <= 65535 =>
            {
                Some(e.value as u16)
            }
            (Some(e), Some(PortSpec::Number(first))) => {
                return Err(Invalid::at(
                    e,
                    format!(
                        "endPort {} must be at least port {first} and at most 65535",
                        e.value
                    ),
                ))
            }
            (Some(e), _) => {
                return Err(Invalid::at(e, "endPort needs a numeric port"));
            }
        };
        r.ports.push(PolicyPort {
            protocol,
            port: spec,
            end_port,
        });
    }
    Ok(r)
}

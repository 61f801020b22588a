//! `policies:`, `policy_files:` and the faults' `policy:` — the scenario's plumbing around
//! NetworkPolicy objects. The objects themselves (Kubernetes' own YAML, into the switch's
//! model) are parsed by podnet-netpol, the one parser the TAP node file uses too.

use std::fmt;

use podnet_switch::policy::NetworkPolicy;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

pub(crate) use podnet_netpol::RawPolicy;

use super::error::{Invalid, Position};

/// Checks one object and turns it into the model; `namespaces` are the ones that exist.
pub(crate) fn policy(raw: &RawPolicy, namespaces: &[String]) -> Result<NetworkPolicy, Invalid> {
    podnet_netpol::policy(raw, namespaces)
        .map_err(|e| Invalid::at_position(e.location.and_then(Position::from_location), e.message))
}

/// A fault's `policy:` — `NAMESPACE/NAME` (`policy_delete`) or a whole object (`policy_add`).
#[derive(Debug)]
pub(crate) enum PolicyRef {
    Name(String),
    Object(Box<RawPolicy>),
}

impl<'de> Deserialize<'de> for PolicyRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PolicyRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("NAMESPACE/NAME or a NetworkPolicy object")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PolicyRef, E> {
                Ok(PolicyRef::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PolicyRef, A::Error> {
                RawPolicy::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|p| PolicyRef::Object(Box::new(p)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

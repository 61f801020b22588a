//! Networks and addresses as scenario files write them (`10.2.0.0/16`, `172.16.0.20`).
//!
//! A network must be written with its prefix length and without host bits: `10.2.0.1/16`
//! is more likely a typo than a request for 10.2.0.0/16, so it is an error that names the
//! network the user probably meant.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde_saphyr::Spanned;

use super::error::Invalid;

/// Parses the network in `field` (e.g. "pod_cidr").
pub(crate) fn network(written: &Spanned<String>, field: &str) -> Result<Ipv4Network, Invalid> {
    let text = written.value.trim();
    if !text.contains('/') {
        return Err(Invalid::at(
            written,
            format!("{field} {text:?} is not a CIDR: write the prefix length, e.g. 10.2.0.0/16"),
        ));
    }
    let network: Ipv4Network = text.parse().map_err(|error| {
        Invalid::at(
            written,
            format!("{field} {text:?} is not a valid CIDR: {error}"),
        )
    })?;
    if network.ip() != network.network() {
        return Err(Invalid::at(
            written,
            format!(
                "{field} {text:?} has host bits set: did you mean {}/{}?",
                network.network(),
                network.prefix()
            ),
        ));
    }
    Ok(network)
}

/// Parses the address in `field` (e.g. "ip").
pub(crate) fn address(written: &Spanned<String>, field: &str) -> Result<Ipv4Addr, Invalid> {
    let text = written.value.trim();
    text.parse().map_err(|_| {
        Invalid::at(
            written,
            format!("{field} {text:?} is not a valid IPv4 address"),
        )
    })
}

/// Whether two networks share any address.
pub(crate) fn overlap(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Whether `inner` lies wholly inside `outer`.
pub(crate) fn within(inner: Ipv4Network, outer: Ipv4Network) -> bool {
    inner.prefix() >= outer.prefix() && outer.contains(inner.network())
}

/// The network's first address as a number.
pub(crate) fn first(network: Ipv4Network) -> u32 {
    u32::from(network.network())
}

/// The network's last (broadcast) address as a number.
pub(crate) fn last(network: Ipv4Network) -> u32 {
    u32::from(network.broadcast())
}

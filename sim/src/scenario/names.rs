//! Names: `{i}` expansion, what a name may contain, and one table that catches duplicates.
//!
//! Nodes, pods and externals share one namespace: a traffic `from: x` must not be able to
//! mean two hosts, and `--pcap DIR` writes `DIR/<node>.pcap` and `DIR/<pod>.pcap` side by
//! side. Services and traffic each have a namespace of their own. Names may hold letters,
//! digits, `-`, `_` and `.`: nothing that could separate the parts of `svc:NAME:PORT` or
//! climb out of a pcap directory.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::error::{Invalid, Position};

/// A node as written wherever one is meant: `worker-0` or, as traffic writes it,
/// `node:worker-0`. Both name the same node.
pub(crate) fn node_name(written: &str) -> &str {
    let text = written.trim();
    text.strip_prefix("node:").unwrap_or(text)
}

/// The placeholder `count` replaces with 0, 1, ... count-1.
const INDEX: &str = "{i}";

/// More entries than this from one `count` is a typo, not a cluster; stop before
/// allocating for it.
const MAX_COUNT: u32 = 100_000;

/// Expands `name` with `count` (default 1): `worker-{i}` × 2 gives worker-0, worker-1.
///
/// `what` names the kind of entry in messages ("node", "pod", "external").
pub(crate) fn expand(
    name: &Spanned<String>,
    count: Option<&Spanned<u32>>,
    what: &str,
) -> Result<Vec<String>, Invalid> {
    let copies = count.map_or(1, |count| count.value);
    if let Some(count) = count {
        if count.value > MAX_COUNT {
            return Err(Invalid::at(
                count,
                format!("count {} is more than {MAX_COUNT}", count.value),
            ));
        }
        if count.value > 1 && !name.value.contains(INDEX) {
            return Err(Invalid::at(
                name,
                format!(
                    "{what} name {:?} needs {INDEX} when count is more than 1, \
                     e.g. {:?}",
                    name.value,
                    format!("{}-{INDEX}", name.value)
                ),
            ));
        }
    }
    check(&name.value.replace(INDEX, "0"), name, what)?;
    Ok((0..copies)
        .map(|index| name.value.replace(INDEX, &index.to_string()))
        .collect())
}

/// Checks that `name` (already expanded) is a usable name; errors point at `written`.
pub(crate) fn check<T>(name: &str, written: &Spanned<T>, what: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::at(written, format!("{what} name is empty")));
    }
    if name.contains(['{', '}']) {
        return Err(Invalid::at(
            written,
            format!("{what} name {name:?}: {INDEX} is the only placeholder a name may hold"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Invalid::at(
            written,
            format!(
                "{what} name {name:?} holds {bad:?}: names are letters, digits, '-', '_' and '.'"
            ),
        ));
    }
    Ok(())
}

/// The pod a traffic or fault entry means by `written`: the pod of that exact name
/// (`NS/NAME`, or a bare name in `default`), else the one pod of that name in any
/// namespace.
pub(crate) fn find_pod<'a>(
    written: &str,
    mut names: impl Iterator<Item = &'a str> + Clone,
) -> Option<&'a str> {
    if let Some(exact) = names.clone().find(|n| *n == written) {
        return Some(exact);
    }
    if written.contains('/') {
        return None;
    }
    let suffix = format!("/{written}");
    let first = names.find(|n| n.ends_with(&suffix))?;
    match names.find(|n| n.ends_with(&suffix)) {
        Some(_) => None,
        None => Some(first),
    }
}

/// The name of an object of `namespace`: bare in `default`, else `NS/NAME`.
pub(crate) fn qualified(namespace: &str, name: &str) -> String {
    if namespace == "default" {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Who holds a name, and where it was written.
#[derive(Clone, Copy, Debug)]
struct Claim {
    what: &'static str,
    position: Option<Position>,
}

/// A namespace: the first claim on a name wins, a second is an error naming the first.
#[derive(Debug, Default)]
pub(crate) struct Names {
    claims: BTreeMap<String, Claim>,
}

impl Names {
    /// Claims `name` for a `what` written at `position`.
    pub(crate) fn claim(
        &mut self,
        name: &str,
        what: &'static str,
        position: Option<Position>,
    ) -> Result<(), Invalid> {
        if let Some(first) = self.claims.get(name) {
            let place = first
                .position
                .map(|position| format!(" at {position}"))
                .unwrap_or_default();
            let message = if first.what == what {
                format!("duplicate {what} name {name:?} (first{place})")
            } else {
                format!(
                    "duplicate name {name:?}: {what} has the name of the {}{place}",
                    first.what
                )
            };
            return Err(Invalid::at_position(position, message));
        }
        self.claims
            .insert(name.to_string(), Claim { what, position });
        Ok(())
    }

    /// What kind of entry holds `name`, if any.
    pub(crate) fn holder(&self, name: &str) -> Option<&'static str> {
        self.claims.get(name).map(|claim| claim.what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_saphyr::Location;

    fn spanned<T>(value: T) -> Spanned<T> {
        Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
    }

    #[test]
    fn expands_every_placeholder() {
        let name = spanned("rack{i}-node-{i}".to_string());
        let count = spanned(3);
        assert_eq!(
            expand(&name, Some(&count), "node").unwrap(),
            ["rack0-node-0", "rack1-node-1", "rack2-node-2"]
        );
        assert_eq!(expand(&name, None, "node").unwrap(), ["rack0-node-0"]);
        assert!(expand(&name, Some(&spanned(0)), "node").unwrap().is_empty());
    }

    #[test]
    fn count_needs_a_placeholder() {
        let error = expand(&spanned("web".to_string()), Some(&spanned(2)), "pod").unwrap_err();
        assert!(error.message.contains("needs {i}"), "{}", error.message);
        assert!(expand(&spanned("web".to_string()), Some(&spanned(1)), "pod").is_ok());
    }

    #[test]
    fn rejects_separators_and_other_placeholders() {
        for bad in ["a:b", "a/b", "a b", "web-{n}", ""] {
            assert!(
                expand(&spanned(bad.to_string()), None, "pod").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn second_claim_names_the_first() {
        let mut names = Names::default();
        let first = Some(Position { line: 3, column: 9 });
        names.claim("a", "node", first).unwrap();
        let error = names.claim("a", "node", None).unwrap_err();
        assert_eq!(error.message, "duplicate node name \"a\" (first at 3:9)");
        let error = names.claim("a", "pod", None).unwrap_err();
        assert!(
            error.message.contains("the node at 3:9"),
            "{}",
            error.message
        );
        assert_eq!(names.holder("a"), Some("node"));
    }
}

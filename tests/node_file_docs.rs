//! docs/node-file.md and examples/ against the real node file loader: every YAML block of
//! the document and every example node file parses, and every field the loader accepts is
//! named in the document. The loader's own list of fields comes from its unknown-field
//! errors, so a field added to the loader and not to the document fails here.

use std::path::Path;

use podnet_tap::nodefile;

const DOC: &str = "docs/node-file.md";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The ```yaml blocks of a Markdown text, with the line each starts on.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((i + 2, String::new())),
            Some(_) if line.trim_start() == "```" => blocks.push(current.take().unwrap()),
            Some((_, b)) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```yaml block");
    blocks
}

#[test]
fn every_yaml_block_of_the_document_parses() {
    let text = std::fs::read_to_string(root().join(DOC)).unwrap();
    let blocks = yaml_blocks(&text);
    assert!(
        blocks.len() >= 2,
        "{DOC}: expected the complete and the smallest example"
    );
    for (line, block) in blocks {
        let name = format!("{DOC} (block at line {line})");
        if let Err(e) = nodefile::parse(&name, &block) {
            panic!("{e}");
        }
    }
}

#[test]
fn every_example_node_file_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if let Err(e) = nodefile::load(&path) {
                panic!("{e}");
            }
            n += 1;
        }
    }
    assert!(n >= 3, "examples/: {n} node files");
}

/// The fields the loader accepts at the place where `yaml` (a node file) has the unknown
/// field `zz_unknown`: the names its error lists.
fn accepted_fields(yaml: &str) -> Vec<String> {
    let e = nodefile::parse("probe.yaml", yaml)
        .expect_err("an unknown field is an error")
        .to_string();
    assert!(e.contains("zz_unknown"), "not an unknown-field error: {e}");
    let list = e
        .split_once("expected")
        .unwrap_or_else(|| panic!("no list of fields in {e:?}"))
        .1;
    let list = list.trim().strip_prefix("one of").unwrap_or(list);
    let names: Vec<String> = list
        .split(',')
        .map(|n| n.trim().trim_matches('`').to_string())
        .filter(|n| !n.is_empty())
        .collect();
    assert!(!names.is_empty(), "no field names in {e:?}");
    names
}

#[test]
fn every_field_the_loader_accepts_is_documented() {
    let doc = std::fs::read_to_string(root().join(DOC)).unwrap();
    let base = "node: a\nsubnet: 10.0.1.0/24\nunderlay_ip: 172.16.0.1\n";
    let probes = [
        ("the node", format!("{base}zz_unknown: 1\n")),
        ("vxlan", format!("{base}vxlan: {{zz_unknown: 1}}\n")),
        ("udp", format!("{base}udp: {{zz_unknown: 1}}\n")),
        (
            "peers",
            format!("{base}peers: [{{name: b, underlay_ip: 172.16.0.2, subnet: 10.0.2.0/24, zz_unknown: 1}}]\n"),
        ),
        (
            "pods",
            format!("{base}pods: [{{name: p, tap: t, ip: 10.0.1.9, zz_unknown: 1}}]\n"),
        ),
        ("host_port", format!("{base}host_port: {{tap: h, zz_unknown: 1}}\n")),
        (
            "pod ports",
            format!("{base}pods: [{{name: p, tap: t, ip: 10.0.1.9, ports: [{{name: h, port: 1, zz_unknown: 1}}]}}]\n"),
        ),
        ("namespaces", format!("{base}namespaces: [{{name: n, zz_unknown: 1}}]\n")),
        ("etcd", format!("{base}etcd: {{zz_unknown: 1}}\n")),
        (
            "services",
            format!("{base}services: [{{name: s, cluster_ip: 10.3.0.9, ports: [], zz_unknown: 1}}]\n"),
        ),
        (
            "service ports",
            format!("{base}services: [{{name: s, cluster_ip: 10.3.0.9, ports: [{{port: 1, zz_unknown: 1}}]}}]\n"),
        ),
    ];
    let mut missing = Vec::new();
    let mut total = 0;
    for (place, yaml) in &probes {
        for field in accepted_fields(yaml) {
            total += 1;
            if !doc.contains(&format!("`{field}`")) {
                missing.push(format!("{place}: {field}"));
            }
        }
    }
    assert!(
        total >= 30,
        "only {total} fields found: the probe is broken"
    );
    assert!(missing.is_empty(), "{DOC} does not name: {missing:?}");
}

#[test]
fn tap_help_points_to_the_document() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["tap", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains(DOC), "{help}");
    assert!(!help.contains("SCENARIO.md"), "{help}");
}

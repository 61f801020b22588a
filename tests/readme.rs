//! Every README example runs as written and prints what the README says it prints.
//!
//! README.md's ```sh blocks hold commands; a ```text block after a command's block (before
//! the next ```sh block) holds lines its output must contain, in order. Commands that
//! need root (`sudo ...`) are not run; build and development commands (`cargo install`,
//! `cargo test`, ...) are not run here either — CI runs the suite and the benchmarks
//! build — but each must be one this test knows, so a new kind of command is a decision.

use std::path::Path;
use std::process::Command;

/// A README command and the output lines that follow it.
struct Example {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// Commands that build or develop podnet rather than use it.
const BUILD_COMMANDS: &[&str] = &[
    "cargo run ",
    "cargo install ",
    "cargo test ",
    "cargo bench ",
    "cargo fuzz ",
    "cd ",
    "mkdir ",
];

fn examples(readme: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut block: Option<&str> = None;
    for (n, raw) in readme.lines().enumerate() {
        let line = raw.trim_end();
        if let Some(kind) = block {
            if line == "```" {
                block = None;
                continue;
            }
            match kind {
                "sh" => {
                    let command = line.split(" # ").next().unwrap_or("").trim();
                    let command = command.trim_start_matches('#').trim();
                    if !command.is_empty() && !line.trim_start().starts_with('#') {
                        out.push(Example {
                            line: n + 1,
                            command: command.to_string(),
                            expected: Vec::new(),
                        });
                    }
                }
                "text" => {
                    if let Some(last) = out.last_mut() {
                        if !line.trim().is_empty() {
                            last.expected.push(line.trim().to_string());
                        }
                    }
                }
                _ => {}
            }
        } else if let Some(kind) = line.strip_prefix("```") {
            block = Some(match kind {
                "sh" => "sh",
                "text" => "text",
                _ => "other",
            });
        }
    }
    out
}

/// The arguments of a `podnet ...` or `cargo run --release -- ...` command.
fn podnet_args(command: &str) -> Option<Vec<&str>> {
    let rest = if command == "podnet" {
        ""
    } else if let Some(rest) = command.strip_prefix("podnet ") {
        rest
    } else {
        command.strip_prefix("cargo run --release --")?
    };
    Some(rest.split_whitespace().collect())
}

#[test]
fn every_readme_example_runs_and_prints_what_it_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let examples = examples(&readme);
    let mut ran = 0;
    for example in &examples {
        let at = format!("README.md:{}: {}", example.line, example.command);
        if example.command.starts_with("sudo ") {
            assert!(
                example.expected.is_empty(),
                "{at}: output of a command not run"
            );
            continue;
        }
        let Some(args) = podnet_args(&example.command) else {
            assert!(
                BUILD_COMMANDS
                    .iter()
                    .any(|p| example.command.starts_with(p)),
                "{at}: neither podnet, root-only nor a known build command"
            );
            assert!(
                example.expected.is_empty(),
                "{at}: output of a command not run"
            );
            continue;
        };
        let out = Command::new(env!("CARGO_BIN_EXE_podnet"))
            .args(&args)
            .current_dir(root)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{at}: exit {:?}\n{text}", out.status);
        let mut from = 0;
        for want in &example.expected {
            match text[from..].find(want.as_str()) {
                Some(i) => from += i + want.len(),
                None => panic!("{at}: {want:?} not printed (in order) in\n{text}"),
            }
        }
        ran += 1;
    }
    assert!(ran >= 5, "only {ran} README examples ran");
}

#[test]
fn readme_points_into_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        !readme.contains("SCENARIO.md"),
        "README points outside the repository"
    );
    for doc in ["docs/scenario.md", "docs/cli.md", "docs/report.md"] {
        assert!(
            readme.contains(&format!("]({doc})")),
            "README does not link {doc}"
        );
        assert!(root.join(doc).is_file(), "{doc} is missing");
    }
    assert!(readme.contains("cargo install --path ."));
}

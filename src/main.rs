//! The `podnet` command line: thin wiring of the crates, no logic of its own.

use clap::Parser;

/// A userspace virtual switch and deterministic network simulator for the Kubernetes
/// network model.
#[derive(Parser)]
#[command(name = "podnet", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!(
        "podnet {}: the switch core is built; the simulator comes next.",
        env!("CARGO_PKG_VERSION")
    );
}

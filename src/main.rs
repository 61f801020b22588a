//! The `podnet` command line: thin wiring of the crates, no logic of its own.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use podnet_sim::run::{self, RunOptions};
use podnet_sim::scenario::{self, units};

/// A userspace virtual switch and deterministic network simulator for the Kubernetes
/// network model. With no command, runs the built-in quickstart scenario.
#[derive(Parser)]
#[command(name = "podnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario in the simulator and print its report.
    Sim(SimArgs),
}

#[derive(Args, Default)]
struct SimArgs {
    /// The scenario file; the built-in quickstart when left out.
    scenario: Option<PathBuf>,
    /// Overrides the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Prints the JSON report instead of the readable one.
    #[arg(long)]
    json: bool,
    /// Writes DIR/<node>.pcap (underlay) and DIR/<pod>.pcap files.
    #[arg(long, value_name = "DIR")]
    pcap: Option<PathBuf>,
    /// Stops at this simulated time (e.g. 2s) instead of the scenario's duration.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

/// Exit statuses of SCENARIO.md.
const INVALID: u8 = 2;
const RUN_FAILED: u8 = 3;

fn sim(args: SimArgs) -> ExitCode {
    let loaded = match &args.scenario {
        Some(path) => scenario::load(path),
        None => scenario::parse("quickstart.yaml", run::QUICKSTART),
    };
    let sc = match loaded {
        Ok(sc) => sc,
        Err(e) => {
            eprintln!("podnet: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let until_ns = match args.until.as_deref().map(units::parse_duration) {
        None => None,
        Some(Ok(ns)) => Some(ns),
        Some(Err(e)) => {
            eprintln!("podnet: --until: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let opts = RunOptions {
        seed: args.seed,
        until_ns,
        pcap_dir: args.pcap,
    };
    let report = match run::run(sc, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("podnet: {e}");
            return ExitCode::from(RUN_FAILED);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("podnet: {e}");
                return ExitCode::from(RUN_FAILED);
            }
        }
    } else {
        print!("{}", podnet_sim::render::render(&report));
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sim(args)) => sim(args),
        None => sim(SimArgs::default()),
    }
}

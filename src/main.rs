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
    /// Run one node on this host: TAP devices for pods, a UDP socket for the underlay.
    Tap(TapArgs),
    /// Ask a running `podnet tap` node through its control socket.
    Ctl(CtlArgs),
    /// Watch and steer a scenario live in the terminal (`?` lists the keys).
    Tui(TuiArgs),
}

#[derive(Args)]
struct TuiArgs {
    /// The scenario file; the built-in quickstart when left out.
    scenario: Option<PathBuf>,
    /// Where `w` writes the session's faults as a `faults:` snippet.
    #[arg(long, value_name = "FILE", default_value = "podnet-tui-faults.yaml")]
    faults_out: PathBuf,
}

#[derive(Args)]
struct TapArgs {
    /// The node file (SCENARIO.md, "TAP mode node file").
    #[arg(long, value_name = "NODE.yaml")]
    config: PathBuf,
}

#[derive(Args)]
struct CtlArgs {
    /// The node's control socket (the node file's `control`).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    #[command(subcommand)]
    request: CtlRequest,
}

#[derive(Subcommand)]
enum CtlRequest {
    /// Counters of the node and of each port, as JSON.
    Stats,
    /// The services and their endpoints.
    Services,
    /// Replaces a service's endpoints (none: the service rejects).
    SetEndpoints {
        service: String,
        ips: Vec<std::net::Ipv4Addr>,
    },
    /// The learned MAC table.
    Macs,
    /// The resolved neighbours (pod IP to MAC).
    Neighbours,
    /// The tracked service flows.
    Conntrack,
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

fn tap(args: TapArgs) -> ExitCode {
    match podnet_switch::tap::run(&args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podnet: {e}");
            ExitCode::from(if e.invalid { INVALID } else { RUN_FAILED })
        }
    }
}

fn ctl(args: CtlArgs) -> ExitCode {
    use podnet_switch::tap::ctl::{request, CtlError};
    let words: Vec<String> = match args.request {
        CtlRequest::Stats => vec!["stats".into()],
        CtlRequest::Services => vec!["services".into()],
        CtlRequest::SetEndpoints { service, ips } => ["set-endpoints".to_string(), service]
            .into_iter()
            .chain(ips.iter().map(|ip| ip.to_string()))
            .collect(),
        CtlRequest::Macs => vec!["macs".into()],
        CtlRequest::Neighbours => vec!["neighbours".into()],
        CtlRequest::Conntrack => vec!["conntrack".into()],
    };
    match request(&args.socket, &words) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e @ CtlError::Refused(_)) => {
            eprintln!("podnet: ctl: {e}");
            ExitCode::from(INVALID)
        }
        Err(e) => {
            eprintln!("podnet: ctl: {e}");
            ExitCode::from(RUN_FAILED)
        }
    }
}

fn tui(args: TuiArgs) -> ExitCode {
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
    match podnet_tui::term::run(sc, args.faults_out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podnet: tui: {e}");
            ExitCode::from(RUN_FAILED)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sim(args)) => sim(args),
        Some(Command::Tap(args)) => tap(args),
        Some(Command::Ctl(args)) => ctl(args),
        Some(Command::Tui(args)) => tui(args),
        None => sim(SimArgs::default()),
    }
}

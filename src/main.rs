//! The `podnet` command line: thin wiring of the crates, no logic of its own.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use podnet_sim::pcap;
use podnet_sim::render::Detail;
use podnet_sim::run::{self, RunOptions};
use podnet_sim::scenario::{self, units};

/// The version and the git commit the binary was built from (build.rs).
/// The switch's large tables on huge pages ([`podnet_tap::hugepages`]).
#[global_allocator]
static ALLOC: podnet_tap::hugepages::HugePages = podnet_tap::hugepages::HugePages;

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PODNET_GIT_COMMIT"),
    ")"
);

/// A userspace virtual switch and deterministic network simulator for the Kubernetes
/// network model. With no command, runs the built-in quickstart scenario.
// clap's own `help` subcommand refuses `podnet help --help`; ours is a subcommand like the
// others, so `help`, `help SUB...` and `help --help` all work.
#[derive(Parser)]
#[command(name = "podnet", version = VERSION, about, disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario in the simulator and print its report.
    Sim(SimArgs),
    /// Follow one probe from SRC to DST and back, hop by hop, with the object behind
    /// every decision. Exit 0 delivered, 1 dropped, 2 invalid input.
    Trace(TraceArgs),
    /// Audit a scenario's network plan without running it: addresses, MTU, and the
    /// required ports the firewall blocks. Exit 0 no errors, 1 errors, 2 invalid file.
    Check(CheckArgs),
    /// Print the inbound ports each node role needs, as the guide lists them.
    Ports(PortsArgs),
    /// Run one node on this host: TAP devices for pods, a UDP socket for the underlay.
    Tap(TapArgs),
    /// Ask a running `podnet tap` node through its control socket.
    Ctl(CtlArgs),
    /// Print the help of podnet or of a subcommand (`podnet help ctl set-endpoints`).
    Help {
        /// The subcommand, and its subcommand, whose help to print.
        #[arg(value_name = "COMMAND")]
        path: Vec<String>,
    },
    /// Watch and steer a scenario live in the terminal (`?` lists the keys).
    Tui(TuiArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// Prints `{"findings": [...]}` instead of the readable list.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PortsArgs {
    /// flannel's backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Vxlan)]
    backend: BackendArg,
    /// Calico's BGP runs between nodes (TCP 179).
    #[arg(long)]
    bgp: bool,
    /// flannel keeps its state in etcd (workers reach etcd too).
    #[arg(long)]
    etcd: bool,
    /// Prints the table as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    Vxlan,
    Udp,
    HostGw,
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
    /// The node file: every field, its default and a complete example in docs/node-file.md.
    #[arg(long, value_name = "NODE.yaml")]
    config: PathBuf,
    /// Cluster mode: take the subnet lease and find the peers in etcd at these endpoints
    /// (comma-separated URLs), in flannel's layout; overrides the node file's `etcd:`.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    etcd: Option<Vec<String>>,
}

#[derive(Args)]
#[command(disable_help_subcommand = true)]
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
    /// Replaces a service's endpoints (none: the service rejects). Each must be a pod
    /// address inside the cluster's pod CIDR, unless --external is given.
    SetEndpoints {
        service: String,
        ips: Vec<std::net::Ipv4Addr>,
        /// Accept endpoints outside the pod CIDR (hosts beyond the cluster).
        #[arg(long)]
        external: bool,
    },
    /// The learned MAC table.
    Macs,
    /// The resolved neighbours (pod IP to MAC).
    Neighbours,
    /// The tracked flows: services', the node's own, and (with policies) allowed pod flows.
    Conntrack,
    /// The peers: name, subnet, underlay IP, VTEP MAC, where each came from (node file or
    /// etcd) and when its etcd lease ends; a table, or JSON with --json.
    Peers {
        #[arg(long)]
        json: bool,
    },
    /// The NetworkPolicies the node enforces, with how many new flows each allowed and
    /// denied and how many of the node's pods it selects; a table, or JSON with --json.
    Policies {
        #[arg(long)]
        json: bool,
    },
    /// Runs a probe from one of the node's pods through its switch as a dry run (real
    /// tables, nothing changed, nothing sent) and prints each stage's decision up to
    /// where the packet would leave the node. Exit 0 delivered or forwarded, 1 dropped,
    /// 2 invalid input (docs/trace.md).
    Trace {
        /// The pod of this node that sends, by name.
        #[arg(long, value_name = "POD")]
        from: String,
        /// The destination: IP:PORT for tcp and udp, IP for icmp.
        #[arg(long, value_name = "IP[:PORT]")]
        to: String,
        /// A TCP SYN, a UDP datagram or an ICMP echo request; default tcp when --to has a
        /// port, else icmp.
        #[arg(long, value_enum)]
        proto: Option<ProtoArg>,
        /// The probe's source port (tcp, udp): the same as an open connection's shows
        /// that connection's tracked path.
        #[arg(long, value_name = "PORT", default_value_t = podnet_tap::trace::DEFAULT_SPORT)]
        sport: u16,
        /// Prints the trace as JSON, in `podnet trace --json`'s shape.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct TraceArgs {
    /// The scenario file; the built-in quickstart when left out.
    scenario: Option<PathBuf>,
    /// Who sends: a pod, an external, or node:NAME (as a traffic entry's `from`).
    #[arg(long, value_name = "SRC")]
    from: String,
    /// Where to: a pod, svc:NAME:PORT, node:NAME[:PORT], lb:NAME:PORT, IP[:PORT].
    #[arg(long, value_name = "DST")]
    to: String,
    /// The probe: a TCP SYN, a UDP datagram or an ICMP echo request; default tcp when
    /// DST has a port, else icmp.
    #[arg(long, value_enum)]
    proto: Option<ProtoArg>,
    /// Runs the scenario to this simulated time first (e.g. 3s); default: until just
    /// before its first traffic starts.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Payload bytes of a UDP or ICMP probe.
    #[arg(long, default_value_t = 64)]
    bytes: u64,
    /// Overrides the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Prints the trace as JSON (docs/trace.md).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
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
    /// Writes DIR/<node>.pcap (underlay) and DIR/<pod>.pcap files, and DIR/README with
    /// the tshark and wireshark commands that decode them.
    #[arg(long, value_name = "DIR")]
    pcap: Option<PathBuf>,
    /// Stops at this simulated time (e.g. 2s) instead of the scenario's duration;
    /// expectations are judged over the requests finished by then.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Lists every node, pod and service in the cluster section (else summarised past
    /// 50 lines).
    #[arg(long)]
    full: bool,
    /// Prints a generated scale scenario instead of running one: SHAPE is
    /// nodes=N[,pods=P][,services=S] (default 30 pods a node, a service per 150 pods up to
    /// 1000).
    #[arg(long, value_name = "SHAPE", conflicts_with = "scenario")]
    generate: Option<String>,
    /// Prints the wall-clock time of building and running the world and the packet-hops
    /// per second on stderr (the report itself stays deterministic).
    #[arg(long)]
    timing: bool,
    /// After the report, prints the trace of the first failed request of each traffic
    /// that has failures (as `podnet trace` at the time it was sent).
    #[arg(long)]
    trace_failures: bool,
}

/// Exit statuses (docs/cli.md).
const INVALID: u8 = 2;
const RUN_FAILED: u8 = 3;

/// The scenario file, or the built-in quickstart when none is given; an invalid one is
/// reported and gives the exit status.
fn scenario_or_quickstart(path: Option<&std::path::Path>) -> Result<scenario::Scenario, ExitCode> {
    match path {
        Some(path) => scenario::load(path),
        None => scenario::parse("quickstart.yaml", run::QUICKSTART),
    }
    .map_err(|e| {
        eprintln!("podnet: {e}");
        ExitCode::from(INVALID)
    })
}

fn sim(args: SimArgs) -> ExitCode {
    if let Some(shape) = &args.generate {
        return match podnet_sim::generate::Shape::parse(shape) {
            Ok(shape) => {
                let yaml = podnet_sim::generate::scenario_yaml(&shape);
                let _ = std::io::stdout().lock().write_all(yaml.as_bytes());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podnet: --generate: {e}");
                ExitCode::from(INVALID)
            }
        };
    }
    let sc = match scenario_or_quickstart(args.scenario.as_deref()) {
        Ok(sc) => sc,
        Err(code) => return code,
    };
    let until_ns = match args.until.as_deref().map(units::parse_duration) {
        None => None,
        Some(Ok(ns)) => Some(ns),
        Some(Err(e)) => {
            eprintln!("podnet: --until: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let guide = args
        .pcap
        .as_deref()
        .map(|dir| pcap::guide(&sc, dir, &pcap::capture_names(&sc)));
    let traces = if args.trace_failures {
        match podnet_sim::trace::trace_failures(&sc, args.seed, until_ns) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("podnet: --trace-failures: {e}");
                return ExitCode::from(RUN_FAILED);
            }
        }
    } else {
        Vec::new()
    };
    let opts = RunOptions {
        seed: args.seed,
        until_ns,
        pcap_dir: args.pcap,
    };
    let started = std::time::Instant::now();
    let report = match run::run(sc, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("podnet: {e}");
            return ExitCode::from(RUN_FAILED);
        }
    };
    if args.timing {
        let wall = started.elapsed().as_secs_f64();
        eprintln!(
            "podnet: {} events, {} packet-hops in {wall:.2} s wall: {:.2} M packet-hops/s",
            report.events,
            report.packet_hops,
            report.packet_hops as f64 / wall.max(1e-9) / 1e6
        );
    }
    let text = if args.json {
        let json = if args.trace_failures {
            serde_json::to_string_pretty(&podnet_sim::trace::WithTraces::new(&report, &traces))
        } else {
            serde_json::to_string_pretty(&report)
        };
        match json {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("podnet: {e}");
                return ExitCode::from(RUN_FAILED);
            }
        }
    } else {
        let detail = if args.full {
            Detail::Full
        } else {
            Detail::Summary
        };
        let mut text = podnet_sim::render::render(&report, detail);
        for (name, trace) in &traces {
            text.push_str(&format!("\ntrace of the first failed request of {name}:\n"));
            text.push_str(&trace.render());
        }
        text
    };
    // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    // On stderr, so that `--json --pcap DIR` still prints nothing but JSON; the same
    // text is in DIR/README.
    if let Some(guide) = guide {
        eprint!("{guide}");
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn trace(args: TraceArgs) -> ExitCode {
    use podnet_sim::trace::{self, Proto, TraceError, TraceOptions};
    let sc = match scenario_or_quickstart(args.scenario.as_deref()) {
        Ok(sc) => sc,
        Err(code) => return code,
    };
    let at_ns = match args.at.as_deref().map(units::parse_duration) {
        None => None,
        Some(Ok(ns)) => Some(ns),
        Some(Err(e)) => {
            eprintln!("podnet: --at: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let mut opts = TraceOptions::new(&args.from, &args.to);
    opts.proto = args.proto.map(|p| match p {
        ProtoArg::Tcp => Proto::Tcp,
        ProtoArg::Udp => Proto::Udp,
        ProtoArg::Icmp => Proto::Icmp,
    });
    opts.at_ns = at_ns;
    opts.bytes = args.bytes;
    opts.seed = args.seed;
    let result = match trace::trace(sc, &opts) {
        Ok(t) => t,
        Err(e @ TraceError::Invalid(_)) => {
            eprintln!("podnet: trace: {e}");
            return ExitCode::from(INVALID);
        }
        Err(e) => {
            eprintln!("podnet: trace: {e}");
            return ExitCode::from(RUN_FAILED);
        }
    };
    let text = if args.json {
        serde_json::to_string_pretty(&result).unwrap_or_default() + "\n"
    } else {
        result.render()
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if result.delivered() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn check(args: CheckArgs) -> ExitCode {
    use podnet_sim::check::{self, Severity};
    let findings = match check::audit_file(&args.scenario) {
        Ok(findings) => findings,
        Err(e) => {
            eprintln!("podnet: {e}");
            return ExitCode::from(INVALID);
        }
    };
    if args.json {
        println!("{}", check::render::findings_json(&findings));
    } else {
        let name = args.scenario.display().to_string();
        print!("{}", check::render::findings(&name, &findings));
    }
    if findings.iter().any(|f| f.severity == Severity::Error) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn ports(args: PortsArgs) -> ExitCode {
    use podnet_sim::check::{render, table::Plan};
    use podnet_sim::scenario::Backend;
    let backend = match args.backend {
        BackendArg::Vxlan => Backend::Vxlan,
        BackendArg::Udp => Backend::Udp,
        BackendArg::HostGw => Backend::HostGw,
    };
    let plan = Plan::new(backend, args.bgp, args.etcd);
    if args.json {
        println!("{}", render::ports_json(&plan));
    } else {
        print!("{}", render::ports(&plan));
    }
    ExitCode::SUCCESS
}

fn tap(args: TapArgs) -> ExitCode {
    match podnet_tap::run(&args.config, args.etcd.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podnet: {e}");
            ExitCode::from(if e.invalid { INVALID } else { RUN_FAILED })
        }
    }
}

fn ctl(args: CtlArgs) -> ExitCode {
    use podnet_tap::ctl::{request, CtlError};
    let table = matches!(args.request, CtlRequest::Peers { json: false });
    let policies_table = matches!(args.request, CtlRequest::Policies { json: false });
    let trace = match &args.request {
        CtlRequest::Trace { json, .. } => Some(*json),
        _ => None,
    };
    let words: Vec<String> = match args.request {
        CtlRequest::Stats => vec!["stats".into()],
        CtlRequest::Services => vec!["services".into()],
        CtlRequest::SetEndpoints {
            service,
            ips,
            external,
        } => ["set-endpoints".to_string()]
            .into_iter()
            .chain(external.then(|| "--external".to_string()))
            .chain([service])
            .chain(ips.iter().map(|ip| ip.to_string()))
            .collect(),
        CtlRequest::Macs => vec!["macs".into()],
        CtlRequest::Neighbours => vec!["neighbours".into()],
        CtlRequest::Conntrack => vec!["conntrack".into()],
        CtlRequest::Peers { .. } => vec!["peers".into()],
        CtlRequest::Policies { .. } => vec!["policies".into()],
        CtlRequest::Trace {
            from,
            to,
            proto,
            sport,
            ..
        } => {
            let mut w = vec!["trace".into(), "--from".into(), from, "--to".into(), to];
            if let Some(p) = proto {
                let p = match p {
                    ProtoArg::Tcp => "tcp",
                    ProtoArg::Udp => "udp",
                    ProtoArg::Icmp => "icmp",
                };
                w.extend(["--proto".into(), p.into()]);
            }
            w.extend(["--sport".into(), sport.to_string()]);
            // One line of words: a name with spaces would split.
            if w.iter()
                .any(|word| word.is_empty() || word.contains(char::is_whitespace))
            {
                eprintln!("podnet: ctl: trace: --from and --to take no spaces");
                return ExitCode::from(INVALID);
            }
            w
        }
    };
    match request(&args.socket, &words) {
        Ok(v) if table => {
            print!("{}", peers_table(&v));
            ExitCode::SUCCESS
        }
        Ok(v) if policies_table => {
            print!("{}", policies_text(&v));
            ExitCode::SUCCESS
        }
        Ok(v) if trace.is_some() => {
            let text = if trace == Some(true) {
                serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
            } else {
                trace_text(&v)
            };
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            if v["verdict"] == "dropped" {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
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

/// `ctl peers` as a table, one line a peer.
fn peers_table(peers: &serde_json::Value) -> String {
    let mut out = format!(
        "{:<16} {:<18} {:<15} {:<17} {:<9} {}\n",
        "NAME", "SUBNET", "UNDERLAY", "VTEP MAC", "SOURCE", "LEASE ENDS IN"
    );
    for p in peers.as_array().into_iter().flatten() {
        let s = |k: &str| p[k].as_str().unwrap_or("-").to_string();
        let ends = match p["lease_expires_in_s"].as_u64() {
            Some(t) => format!("{}h{:02}m{:02}s", t / 3600, t / 60 % 60, t % 60),
            None if p["source"] == "etcd" => "never (reservation)".to_string(),
            None => "-".to_string(),
        };
        out += &format!(
            "{:<16} {:<18} {:<15} {:<17} {:<9} {ends}\n",
            s("name"),
            s("subnet"),
            s("underlay_ip"),
            s("vtep_mac"),
            s("source")
        );
    }
    out
}

/// `ctl policies` as a table, one line a policy.
fn policies_text(v: &serde_json::Value) -> String {
    if v["enforcing"] != true {
        return "no NetworkPolicy enforcement (the node file has no policies:)\n".to_string();
    }
    let mut out = format!(
        "{:<40} {:>8} {:>10} {:>10}\n",
        "POLICY", "SELECTED", "ALLOWED", "DENIED"
    );
    for p in v["policies"].as_array().into_iter().flatten() {
        out += &format!(
            "{:<40} {:>8} {:>10} {:>10}\n",
            p["name"].as_str().unwrap_or("?"),
            p["selected"].as_u64().unwrap_or(0),
            p["allowed"].as_u64().unwrap_or(0),
            p["denied"].as_u64().unwrap_or(0)
        );
    }
    out
}

/// `ctl trace` as `podnet trace` prints a trace: one line per hop, then the verdict.
fn trace_text(v: &serde_json::Value) -> String {
    use podnet_sim::trace::{Trace, TraceHop};
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let trace = Trace {
        verdict: if v["verdict"] == "dropped" {
            "dropped"
        } else {
            "delivered"
        },
        reason: v["reason"].as_str().map(str::to_string),
        at: v["at"].as_str().map(str::to_string),
        summary: s(&v["summary"]),
        hops: v["hops"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| TraceHop {
                t_ns: h["t_ns"].as_u64().unwrap_or(0),
                place: s(&h["place"]),
                stage: s(&h["stage"]),
                action: s(&h["action"]),
                detail: s(&h["detail"]),
                object: s(&h["object"]),
            })
            .collect(),
        reply: None,
    };
    trace.render()
}

/// `podnet help [SUB...]`: exactly what `podnet SUB... --help` prints.
fn help(path: &[String]) -> ExitCode {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut at = &mut command;
    for word in path {
        match at.find_subcommand_mut(word) {
            Some(sub) => at = sub,
            None => {
                eprintln!("podnet: help: no command {word:?}; `podnet help` lists them");
                return ExitCode::from(INVALID);
            }
        }
    }
    let argv = std::iter::once("podnet")
        .chain(path.iter().map(String::as_str))
        .chain(["--help"]);
    match Cli::command().try_get_matches_from(argv) {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = e.print();
            ExitCode::from(INVALID)
        }
        Ok(_) => ExitCode::SUCCESS,
    }
}

fn tui(args: TuiArgs) -> ExitCode {
    let sc = match scenario_or_quickstart(args.scenario.as_deref()) {
        Ok(sc) => sc,
        Err(code) => return code,
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
        Some(Command::Help { path }) => help(&path),
        Some(Command::Sim(args)) => sim(args),
        Some(Command::Trace(args)) => trace(args),
        Some(Command::Check(args)) => check(args),
        Some(Command::Ports(args)) => ports(args),
        Some(Command::Tap(args)) => tap(args),
        Some(Command::Ctl(args)) => ctl(args),
        Some(Command::Tui(args)) => tui(args),
        None => sim(SimArgs::default()),
    }
}

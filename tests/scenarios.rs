//! Every scenario in scenarios/ runs with its expectations holding; runs are
//! deterministic; `podnet sim` keeps SCENARIO.md's exit statuses and error format; pcaps
//! hold what crossed the wire.

use std::path::{Path, PathBuf};
use std::process::Command;

use podnet_sim::run::{run, RunOptions};
use podnet_sim::scenario;

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn podnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podnet"))
}

#[test]
fn every_scenario_holds_its_expectations() {
    let files = scenario_files();
    assert!(files.len() >= 6, "scenarios/ has {} files", files.len());
    let mut failed = Vec::new();
    for path in &files {
        let sc = scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !sc.expect.is_empty(),
            "{} has no expectations",
            path.display()
        );
        let report = run(sc, &RunOptions::default()).expect("the run itself works");
        if !report.passed {
            failed.push(format!(
                "{}:\n{}",
                path.display(),
                podnet_sim::render::render(&report, podnet_sim::render::Detail::Full)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

fn trace_hash(path: &str, seed: Option<u64>) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let sc = scenario::load(&path).unwrap();
    let opts = RunOptions {
        seed,
        ..RunOptions::default()
    };
    run(sc, &opts).unwrap().trace_hash
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    for file in ["scenarios/quickstart.yaml", "scenarios/vxlan.yaml"] {
        let a = trace_hash(file, None);
        assert_eq!(a, trace_hash(file, None), "{file} twice");
        assert_ne!(a, trace_hash(file, Some(1234)), "{file} with another seed");
    }
}

/// The trace hash of every scenario with its own seed, as it was when this table was
/// written: a change to the simulator or the switch that changes any run shows here. (A
/// change meant to change runs updates the table and says why.)
const TRACE_HASHES: &[(&str, &str)] = &[
    ("clientip-affinity.yaml", "c78836bbe17ebe8d"),
    ("clusterip-spread.yaml", "92eb013e2687eb0b"),
    ("endpoint-churn.yaml", "e9c27d48a9276140"),
    ("firewall-blocks-overlay.yaml", "3aa72d5a2165dc15"),
    ("hairpin.yaml", "e8987de27502e20b"),
    ("host-gw.yaml", "22f9899916f7c410"),
    ("loadbalancer.yaml", "23e8168f3ba72c3f"),
    ("mtu.yaml", "02589d74360d2324"),
    ("no-endpoints.yaml", "456fa1cdbc3c4754"),
    ("node-crash.yaml", "3fbad810eb21abb4"),
    ("nodeport-cluster.yaml", "e5bb3264f8cd6628"),
    ("nodeport-local.yaml", "83dd225e338a45d7"),
    ("policy-added.yaml", "b6cb8e835f158abf"),
    ("policy-default-deny.yaml", "5c271e5d1c34a304"),
    ("policy-egress-dns.yaml", "08cac327fe50e28b"),
    ("policy-ipblock.yaml", "20324ea50255bf7f"),
    ("policy-isolated-endpoint.yaml", "81c27911098716bd"),
    ("quickstart.yaml", "b28426287743c43e"),
    ("udp.yaml", "26999037ec1866ca"),
    ("underlay-faults.yaml", "b661a2704deaf030"),
    ("vxlan.yaml", "82de8862fb4ff26d"),
];

#[test]
fn every_scenario_keeps_its_trace_hash() {
    let mut changed = Vec::new();
    for path in scenario_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(&(_, want)) = TRACE_HASHES.iter().find(|(f, _)| *f == name) else {
            changed.push(format!("{name}: not in TRACE_HASHES (add its hash)"));
            continue;
        };
        let got = trace_hash(&format!("scenarios/{name}"), None);
        if got != want {
            changed.push(format!("{name}: {got}, was {want}"));
        }
    }
    assert!(changed.is_empty(), "{}", changed.join("\n"));
}

#[test]
fn json_report_has_the_contract_fields() {
    let out = podnet().args(["sim", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for field in [
        "scenario",
        "seed",
        "passed",
        "sim_time_ns",
        "events",
        "packet_hops",
        "trace_hash",
        "traffic",
        "nodes",
        "expectations",
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert_eq!(v["scenario"], "quickstart");
    assert_eq!(v["seed"], 42);
    assert_eq!(v["trace_hash"].as_str().unwrap().len(), 16);
    // An event moves at most one packet over a link and through a switch (two hops);
    // most of the quickstart's move one.
    let (events, hops) = (
        v["events"].as_u64().unwrap(),
        v["packet_hops"].as_u64().unwrap(),
    );
    assert!(
        hops >= events && hops <= 2 * events,
        "{hops} hops in {events} events"
    );
    let t = &v["traffic"][0];
    for field in [
        "name",
        "kind",
        "sent",
        "delivered",
        "failed",
        "rtt_us",
        "by_endpoint",
        "source_seen",
        "failures",
    ] {
        assert!(t.get(field).is_some(), "traffic misses {field}");
    }
    let n = &v["nodes"][0];
    for field in [
        "rx_packets",
        "tx_packets",
        "encap",
        "decap",
        "dnat",
        "snat",
        "drops",
    ] {
        assert!(n["counters"].get(field).is_some(), "counters miss {field}");
    }
    let code = out.status.code().unwrap();
    assert_eq!(code, if v["passed"] == true { 0 } else { 1 });
}

#[test]
fn failed_expectation_exits_1() {
    let dir = tempdir("fail");
    let path = dir.join("f.yaml");
    std::fs::write(
        &path,
        "name: f\nduration: 1s\nnodes:\n  - name: n\npods:\n  - name: a\n  - name: b\n\
         traffic:\n  - {name: p, from: a, to: b, kind: ping}\n\
         expect:\n  - {traffic: p, delivered: 0%}\n",
    )
    .unwrap();
    let out = podnet().arg("sim").arg(&path).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}

/// Each invalid input of SCENARIO.md exits 2 with FILE:LINE:COL and what is wrong.
#[test]
fn invalid_scenarios_exit_2_naming_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        ("yaml", "name: x\npods: [\n", ":2:7:"),
        ("unknown field", "name: x\nnodez: []\n", ":2:1: unknown field"),
        ("bad cidr", "name: x\ncluster:\n  pod_cidr: 10.2.0.0/33\n", ":3:13:"),
        (
            "missing node",
            "name: x\nnodes:\n  - name: n\npods:\n  - name: p\n    node: m\n",
            ":6:11:",
        ),
        (
            "ip outside subnet",
            "name: x\nnodes:\n  - name: n\npods:\n  - name: p\n    node: n\n    ip: 10.9.9.9\n",
            ":7:9:",
        ),
        (
            "duplicate name",
            "name: x\nnodes:\n  - name: n\npods:\n  - name: p\n  - name: p\n",
            ":6:11:",
        ),
        (
            "missing traffic target",
            "name: x\nnodes:\n  - name: n\npods:\n  - name: p\ntraffic:\n  - {name: t, from: p, to: q}\n",
            ":7:",
        ),
    ];
    let dir = tempdir("invalid");
    for (what, text, want) in cases {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, text).unwrap();
        let out = podnet().arg("sim").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(&format!("bad.yaml{want}")), "{what}: {err}");
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podnet-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The quickstart's pcaps: node-a's file holds VXLAN to UDP 8472 with VNI 1, and the
/// inner IP packets of pod-a's pings to pod-b are the ones in pod-a's own file.
#[test]
fn pcaps_hold_vxlan_whose_inner_frames_match_the_pod_capture() {
    let dir = tempdir("pcap");
    let out = podnet().args(["sim", "--pcap"]).arg(&dir).output().unwrap();
    assert!(out.status.code().is_some());
    let read = |name: &str| -> Vec<Vec<u8>> {
        let f = std::fs::File::open(dir.join(format!("{name}.pcap"))).unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
        let mut frames = Vec::new();
        while let Some(p) = r.next_packet() {
            frames.push(p.unwrap().data.into_owned());
        }
        frames
    };
    let node = read("node-a");
    let pod = read("pod-a");
    let vxlan: Vec<&Vec<u8>> = node
        .iter()
        .filter(|f| f.len() > 50 && f[23] == 17 && u16::from_be_bytes([f[36], f[37]]) == 8472)
        .collect();
    assert!(!vxlan.is_empty(), "no VXLAN on node-a's underlay");
    for f in &vxlan {
        assert_eq!(f[42], 0x08, "VXLAN I flag");
        assert_eq!(&f[46..49], &[0, 0, 1], "VNI 1");
    }
    // pod-a's echo requests to pod-b (10.0.2.144), as they left the pod ...
    let pings: Vec<&[u8]> = pod
        .iter()
        .filter(|f| f.len() > 34 && f[23] == 1 && f[30..34] == [10, 0, 2, 144] && f[34] == 8)
        .map(|f| &f[14..])
        .collect();
    assert_eq!(pings.len(), 10);
    // ... are inside the VXLAN frames, byte for byte but for TTL and checksum.
    for ping in pings {
        let found = vxlan.iter().any(|f| {
            let inner = &f[64..];
            inner.len() == ping.len()
                && inner
                    .iter()
                    .zip(ping)
                    .enumerate()
                    .all(|(i, (a, b))| matches!(i, 8 | 10 | 11) || a == b)
        });
        assert!(found, "a ping of pod-a is not in node-a's VXLAN capture");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// tshark reads every pcap of a run without complaint and decodes the underlay's VXLAN
/// with VNI 1 (skipped where tshark is not installed; .ci/run installs it).
#[test]
fn tshark_reads_the_pcaps() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("skipped: tshark is not installed");
        return;
    }
    let dir = tempdir("tshark");
    let out = podnet().args(["sim", "--pcap"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    for f in &files {
        let out = Command::new("tshark").arg("-r").arg(f).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}", f.display());
        assert!(
            !err.contains("damaged") && !err.contains("corrupt"),
            "{}: {err}",
            f.display()
        );
        assert!(!out.stdout.is_empty(), "{} is empty", f.display());
    }
    let out = Command::new("tshark")
        .arg("-r")
        .arg(dir.join("node-a.pcap"))
        // Wireshark's registered VXLAN port is 4789; flannel's 8472 is decoded as VXLAN.
        .args([
            "-d",
            "udp.port==8472,vxlan",
            "-Y",
            "vxlan",
            "-T",
            "fields",
            "-e",
            "vxlan.vni",
        ])
        .output()
        .unwrap();
    let vnis = String::from_utf8_lossy(&out.stdout);
    assert!(vnis.lines().count() > 10, "{vnis}");
    assert!(vnis.lines().all(|l| l == "1"), "{vnis}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// tshark reads every pcap of every scenario in scenarios/, with the decode-as options
/// `--pcap` prints, and finds no malformed frame and no bad checksum: DNS on 53 and HTTP
/// on 80/8080 are well formed, the rest is neutral filler. Frames are dated from
/// 2000-01-01T00:00:00Z. (Skipped where tshark is not installed; .ci/run installs it.)
#[test]
fn tshark_finds_nothing_malformed_in_any_scenario() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("skipped: tshark is not installed");
        return;
    }
    let mut checked = 0;
    let mut problems = Vec::new();
    let mut decoded = String::new();
    for path in scenario_files() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = tempdir(&format!("tshark-all-{name}"));
        let out = podnet()
            .arg("sim")
            .arg(&path)
            .arg("--pcap")
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}");
        // The commands it printed are the ones in DIR/README; run them as printed, with
        // checksum validation and the expert summary added.
        let printed = String::from_utf8_lossy(&out.stderr).into_owned();
        let readme = std::fs::read_to_string(dir.join("README")).unwrap();
        assert_eq!(printed, readme, "{name}: printed guide = DIR/README");
        let commands: Vec<Vec<String>> = readme
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("tshark -r "))
            .map(|l| l.split_whitespace().skip(1).map(str::to_string).collect())
            .collect();
        assert!(
            !commands.is_empty(),
            "{name}: no tshark command in\n{readme}"
        );
        for args in commands {
            let out = Command::new("tshark")
                .args(&args)
                .args(["-o", "ip.check_checksum:TRUE"])
                .args(["-o", "tcp.check_checksum:TRUE"])
                .args(["-o", "udp.check_checksum:TRUE"])
                .args(["-q", "-z", "expert"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{name}: tshark {args:?}");
            for line in text.lines() {
                let lower = line.to_lowercase();
                if lower.contains("malformed") || lower.contains("checksum") {
                    problems.push(format!("{name} {}: {}", args[1], line.trim()));
                }
            }
            checked += 1;
        }
        if name == "host-gw" {
            let out = Command::new("tshark")
                .args(["-r"])
                .arg(dir.join("a-0.pcap"))
                .args(["-t", "ud", "-Y", "dns || http"])
                .output()
                .unwrap();
            decoded = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(checked >= 40, "only {checked} pcaps checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The DNS and HTTP traffic decodes as such, and is dated from the fixed epoch.
    assert!(decoded.contains("Standard query response"), "{decoded}");
    assert!(decoded.contains("POST / HTTP/1.1"), "{decoded}");
    assert!(decoded.contains("HTTP/1.1 200 OK"), "{decoded}");
    assert!(decoded.contains(" 2000-01-01 00:00:0"), "{decoded}");
}

/// Same scenario and seed: the same report and the same pcap bytes, file for file.
#[test]
fn same_seed_same_report_and_pcap_bytes() {
    let run_into = |tag: &str| -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
        let dir = tempdir(tag);
        let out = podnet()
            .args(["sim", "scenarios/endpoint-churn.yaml", "--json", "--pcap"])
            .arg(&dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        files.sort();
        let _ = std::fs::remove_dir_all(&dir);
        (out.stdout, files)
    };
    let (report_a, pcaps_a) = run_into("det-a");
    let (report_b, pcaps_b) = run_into("det-b");
    assert_eq!(report_a, report_b);
    assert_eq!(
        pcaps_a.len(),
        7,
        "two nodes and five pods (two added by faults)"
    );
    assert_eq!(pcaps_a, pcaps_b);
}

/// `--version` names the version and the commit; `help SUB` and `SUB --help` work for
/// every subcommand, `help --help` included.
#[test]
fn version_and_help_for_every_subcommand() {
    let out = podnet().arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with(&format!("podnet {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let top = podnet().arg("help").output().unwrap();
    assert!(top.status.success());
    let listing = String::from_utf8_lossy(&top.stdout).into_owned();
    // Every subcommand the top-level help lists.
    let subs: Vec<String> = listing
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(subs.iter().any(|s| s == "sim"), "{listing}");
    for sub in &subs {
        let via_help = podnet().args(["help", sub]).output().unwrap();
        let via_flag = podnet().args([sub.as_str(), "--help"]).output().unwrap();
        assert!(via_help.status.success(), "podnet help {sub}");
        assert!(via_flag.status.success(), "podnet {sub} --help");
        let usage = format!("Usage: podnet {sub}");
        assert!(String::from_utf8_lossy(&via_help.stdout).contains(&usage));
        assert_eq!(
            via_help.stdout, via_flag.stdout,
            "help {sub} = {sub} --help"
        );
    }
    let ctl = podnet()
        .args(["help", "ctl", "set-endpoints"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ctl.stdout).contains("set-endpoints"));
    let unknown = podnet().args(["help", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

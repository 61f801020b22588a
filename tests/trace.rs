//! `podnet trace`: the hop list of each verdict kind on small scenarios (through the CLI's
//! `--json`), its exit statuses, `sim --trace-failures`, and the rule that a trace's reason
//! is the report's for the same request over every scenario in scenarios/ with failures.

use std::path::{Path, PathBuf};
use std::process::Command;

use podnet_sim::report::Outcome;
use podnet_sim::scenario;
use podnet_sim::trace::{first_failures, options_for, trace};
use podnet_sim::world::{Options, World};
use serde_json::Value;

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// `podnet trace ARGS --json`: the exit status and the parsed trace.
fn trace_json(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .arg("trace")
        .args(args)
        .arg("--json")
        .output()
        .expect("podnet runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().expect("exit status"), json)
}

/// The (stage, action) of every hop of `hops`.
fn stages(hops: &Value) -> Vec<(String, String)> {
    hops.as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            (
                h["stage"].as_str().unwrap().to_string(),
                h["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn hop<'a>(hops: &'a Value, stage: &str, action: &str) -> &'a Value {
    hops.as_array()
        .unwrap()
        .iter()
        .find(|h| h["stage"] == stage && h["action"] == action)
        .unwrap_or_else(|| panic!("no {stage} {action} hop in {hops:#}"))
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(s, a)| (s.to_string(), a.to_string()))
        .collect()
}

#[test]
fn delivered_through_a_service_names_the_service_the_endpoint_the_route_and_the_tunnel() {
    let (code, t) = trace_json(&["--from", "client", "--to", "svc:web:80"]);
    assert_eq!(code, 0, "{t:#}");
    assert_eq!(t["verdict"], "delivered");
    assert_eq!(t["reason"], Value::Null);
    assert_eq!(t["at"], Value::Null);
    let hops = &t["hops"];
    // The quickstart's client sits on node-a; seed 42 sends its first flow to pod-b on
    // node-b, so the probe crosses the overlay.
    assert_eq!(
        stages(hops),
        pairs(&[
            ("gateway_arp", "reply"),
            ("send", "send"),
            ("services", "dnat"),
            ("route", "forward"),
            ("encap", "encap"),
            ("underlay", "transmit"),
            ("decap", "decap"),
            ("route", "forward"),
            ("gateway_arp", "resolve"),
            ("delivery", "deliver"),
        ])
    );
    let svc = hop(hops, "services", "dnat");
    assert_eq!(svc["object"], "service web port http");
    let detail = svc["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("10.3.0.50:80 -> 10.0.2.144:8080 (random, ")
            && detail.contains(" of 2 endpoints; conntrack new)"),
        "{detail}"
    );
    assert_eq!(
        hop(hops, "route", "forward")["object"],
        "10.0.2.0/24 via 10.0.2.0 onlink (vxlan peer node-b)"
    );
    let encap = hop(hops, "encap", "encap")["detail"].as_str().unwrap();
    assert!(
        encap.starts_with("vxlan encap VNI 1 172.16.0.2:")
            && encap.ends_with(" -> 172.16.0.3:8472"),
        "{encap}"
    );
    assert_eq!(hops[9]["place"], "pod-b");
    let reply = &t["reply"]["hops"];
    let last = reply.as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["place"].as_str(), last["stage"].as_str()),
        (Some("client"), Some("delivery"))
    );
    assert_eq!(hop(reply, "conntrack", "reverse nat")["place"], "node-a");
    let bridge = hop(reply, "bridge", "forward")["detail"].as_str().unwrap();
    assert!(
        bridge.starts_with("-> port client (") && bridge.contains(" learned "),
        "{bridge}"
    );
    assert_eq!(
        t["summary"],
        "delivered (reply seen by client from 10.3.0.50:80)"
    );
    // Hops are in time order.
    let times: Vec<u64> = hops
        .as_array()
        .unwrap()
        .iter()
        .chain(reply.as_array().unwrap())
        .map(|h| h["t_ns"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[test]
fn dropped_at_the_firewall_names_the_node_and_the_rule() {
    let path = scenario_path("firewall-blocks-overlay.yaml");
    let (code, t) = trace_json(&[path.to_str().unwrap(), "--from", "a-0", "--to", "b-0"]);
    assert_eq!(code, 1, "{t:#}");
    assert_eq!(t["verdict"], "dropped");
    assert_eq!(t["reason"], "firewall");
    assert_eq!(t["at"], "worker-1");
    let hops = &t["hops"];
    let stages = stages(hops);
    assert_eq!(
        &stages[1..],
        &pairs(&[
            ("send", "send"),
            ("route", "forward"),
            ("encap", "encap"),
            ("firewall", "deny"),
        ])[..]
    );
    let fw = hop(hops, "firewall", "deny");
    assert_eq!(fw["place"], "worker-1");
    assert_eq!(fw["object"], "rule 1 deny udp 8472 to all");
    assert_eq!(t["reply"], Value::Null);
}

#[test]
fn no_endpoints_is_refused_with_the_service_named_and_the_reset_followed_back() {
    let path = scenario_path("no-endpoints.yaml");
    let (code, t) = trace_json(&[
        path.to_str().unwrap(),
        "--from",
        "client",
        "--to",
        "svc:web:80",
    ]);
    assert_eq!(code, 1, "{t:#}");
    assert_eq!(t["reason"], "refused");
    assert_eq!(t["at"], "worker-0");
    let reject = hop(&t["hops"], "services", "reject");
    assert_eq!(reject["object"], "service web port http");
    assert!(
        reject["detail"].as_str().unwrap().contains(
            "no endpoints: service web port http has 0 ready endpoints; rejected with a TCP RST"
        ),
        "{reject:#}"
    );
    let drop = hop(&t["hops"], "drop", "drop");
    assert_eq!(drop["object"], "no_endpoints");
    // The RST goes back to the client, from the VIP.
    let reply = t["reply"]["hops"].as_array().unwrap();
    let last = reply.last().unwrap();
    assert_eq!(last["place"], "client");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .starts_with("tcp RST 10.3.0.254:80 -> "),
        "{last:#}"
    );
}

#[test]
fn node_down_names_the_crash_and_when() {
    let path = scenario_path("node-crash.yaml");
    let (code, t) = trace_json(&[
        path.to_str().unwrap(),
        "--from",
        "a-0",
        "--to",
        "b-0",
        "--at",
        "1500ms",
    ]);
    assert_eq!(code, 1, "{t:#}");
    assert_eq!(t["reason"], "node_down");
    assert_eq!(t["at"], "worker-1");
    let stages = stages(&t["hops"]);
    assert_eq!(
        stages.last().unwrap(),
        &("node".to_string(), "drop".to_string())
    );
    assert!(stages.contains(&("underlay".to_string(), "transmit".to_string())));
    assert_eq!(
        t["summary"],
        "dropped at worker-1: worker-1 is down since 1 s (fault 1)"
    );
}

#[test]
fn mtu_names_the_packet_and_the_limit() {
    let path = scenario_path("mtu.yaml");
    let args = [
        path.to_str().unwrap(),
        "--from",
        "node:worker-0",
        "--to",
        "b-0",
        "--proto",
        "udp",
    ];
    let (code, t) = trace_json(&[&args[..], &["--bytes", "1423"]].concat());
    assert_eq!(code, 1, "{t:#}");
    assert_eq!(t["reason"], "mtu");
    let mtu = hop(&t["hops"], "route", "mtu");
    assert_eq!(mtu["detail"], "1451-byte DF packet over MTU 1450");
    assert_eq!(
        t["summary"],
        "dropped at worker-0: mtu: 1451-byte DF packet over MTU 1450"
    );
    // One byte less fits, and is answered.
    let (code, t) = trace_json(&[&args[..], &["--bytes", "1422"]].concat());
    assert_eq!(
        (code, t["verdict"].as_str()),
        (0, Some("delivered")),
        "{t:#}"
    );
}

#[test]
fn no_route_names_the_address_that_is_in_no_subnet() {
    let (code, t) = trace_json(&["--from", "client", "--to", "10.0.9.0"]);
    assert_eq!(code, 1, "{t:#}");
    assert_eq!(t["reason"], "no_route");
    assert_eq!(t["at"], "node-a");
    let route = hop(&t["hops"], "route", "no route");
    assert_eq!(route["detail"], "10.0.9.0 is in no node's subnet");
    assert_eq!(route["object"], "routes of node-a (pod CIDR 10.0.0.0/16)");
}

#[test]
fn invalid_input_exits_2_with_the_reason() {
    for args in [
        vec!["--from", "nobody", "--to", "pod-b"],
        vec!["--from", "client", "--to", "svc:nothing:80"],
        vec!["--from", "client", "--to", "pod-b", "--at", "5x"],
        vec!["no-such-file.yaml", "--from", "a", "--to", "b"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_podnet"))
            .arg("trace")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("podnet: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn readable_trace_has_one_line_per_hop_and_the_verdict_last() {
    let out = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["trace", "--from", "pod-a", "--to", "pod-b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let (_, t) = trace_json(&["--from", "pod-a", "--to", "pod-b"]);
    let hops = t["hops"].as_array().unwrap().len() + t["reply"]["hops"].as_array().unwrap().len();
    let lines: Vec<&str> = text.lines().collect();
    // Each hop, the `reply:` header and the verdict.
    assert_eq!(lines.len(), hops + 2, "{text}");
    assert_eq!(
        lines.last().unwrap(),
        &"verdict: delivered (reply seen by pod-a from 10.0.2.144)"
    );
    assert!(text.contains("encap       vxlan encap VNI 1 "), "{text}");
}

/// Over every scenario with failures, the trace of the first failed request of each
/// traffic says what the report says of that request.
#[test]
fn trace_reason_is_the_reports_for_the_same_request_in_every_scenario() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut compared = 0;
    let mut wrong = Vec::new();
    for path in &files {
        let sc = scenario::load(path).unwrap();
        let mut world = World::new(sc.clone(), &Options::default()).unwrap();
        world.run();
        for (t, at) in first_failures(&world) {
            let record = world.records()[t]
                .iter()
                .find(|r| matches!(r.outcome, Outcome::Failed(_)))
                .unwrap();
            let Outcome::Failed(reason) = record.outcome else {
                unreachable!()
            };
            let got = trace(sc.clone(), &options_for(&sc, t, at)).unwrap();
            compared += 1;
            if got.reason.as_deref() != Some(reason.as_str()) {
                wrong.push(format!(
                    "{} {}: report {}, trace {:?} ({})",
                    path.display(),
                    sc.traffic[t].name,
                    reason.as_str(),
                    got.reason,
                    got.summary
                ));
            }
        }
    }
    assert!(compared >= 8, "only {compared} failing traffic entries");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn sim_trace_failures_traces_the_first_failed_request_of_each_failing_traffic() {
    let path = scenario_path("firewall-blocks-overlay.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["sim", path.to_str().unwrap(), "--trace-failures"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\ntrace of the first failed request of across:\n"),
        "{text}"
    );
    assert!(!text.contains("of same-node:"), "{text}");
    assert!(
        text.contains("verdict: dropped at worker-1: firewall: rule 1 deny udp 8472 to all"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args(["sim", path.to_str().unwrap(), "--trace-failures", "--json"])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let traces = json["failure_traces"].as_object().unwrap();
    assert_eq!(traces.keys().collect::<Vec<_>>(), ["across"]);
    assert_eq!(traces["across"]["reason"], "firewall");
    assert_eq!(traces["across"]["at"], "worker-1");
}

#!/usr/bin/env python3
"""Generates scenarios/netpol/*.yaml: Kubernetes' own NetworkPolicy e2e cases
(test/e2e/network/netpol/network_policy.go in kubernetes/kubernetes), rebuilt in podnet's
scenario format with the full expected reachability matrix as expectations.

Each case keeps upstream's shape: namespaces x, y, z; the pods the upstream case creates
(of a, b, c, labelled pod: <name>), each serving 80 and 81 over TCP and UDP with the named
ports serve-80-tcp, serve-81-udp, ...; the same policies; and the matrix written the way
upstream writes it (start from all-allowed, then ExpectPeer / ExpectAllIngress /
ExpectAllEgress / Expect). Loopback (a pod to itself) is left out, as upstream ignores
it. Cases with several steps (a policy added, updated or deleted, a pod relabelled)
become a timeline: the first matrix before the change at 1s, the second after it.

Run from the repository root: python3 scenarios/netpol/gen.py
"""

import os
import re

NS = ["x", "y", "z"]
PODS = ["a", "b", "c"]
NODES = 3
NSKEY = "kubernetes.io/metadata.name"


def ip(pod):
    ns, name = pod.split("/")
    # pod a on worker-0, b on worker-1, c on worker-2: same-node and cross-node pairs.
    node = PODS.index(name)
    return f"10.2.{node + 1}.{2 + NS.index(ns)}"


# ---- a reachability matrix, as upstream's reachability.go states it ----------------------


class Reach:
    def __init__(self, pods, default=True):
        self.pods = pods
        self.m = {(f, t): default for f in pods for t in pods if f != t}

    def _match(self, pod, ns=None, name=None):
        pns, pname = pod.split("/")
        return (ns is None or ns == pns) and (name is None or name == pname)

    def peer(self, frm, to, v):
        """ExpectPeer(&Peer{Namespace, Pod}, &Peer{...}, v); a dict with ns / pod."""
        for (f, t) in self.m:
            if self._match(f, frm.get("ns"), frm.get("pod")) and self._match(
                t, to.get("ns"), to.get("pod")
            ):
                self.m[(f, t)] = v
        return self

    def all_ingress(self, pod, v):
        for (f, t) in self.m:
            if t == pod:
                self.m[(f, t)] = v
        return self

    def all_egress(self, pod, v):
        for (f, t) in self.m:
            if f == pod:
                self.m[(f, t)] = v
        return self

    def expect(self, f, t, v):
        if (f, t) in self.m:
            self.m[(f, t)] = v
        return self


# ---- policies, as upstream's helpers build them ------------------------------------------


def sel(labels=None, exprs=None):
    s = {}
    if labels is not None:
        s["matchLabels"] = labels
    if exprs is not None:
        s["matchExpressions"] = exprs
    return s


def policy(name, ns, pod_selector, ingress=None, egress=None, types=None):
    """GenNetworkPolicyWithNameAndPodSelector + SetSpecIngressRules / SetSpecEgressRules:
    each Set...Rules() call adds its type, with or without rules."""
    spec = {"podSelector": pod_selector}
    t = []
    if ingress is not None:
        t.append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        t.append("Egress")
        spec["egress"] = egress
    spec["policyTypes"] = types or t
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def pod_label(name):
    return sel({"pod": name})


def ns_label(ns):
    return sel({NSKEY: ns})


def expr(key, op, values):
    return {"key": key, "operator": op, "values": values}


# ---- the cases ----------------------------------------------------------------------------

CASES = []


def case(name, title, pods, policies, steps, changes=None):
    """steps: [(probes, reach)] per phase; probes: [(proto, port, Reach)]."""
    CASES.append(dict(name=name, title=title, pods=pods, policies=policies, steps=steps, changes=changes or []))


def P(*names):
    return list(names)


X, Y, Z = ({"ns": n} for n in NS)
ALL = {}

pods = P("x/a", "x/b", "y/a", "y/b")
case("default-deny-ingress", "should support a 'default-deny-ingress' policy", pods,
     [policy("deny-ingress", "x", sel(), ingress=[])],
     [[("TCP", 80, Reach(pods).peer(ALL, X, False))]])

pods = P("x/a", "x/b", "y/a")
case("default-deny-all", "should support a 'default-deny-all' policy", pods,
     [policy("deny-all", "x", sel(), ingress=[], egress=[])],
     [[("TCP", 80, Reach(pods).peer(ALL, X, False).peer(X, ALL, False))]])

pods = P("x/a", "x/b", "x/c", "y/a")
case("podselector", "should enforce policy to allow traffic from pods within server namespace based on PodSelector", pods,
     [policy("x-a-allows-x-b", "x", pod_label("a"), ingress=[{"from": [{"podSelector": pod_label("b")}]}])],
     [[("TCP", 80, Reach(pods).all_ingress("x/a", False).expect("x/b", "x/a", True))]])

pods = P("x/a", "x/b", "y/a")
case("ingress-for-target", "should enforce policy to allow ingress traffic for a target", pods,
     [policy("deny-all", "x", sel(), ingress=[]),
      policy("allow-all-to-a", "x", pod_label("a"), ingress=[{"from": [{"podSelector": {}, "namespaceSelector": {}}]}])],
     [[("TCP", 80, Reach(pods).all_ingress("x/a", True).all_ingress("x/b", False))]])

pods = P("x/a", "x/b", "y/a", "z/a")
case("ingress-all-namespaces", "should enforce policy to allow ingress traffic from pods in all namespaces", pods,
     [policy("allow-from-another-ns", "x", pod_label("a"), ingress=[{"from": [{"namespaceSelector": {"matchLabels": {}}}]}])],
     [[("TCP", 80, Reach(pods))]])

case("namespaceselector", "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector", pods,
     [policy("allow-client-a-via-ns-selector", "x", pod_label("a"), ingress=[{"from": [{"namespaceSelector": ns_label("y")}]}])],
     [[("TCP", 80, Reach(pods).peer(X, {"ns": "x", "pod": "a"}, False).peer(Z, {"ns": "x", "pod": "a"}, False))]])

pods = P("x/a", "x/b", "y/a")
case("podselector-matchexpressions", "should enforce policy based on PodSelector with MatchExpressions", pods,
     [policy("x-a-allows-x-b", "x", pod_label("a"), ingress=[{"from": [{"podSelector": sel(exprs=[expr("pod", "In", ["b"])])}]}])],
     [[("TCP", 80, Reach(pods).all_ingress("x/a", False).expect("x/b", "x/a", True))]])

pods = P("x/a", "x/b", "y/a", "z/a")
case("namespaceselector-matchexpressions", "should enforce policy based on NamespaceSelector with MatchExpressions", pods,
     [policy("allow-ns-y-match-selector", "x", pod_label("a"), ingress=[{"from": [{"namespaceSelector": sel(exprs=[expr(NSKEY, "In", ["y"])])}]}])],
     [[("TCP", 80, Reach(pods).peer(X, {"ns": "x", "pod": "a"}, False).peer(Z, {"ns": "x", "pod": "a"}, False))]])

pods = P("x/a", "x/b", "x/c", "y/a")
case("podselector-or-namespaceselector", "should enforce policy based on PodSelector or NamespaceSelector", pods,
     [policy("allow-ns-y-match-selector", "x", pod_label("a"), ingress=[{"from": [
         {"namespaceSelector": sel(exprs=[expr(NSKEY, "NotIn", ["x"])])}, {"podSelector": pod_label("b")}]}])],
     [[("TCP", 80, Reach(pods).expect("x/c", "x/a", False))]])

pods = P("x/a", "x/b", "y/a", "y/b", "z/b")
case("podselector-and-namespaceselector", "should enforce policy based on PodSelector and NamespaceSelector", pods,
     [policy("allow-ns-y-podselector-and-nsselector", "x", pod_label("a"), ingress=[{"from": [
         {"namespaceSelector": sel(exprs=[expr(NSKEY, "NotIn", ["x"])]), "podSelector": pod_label("b")}]}])],
     [[("TCP", 80, Reach(pods).all_ingress("x/a", False).expect("y/b", "x/a", True).expect("z/b", "x/a", True))]])

pods = P("x/a", "x/b", "y/a", "y/b", "y/c")
case("multiple-selectors", "should enforce policy based on Multiple PodSelectors and NamespaceSelectors", pods,
     [policy("allow-ns-y-z-pod-b-c", "x", pod_label("a"), ingress=[{"from": [
         {"namespaceSelector": sel(exprs=[expr(NSKEY, "NotIn", ["x"])]),
          "podSelector": sel(exprs=[expr("pod", "In", ["b", "c"])])}]}])],
     [[("TCP", 80, Reach(pods).peer(X, {"ns": "x", "pod": "a"}, False).expect("y/a", "x/a", False))]])

pods = P("x/a", "x/b", "x/c")
case("any-podselectors", "should enforce policy based on any PodSelectors", pods,
     [policy("allow-ns-x-pod-b-c", "x", pod_label("a"), ingress=[{"from": [
         {"podSelector": pod_label("b")}, {"podSelector": pod_label("c")}]}])],
     [[("TCP", 80, Reach(pods).all_ingress("x/a", False).expect("x/b", "x/a", True).expect("x/c", "x/a", True))]])

pods = P("x/a", "x/b", "y/a", "y/b", "z/a")
case("pod-in-other-namespace", "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", pods,
     [policy("allow-ns-y-pod-a-via-namespace-pod-selector", "x", pod_label("a"), ingress=[{"from": [
         {"namespaceSelector": ns_label("y"), "podSelector": pod_label("a")}]}])],
     [[("TCP", 80, Reach(pods).all_ingress("x/a", False).expect("y/a", "x/a", True))]])

allow81 = policy("allow-client-a-via-ns-selector", "x", pod_label("a"), ingress=[{
    "from": [{"namespaceSelector": ns_label("y")}], "ports": [{"port": 81, "protocol": "TCP"}]}])


def only_y_to_xa(pods):
    return (Reach(pods).peer(X, {"ns": "x", "pod": "a"}, False)
            .peer(Y, {"ns": "x", "pod": "a"}, True).peer(Z, {"ns": "x", "pod": "a"}, False))


case("ports", "should enforce policy based on Ports", pods, [allow81],
     [[("TCP", 81, only_y_to_xa(pods))]])

allow80 = policy("allow-client-a-via-ns-selector-80", "x", pod_label("a"), ingress=[{
    "from": [{"namespaceSelector": ns_label("y")}], "ports": [{"port": 80, "protocol": "TCP"}]}])
case("stacked-policies", "should enforce multiple, stacked policies with overlapping podSelectors", pods, [allow81],
     [[("TCP", 81, only_y_to_xa(pods)), ("TCP", 80, Reach(pods).all_ingress("x/a", False))],
      [("TCP", 80, only_y_to_xa(pods))]],
     changes=[{"kind": "policy_add", "policy": allow80}])

pods = P("x/a", "x/b", "y/a")
case("allow-all", "should support allow-all policy", pods,
     [policy("allow-all", "x", sel({}), ingress=[{}])],
     [[("TCP", 80, Reach(pods)), ("TCP", 81, Reach(pods))]])

case("named-port-ingress", "should allow ingress access on one named port", pods,
     [policy("allow-all", "x", sel({}), ingress=[{"ports": [{"port": "serve-81-tcp"}]}])],
     [[("TCP", 81, Reach(pods)), ("TCP", 80, Reach(pods).peer(ALL, X, False))]])

pods = P("x/a", "x/b", "y/a", "z/a")
case("named-port-from-namespace", "should allow ingress access from namespace on one named port", pods,
     [policy("allow-client-a-via-ns-selector-80", "x", pod_label("a"), ingress=[{
         "from": [{"namespaceSelector": ns_label("y")}], "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}])],
     [[("TCP", 80, Reach(pods).peer(X, {"ns": "x", "pod": "a"}, False).peer(Z, {"ns": "x", "pod": "a"}, False)),
       ("TCP", 81, Reach(pods).all_ingress("x/a", False))]])

pods = P("x/a", "y/a")
case("named-port-egress", "should allow egress access on one named port", pods,
     [policy("allow-egress", "x", sel({}), egress=[{"ports": [{"port": "serve-80-tcp"}]}])],
     [[("TCP", 80, Reach(pods)), ("TCP", 81, Reach(pods).peer(X, ALL, False))]])

mutate = policy("allow-all-mutate-to-deny-all", "x", sel({}), ingress=[{}])
mutated = policy("allow-all-mutate-to-deny-all", "x", sel({}), ingress=[])
case("updated-policy", "should enforce updated policy", pods, [mutate],
     [[("TCP", 81, Reach(pods))], [("TCP", 81, Reach(pods).peer(ALL, X, False))]],
     changes=[{"kind": "policy_add", "policy": mutated}])

pods = P("x/a", "x/b")
case("updated-pod", "should allow ingress access from updated pod", pods,
     [policy("allow-client-a-via-pod-selector", "x", pod_label("a"), ingress=[{"from": [
         {"podSelector": sel({"pod": "b", "pod2": "updated"})}]}])],
     [[("TCP", 80, Reach(pods).all_ingress("x/a", False))],
      [("TCP", 80, Reach(pods).all_ingress("x/a", False).expect("x/b", "x/a", True))]],
     changes=[{"kind": "pod_label", "pod": "x/b", "labels": {"pod": "b", "pod2": "updated"}}])

pods = P("x/a", "x/b", "y/a", "z/a")
case("deny-other-namespaces", "should deny ingress from pods on other namespaces", pods,
     [policy("deny-empty-policy", "x", sel(), ingress=[{"from": [{"podSelector": {"matchLabels": {}}}]}])],
     [[("TCP", 80, Reach(pods).peer(Y, X, False).peer(Z, X, False))]])

pods = P("x/a", "y/a")
case("deny-updated-pod", "should deny ingress access to updated pod", pods,
     [policy("deny-ingress-via-label-selector", "x", sel({"target": "isolated"}), ingress=[])],
     [[("TCP", 80, Reach(pods))], [("TCP", 80, Reach(pods).all_ingress("x/a", False))]],
     changes=[{"kind": "pod_label", "pod": "x/a", "labels": {"pod": "a", "target": "isolated"}}])

pods = P("x/a", "x/b", "y/a")
case("deny-egress-podselector", "should deny egress from pods based on PodSelector", pods,
     [policy("deny-egress-pod-a", "x", pod_label("a"), egress=[])],
     [[("TCP", 80, Reach(pods).all_egress("x/a", False))]])

case("deny-egress-namespace", "should deny egress from all pods in a namespace", pods,
     [policy("deny-egress-ns-x", "x", sel(), egress=[])],
     [[("TCP", 80, Reach(pods).peer(X, ALL, False))]])

pods = P("x/a", "x/b", "x/c", "y/a")
case("ingress-and-egress", "should work with Ingress, Egress specified together", pods,
     [policy("allow-client-a-via-pod-selector", "x", pod_label("a"),
             ingress=[{"from": [{"podSelector": pod_label("b")}]}], egress=[{"ports": [{"port": 80}]}],
             types=["Egress", "Ingress"])],
     [[("TCP", 80, Reach(pods).all_ingress("x/a", False).expect("x/b", "x/a", True)),
       ("TCP", 81, Reach(pods).all_ingress("x/a", False).all_egress("x/a", False).expect("x/b", "x/a", True))]])

pods = P("x/a", "y/a", "y/b")
from_xa = [{"from": [{"namespaceSelector": ns_label("x"), "podSelector": pod_label("a")}]}]
case("egress-denied-client-side", "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", pods,
     [policy("allow-to-ns-y-pod-a", "x", pod_label("a"), egress=[{"to": [{"namespaceSelector": ns_label("y"), "podSelector": pod_label("a")}]}]),
      policy("allow-from-xa-on-ya-match-selector", "y", pod_label("a"), ingress=from_xa),
      policy("allow-from-xa-on-yb-match-selector", "y", pod_label("b"), ingress=from_xa)],
     [[("TCP", 80, Reach(pods).peer({"ns": "x", "pod": "a"}, ALL, False).peer(ALL, {"ns": "y", "pod": "a"}, False)
        .peer({"ns": "x", "pod": "a"}, {"ns": "y", "pod": "a"}, True).peer(ALL, {"ns": "y", "pod": "b"}, False))]])

case("egress-other-namespace", "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", pods,
     [policy("allow-to-ns-y-pod-a", "x", pod_label("a"), egress=[{"to": [{"namespaceSelector": ns_label("y"), "podSelector": pod_label("a")}]}])],
     [[("TCP", 80, Reach(pods).all_egress("x/a", False).expect("x/a", "y/a", True))]])

pods = P("x/a", "y/a")
case("ingress-by-protocol", "should enforce ingress policy allowing any port traffic to a server on a specific protocol", pods,
     [policy("allow-ingress-by-proto", "x", pod_label("a"), ingress=[{"ports": [{"protocol": "TCP"}]}])],
     [[("TCP", 80, Reach(pods)), ("UDP", 80, Reach(pods).peer(ALL, {"ns": "x", "pod": "a"}, False))]])

case("ingress-allow-all-precedence", "should enforce multiple ingress policies with ingress allow-all policy taking precedence", pods,
     [policy("allow-ingress-port-80", "x", sel({}), ingress=[{"ports": [{"port": 80}]}])],
     [[("TCP", 81, Reach(pods).peer(ALL, X, False))], [("TCP", 81, Reach(pods))]],
     changes=[{"kind": "policy_add", "policy": policy("allow-ingress", "x", sel({}), ingress=[{}])}])

case("egress-allow-all-precedence", "should enforce multiple egress policies with egress allow-all policy taking precedence", pods,
     [policy("allow-egress-port-80", "x", sel({}), egress=[{"ports": [{"port": 80}]}])],
     [[("TCP", 81, Reach(pods).peer(X, ALL, False))], [("TCP", 81, Reach(pods))]],
     changes=[{"kind": "policy_add", "policy": policy("allow-egress", "x", sel({}), egress=[{}])}])

case("deleted-policy", "should stop enforcing policies after they are deleted", pods,
     [policy("deny-all", "x", sel(), ingress=[], egress=[])],
     [[("TCP", 80, Reach(pods).peer(X, ALL, False).peer(ALL, X, False))], [("TCP", 80, Reach(pods))]],
     changes=[{"kind": "policy_delete", "policy": "x/deny-all"}])

pods = P("x/a", "y/a", "y/b")
case("egress-cidr", "should allow egress access to server in CIDR block", pods,
     [policy("allow-client-a-via-cidr-egress-rule", "x", pod_label("a"), egress=[{"to": [{"ipBlock": {"cidr": ip("y/b") + "/32"}}]}])],
     [[("TCP", 80, Reach(pods).all_egress("x/a", False).expect("x/a", "y/b", True))]])

pods = P("x/a", "x/b", "x/c")
# makeLargeCIDRForIP: the /4 around the pod's address.
large = "0.0.0.0/4"
except_b = policy("allow-client-a-via-cidr-egress-rule", "x", pod_label("a"),
                  egress=[{"to": [{"ipBlock": {"cidr": large, "except": [ip("x/b") + "/32"]}}]}])
case("egress-cidr-except", "should enforce except clause while egress access to server in CIDR block", pods, [except_b],
     [[("TCP", 80, Reach(pods).expect("x/a", "x/b", False))]])

case("egress-cidr-except-overlap", "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", pods, [except_b],
     [[("TCP", 80, Reach(pods).expect("x/a", "x/b", False))],
      [("TCP", 80, Reach(pods).all_egress("x/a", False).expect("x/a", "x/b", True))]],
     changes=[{"kind": "policy_add", "policy": policy("allow-client-a-via-cidr-egress-rule", "x", pod_label("a"),
                                                       egress=[{"to": [{"ipBlock": {"cidr": ip("x/b") + "/32"}}]}])}])

pods = P("x/a", "x/b", "y/a")
case("ingress-egress-independent", "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", pods,
     [policy("allow-egress-for-target", "x", pod_label("a"), egress=[{}])],
     [[("TCP", 80, Reach(pods))], [("TCP", 80, Reach(pods).all_ingress("x/a", False))]],
     changes=[{"kind": "policy_add", "policy": policy("deny-ingress-via-label-selector", "x", pod_label("a"), ingress=[])}])

pods = P("x/a", "y/a")
case("sctp-is-not-tcp", "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP", pods,
     [policy("deny-ingress", "x", sel(), ingress=[]),
      policy("allow-only-sctp-ingress-on-port-81", "x", pod_label("a"), ingress=[{"ports": [{"port": 81, "protocol": "SCTP"}]}])],
     [[("TCP", 81, Reach(pods).peer(ALL, X, False))]])

case("sctp-isolates", "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP", pods,
     [policy("allow-only-sctp-ingress-on-port-81", "x", pod_label("a"), ingress=[{"ports": [{"port": 81, "protocol": "SCTP"}]}])],
     [[("TCP", 81, Reach(pods).peer(ALL, {"ns": "x", "pod": "a"}, False))]])

case("udp-default-deny", "should support a 'default-deny-ingress' policy (UDP)", pods,
     [policy("deny-ingress", "x", sel(), ingress=[])],
     [[("UDP", 81, Reach(pods).peer(ALL, X, False))]])

# ---- YAML out -----------------------------------------------------------------------------

BARE = re.compile(r"^[A-Za-z_./][A-Za-z0-9_./-]*$")


def flow(v):
    if isinstance(v, dict):
        return "{" + ", ".join(f"{flow(k)}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if BARE.match(v) and v not in ("true", "false", "null", "yes", "no"):
        return v
    return '"' + v.replace('"', '\\"') + '"'


def block_policy(p, indent):
    pad = " " * indent
    lines = [f"{pad}- apiVersion: {p['apiVersion']}", f"{pad}  kind: {p['kind']}",
             f"{pad}  metadata: {flow(p['metadata'])}", f"{pad}  spec:"]
    for k, v in p["spec"].items():
        lines.append(f"{pad}    {k}: {flow(v)}")
    return lines


def short(pod):
    return pod.replace("/", "")


def render(c):
    phases = c["steps"]
    two = len(phases) > 1
    out = [f"# Generated by scenarios/netpol/gen.py from kubernetes/kubernetes",
           f"# test/e2e/network/netpol/network_policy.go: \"{c['title']}\". Do not edit.",
           f"name: netpol-{c['name']}",
           f"description: >-\n  Upstream's netpol case \"{c['title']}\", with its reachability matrix.",
           "seed: 1", f"duration: {'2s' if two else '1s'}", "",
           "nodes:", "  - {name: 'worker-{i}', count: %d}" % NODES, "",
           "namespaces: [{name: x}, {name: y}, {name: z}]", "", "pods:"]
    listen = "[" + ", ".join(
        f"{{port: {p}, protocol: {pr}, name: serve-{p}-{pr}}}" for p in (80, 81) for pr in ("tcp", "udp")) + "]"
    for pod in c["pods"]:
        ns, name = pod.split("/")
        out.append(f"  - {{name: {name}, namespace: {ns}, node: worker-{PODS.index(name)}, ip: {ip(pod)}, "
                   f"labels: {{pod: {name}}}, listen: {listen}}}")
    out += ["", "policies:"]
    for p in c["policies"]:
        out += block_policy(p, 2)
    if c["changes"]:
        out += ["", "faults:"]
        for ch in c["changes"]:
            ch = dict(at="1s", **ch)
            if ch["kind"] == "policy_add":
                out.append("  - at: 1s")
                out.append("    kind: policy_add")
                out.append("    policy:")
                out += ["    " + line for line in block_policy(ch["policy"], 0)][0:1]
                rest = block_policy(ch["policy"], 0)[1:]
                out[-1] = "      apiVersion: networking.k8s.io/v1"
                out += ["      " + line.strip() if not line.startswith("    ") else "      " + line[2:] for line in rest]
            else:
                out.append("  - " + flow(ch))
    out += ["", "traffic:"]
    expects = []
    for phase, probes in enumerate(phases):
        start = "0s" if phase == 0 else "1200ms"
        for proto, port, reach in probes:
            for (f, t), ok in sorted(reach.m.items()):
                name = f"{'p%d-' % (phase + 1) if two else ''}{proto.lower()}{port}-{short(f)}-{short(t)}"
                out.append(f"  - {{name: {name}, from: {f}, to: '{t}:{port}', kind: {proto.lower()}, "
                           f"start: {start}, timeout: 300ms}}")
                expects.append(f"  - {{traffic: {name}, delivered: 100%}}" if ok else
                               f"  - {{traffic: {name}, delivered: 0%, reason: policy}}")
    out += ["", "expect:"] + expects
    return "\n".join(out) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for old in os.listdir(here):
        if old.endswith(".yaml"):
            os.remove(os.path.join(here, old))
    for c in CASES:
        with open(os.path.join(here, c["name"] + ".yaml"), "w") as f:
            f.write(render(c))
    print(f"{len(CASES)} scenarios")


if __name__ == "__main__":
    main()

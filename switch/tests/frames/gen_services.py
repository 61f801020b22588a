#!/usr/bin/env python3
"""Writes the expected frames of ../services_exact.rs with scapy, independently of podnet.

Run: python3 gen_services.py > services.rs  (needs scapy). The output is
committed, so the tests need no Python; this script documents where each byte comes from.

The node is the guide's node A (10.0.1.0/24 on 172.16.0.1, vxlan) with node B
(10.0.2.0/24 on 172.16.0.2) as its peer. Pods on A: the client P 10.0.1.33 and the
endpoint E1 10.0.1.34; E2 10.0.2.144 runs on B; X 172.16.9.9 is a host on the underlay.
Services: web 10.3.0.50 tcp/80 -> 8080 (node port 30080), dns 10.3.0.10 udp/53 -> 5353.
"""
from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, raw
from scapy.layers.vxlan import VXLAN

P_MAC, E1_MAC, GW_A = "0a:58:0a:00:01:21", "0a:58:0a:00:01:22", "0a:58:0a:00:01:01"
GW_B = "0a:58:0a:00:02:01"
UL_A, UL_B, X_MAC = "02:00:ac:10:00:01", "02:00:ac:10:00:02", "02:00:ac:10:09:09"
VTEP_A, VTEP_B = "0e:00:ac:10:00:01", "0e:00:ac:10:00:02"
P, E1, E2, GW, X = "10.0.1.33", "10.0.1.34", "10.0.2.144", "10.0.1.1", "172.16.9.9"
NODE_A = "172.16.0.1"
WEB, DNS = "10.3.0.50", "10.3.0.10"
QUERY = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"

# Values podnet derives, as gen.py's FLOW_SPORT: a masqueraded flow keeps its client's
# source port while its reply tuple stays unique and the port is outside the node-port
# range, as Linux's NAT does (conntrack.rs, SnatPorts); the VXLAN source port is the
# hash of the translated inner flow (flow.rs).
SNAT_PORT_NODEPORT = 5555
SNAT_PORT_HAIRPIN = 40000
VXLAN_SPORT_TO_E2 = 51132


def arp_to_gateway(mac, ip):
    return raw(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(
        op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00", pdst=GW)).ljust(60, b"\0")


def syn(src, sport, dst, dport, ttl, ip_id=0x1111):
    return IP(src=src, dst=dst, ttl=ttl, id=ip_id, flags="DF") / TCP(
        sport=sport, dport=dport, flags="S", seq=1000, window=64240)


def synack(src, sport, dst, dport, ttl, ip_id=0x2222):
    return IP(src=src, dst=dst, ttl=ttl, id=ip_id, flags="DF") / TCP(
        sport=sport, dport=dport, flags="SA", seq=5000, ack=1001, window=65160)


def query(src, sport, dst, dport, ttl, chksum=None):
    udp = UDP(sport=sport, dport=dport)
    if chksum is not None:
        udp.chksum = chksum
    return IP(src=src, dst=dst, ttl=ttl, id=0x3333) / udp / QUERY


def vxlan(src_ul, dst_ul, src_ip, dst_ip, sport, src_vtep, dst_vtep, inner):
    return Ether(dst=dst_ul, src=src_ul) / IP(src=src_ip, dst=dst_ip, ttl=64, id=0, flags="DF") / UDP(
        sport=sport, dport=8472, chksum=0) / VXLAN(flags=0x08, vni=1) / Ether(
        dst=dst_vtep, src=src_vtep) / inner


frames = {
    "ARP_P": arp_to_gateway(P_MAC, P),
    "ARP_E1": arp_to_gateway(E1_MAC, "10.0.1.34"),
    # DNAT to a local endpoint, and its reply bridged back over L2 (reverse NAT).
    "SYN_P_TO_WEB": Ether(dst=GW_A, src=P_MAC) / syn(P, 40000, WEB, 80, 64),
    "SYN_DNAT_TO_E1": Ether(dst=E1_MAC, src=GW_A) / syn(P, 40000, E1, 8080, 63),
    "SYNACK_E1_TO_P": Ether(dst=P_MAC, src=E1_MAC) / synack(E1, 8080, P, 40000, 64),
    "SYNACK_FROM_WEB_TO_P": Ether(dst=P_MAC, src=E1_MAC) / synack(WEB, 80, P, 40000, 64),
    # DNAT to an endpoint on node B: the inner packet is translated, the outer is new.
    "VXLAN_SYN_TO_E2": vxlan(UL_A, UL_B, NODE_A, "172.16.0.2", VXLAN_SPORT_TO_E2, VTEP_A, VTEP_B,
                             syn(P, 40000, E2, 8080, 63)),
    # B routed E2's answer back (TTL 64 -> 63 on B); A decapsulates and reverse-translates.
    "VXLAN_SYNACK_FROM_E2": vxlan(UL_B, UL_A, "172.16.0.2", NODE_A, 50000, VTEP_B, VTEP_A,
                                  synack(E2, 8080, P, 40000, 63)),
    "SYNACK_FROM_WEB_VIA_GW": Ether(dst=P_MAC, src=GW_A) / synack(WEB, 80, P, 40000, 62),
    # NodePort from X on the underlay (Cluster policy): SNAT to the gateway toward the
    # local endpoint E1; the reply goes back out the underlay to X's MAC.
    "SYN_X_TO_NODEPORT": Ether(dst=UL_A, src=X_MAC) / syn(X, 5555, NODE_A, 30080, 64),
    "SYN_SNAT_TO_E1": Ether(dst=E1_MAC, src=GW_A) / syn(GW, SNAT_PORT_NODEPORT, E1, 8080, 63),
    "SYNACK_E1_TO_GW": Ether(dst=GW_A, src=E1_MAC) / synack(E1, 8080, GW, SNAT_PORT_NODEPORT, 64),
    "SYNACK_NODEPORT_TO_X": Ether(dst=X_MAC, src=UL_A) / synack(NODE_A, 30080, X, 5555, 63),
    # Hairpin: P reaches web, whose only endpoint is P itself: SNAT to the gateway.
    "SYN_HAIRPIN_TO_P": Ether(dst=P_MAC, src=GW_A) / syn(GW, SNAT_PORT_HAIRPIN, P, 8080, 63),
    "SYNACK_P_TO_GW": Ether(dst=GW_A, src=P_MAC) / synack(P, 8080, GW, SNAT_PORT_HAIRPIN, 64),
    "SYNACK_HAIRPIN_FROM_WEB": Ether(dst=P_MAC, src=GW_A) / synack(WEB, 80, P, 40000, 63),
    # No endpoints: RST from the VIP (seq 0, ack = SYN's seq + 1), as Linux's tcp-reset.
    "RST_FROM_WEB": Ether(dst=P_MAC, src=GW_A) / IP(src=WEB, dst=P, ttl=64, id=0, flags="DF") / TCP(
        sport=80, dport=40000, flags="RA", seq=0, ack=1001, window=0),
    # UDP to dns: DNAT with a checksum, and with checksum 0 (which stays 0).
    "QUERY_P_TO_DNS": Ether(dst=GW_A, src=P_MAC) / query(P, 40001, DNS, 53, 64),
    "QUERY_DNAT_TO_E1": Ether(dst=E1_MAC, src=GW_A) / query(P, 40001, E1, 5353, 63),
    "QUERY_NOSUM_P_TO_DNS": Ether(dst=GW_A, src=P_MAC) / query(P, 40002, DNS, 53, 64, chksum=0),
    "QUERY_NOSUM_DNAT_TO_E1": Ether(dst=E1_MAC, src=GW_A) / query(P, 40002, E1, 5353, 63, chksum=0),
    # E1 refuses the translated query (port unreachable, over L2 to P): the error is
    # translated back, quote and outer source, so P matches it to its socket.
    "UNREACH_E1_TO_P": Ether(dst=P_MAC, src=E1_MAC) / IP(src=E1, dst=P, ttl=64, id=0x4444, tos=0xc0) / ICMP(
        type=3, code=3) / raw(query(P, 40001, E1, 5353, 63)),
    "UNREACH_DNS_TO_P": Ether(dst=P_MAC, src=E1_MAC) / IP(src=DNS, dst=P, ttl=64, id=0x4444, tos=0xc0) / ICMP(
        type=3, code=3) / raw(query(P, 40001, DNS, 53, 63)),
    # No endpoints, UDP: ICMP port unreachable from the VIP, quoting the query as it came.
    "UNREACH_FROM_DNS": Ether(dst=P_MAC, src=GW_A) / IP(src=DNS, dst=P, ttl=64, id=0, tos=0xc0) / ICMP(
        type=3, code=3) / raw(query(P, 40001, DNS, 53, 64)),
}

print("// Generated by tests/frames/gen_services.py with scapy; do not edit by hand.")
print(f"pub const SNAT_PORT_NODEPORT: u16 = {SNAT_PORT_NODEPORT};")
print(f"pub const SNAT_PORT_HAIRPIN: u16 = {SNAT_PORT_HAIRPIN};")
for name, frame in frames.items():
    data = raw(frame)
    print(f"pub const {name}: [u8; {len(data)}] = [")
    for i in range(0, len(data), 16):
        print("    " + ", ".join(f"0x{b:02x}" for b in data[i:i + 16]) + ",")
    print("];")

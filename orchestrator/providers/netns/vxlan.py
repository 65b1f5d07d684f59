"""Stretching a lab's LANs over several machines with VXLAN (docs/scale.md): the plan, as `ip`/`bridge`/`tc` batch
lines and nftables rules — pure, so every rule is tested without root (machines.py applies it to a lab).

Per machine two namespaces of the lab's: the *underlay* namespace holds the machine's underlay link (a
dedicated NIC or VLAN; here a veth between "machines") with its VTEP address, and creates the VXLAN devices —
their UDP sockets stay there — then moves them into the *switch* namespace, where each joins its LAN's bridge.
Flooding is by head-end replication (a static all-zero fdb entry per remote VTEP), no multicast. The sniffer's
copies from a machine without the sniffer travel in a VXLAN device of their own (a mirror VNI per subnet, in
no bridge), mirrored at the far end into the sniffer's port: every frame is still copied exactly once, where
it enters a bridge from a host's port. The underlay namespace accepts only the lab's VXLAN between its VTEPs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

VXLAN_PORT = 4789
OVERHEAD = 50            # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8: the lab's MTU is the underlay's − 50


@dataclass(frozen=True)
class Machine:
    index: int
    switch_ns: str       # where the lab's bridges are
    underlay_ns: str     # where the underlay link and the VXLAN sockets are
    underlay_if: str
    vtep: str            # address/prefix on the underlay link


@dataclass(frozen=True)
class Stretch:
    bridge: str          # the LAN's bridge (the same name on every machine)
    vni: int


def device(vni: int) -> str:
    return f"vx{vni}"


def check_vteps(machines: list[Machine], lab_net: str = "198.18.0.0/15") -> None:
    """Refuse a plan whose VTEPs are outside the lab's address space, repeated, or not on one subnet."""
    net = ipaddress.ip_network(lab_net)
    ifs = [ipaddress.ip_interface(m.vtep) for m in machines]
    if len({i.ip for i in ifs}) != len(ifs):
        raise ValueError("two machines share a VTEP address")
    for m, i in zip(machines, ifs, strict=True):
        if i.ip not in net:
            raise ValueError(f"machine {m.index}: VTEP {i.ip} is outside {lab_net}")
    if len({i.network for i in ifs}) != 1:
        raise ValueError("the VTEPs are not on one underlay subnet (nothing is routed between machines)")


def underlay_lines(me: Machine, machines: list[Machine], lans: list[Stretch], mirrors: list[Stretch],
                   mtu: int = 1500) -> list[str]:
    """`ip -batch` lines for my underlay namespace: address the link, make the VXLAN devices (one per
    stretched LAN, one per mirror VNI) and hand them to my switch namespace."""
    check_vteps(machines)
    local = str(ipaddress.ip_interface(me.vtep).ip)
    out = [f"addr add {me.vtep} dev {me.underlay_if}", f"link set {me.underlay_if} mtu {mtu} up",
           "link set lo up"]
    for s in [*lans, *mirrors]:
        out += [f"link add {device(s.vni)} type vxlan id {s.vni} local {local} dstport {VXLAN_PORT} "
                f"dev {me.underlay_if} nolearning",
                f"link set {device(s.vni)} mtu {mtu - OVERHEAD} netns {me.switch_ns}"]
    return out


def switch_lines(me: Machine, lans: list[Stretch], mirrors: list[Stretch]) -> list[str]:
    """`ip -batch` lines for my switch namespace: each LAN's VXLAN device into its bridge; mirror devices up
    in no bridge."""
    out = [f"link set {device(s.vni)} master {s.bridge} up" for s in lans]
    out += [f"link set {device(s.vni)} up" for s in mirrors]
    return out


def fdb_lines(me: Machine, machines: list[Machine], stretches: list[Stretch],
              macs: dict[int, dict[int, list[str]]] | None = None) -> list[str]:
    """`bridge -batch` lines for my switch namespace: flood to every other VTEP (head-end replication), and
    every remote host's MAC at its machine's VTEP (known from the start, as local MACs are on their ports).
    macs: vni → machine index → the MACs plugged in there."""
    out = []
    for s in stretches:
        for m in machines:
            if m.index == me.index:
                continue
            dst = ipaddress.ip_interface(m.vtep).ip
            out.append(f"fdb append 00:00:00:00:00:00 dev {device(s.vni)} dst {dst}")
            for mac in (macs or {}).get(s.vni, {}).get(m.index, []):
                out.append(f"fdb add {mac} dev {device(s.vni)} dst {dst} static")
    return out


def mirror_lines(me: Machine, sniffer_machine: int, local_ports: list[str], sniffer_port: str, mirror: Stretch
                 ) -> list[str]:
    """`tc -batch` lines for my switch namespace, for one experimental subnet: ingress of each local host
    port copied to the sniffer's port (on the sniffer's machine) or into the mirror VNI (elsewhere); on the
    sniffer's machine the mirror VNI's arrivals are copied to the sniffer's port too."""
    dst = sniffer_port if me.index == sniffer_machine else device(mirror.vni)
    srcs = list(local_ports) + ([device(mirror.vni)] if me.index == sniffer_machine else [])
    out = []
    for src in srcs:
        out += [f"qdisc add dev {src} clsact",
                f"filter add dev {src} ingress protocol all pref 1 u32 match u32 0 0 "
                f"action mirred egress mirror dev {dst}"]
    return out


def underlay_nft(me: Machine, machines: list[Machine], table: str = "wt_underlay") -> str:
    """nftables for my underlay namespace: only UDP to the VXLAN port between the lab's VTEPs (and ARP on the
    link, which nftables' inet family does not see), nothing else in or out, nothing forwarded."""
    local = ipaddress.ip_interface(me.vtep).ip
    peers = ", ".join(str(ipaddress.ip_interface(m.vtep).ip) for m in machines if m.index != me.index)
    return (f"table inet {table} {{\n"
            f"  chain input {{ type filter hook input priority 0; policy drop;\n"
            f"    iifname \"lo\" accept\n"
            f"    ip saddr {{ {peers} }} ip daddr {local} udp dport {VXLAN_PORT} accept\n  }}\n"
            f"  chain output {{ type filter hook output priority 0; policy drop;\n"
            f"    oifname \"lo\" accept\n"
            f"    ip saddr {local} ip daddr {{ {peers} }} udp dport {VXLAN_PORT} accept\n  }}\n"
            f"  chain forward {{ type filter hook forward priority 0; policy drop;\n  }}\n}}\n")


"""A netns lab placed on several simulated machines (lab file `netns: {machines: 2}`, hosts' `machine`): which
namespaces each machine has, and the switch, underlay and VXLAN configuration of each, as batch lines — pure
(the provider runs them; vxlan.py is the plan's primitives; docs/scale.md says why it is built this way).

Machine 0 keeps the lab's usual switch namespace (`wt.<lab>.switch`); machine k > 0 gets `wt.<lab>.switch.m<k>`.
Each machine has an underlay namespace `wt.<lab>.underlay.m<k>` holding its end of the veth underlay (`ul0`, its
VTEP address from the lab's underlay subnet) and the VXLAN devices' sockets. Host names cannot contain dots,
so none of these names can be a host's. One VNI per LAN (100 + its index), and one mirror VNI per
experimental subnet (200 + its index) carrying the sniffer's copies from machines without the sniffer.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.labfile.topology import Host, Lab
from orchestrator.providers.naming import PREFIX, switch_name
from orchestrator.providers.netns import vxlan

UNDERLAY_IF = "ul0"
UNDERLAY_MTU = 1550       # the lab's own links keep 1500 inside the VXLAN (vxlan.OVERHEAD = 50)


def count(lab: Lab) -> int:
    return int(lab.options.get("machines", 1))


def machine_of(h: Host) -> int:
    return int(h.options.get("machine", 0))


def switch_ns(lab: str, machine: int) -> str:
    return switch_name(lab) if machine == 0 else f"{switch_name(lab)}.m{machine}"


def underlay_ns(lab: str, machine: int) -> str:
    return f"{PREFIX}{lab}.underlay.m{machine}"


def namespaces(lab: Lab) -> list[str]:
    """The lab's namespaces besides its hosts': one switch per machine, and with several an underlay each."""
    n = count(lab)
    return [switch_ns(lab.name, m) for m in range(n)] + ([underlay_ns(lab.name, m) for m in range(n)] if n > 1 else [])


def machines(lab: Lab) -> list[vxlan.Machine]:
    return [vxlan.Machine(m, switch_ns(lab.name, m), underlay_ns(lab.name, m), UNDERLAY_IF, v)
            for m, v in enumerate(lab.options.get("vteps", []))]


def sniffer_machine(lab: Lab) -> int | None:
    sn = lab.by_role("sniffer")
    return machine_of(sn[0]) if sn else None


@dataclass(frozen=True)
class SwitchPlan:
    """One machine's switch namespace: `ip -batch`, `bridge -batch` and `tc -batch` lines, in that order."""
    ip: list[str]
    bridge: list[str]
    tc: list[str]


def stretches(lab: Lab) -> tuple[list[vxlan.Stretch], list[tuple[str, vxlan.Stretch]]]:
    """Every LAN's stretch (its bridge, its VNI) and each experimental subnet's mirror VNI (segment, stretch)."""
    lans = [vxlan.Stretch(s.bridge, 100 + k) for k, s in enumerate(lab.segments)]
    mirrors = [(s.key, vxlan.Stretch("", 200 + k)) for k, s in enumerate(lab.segments) if s.kind == "experimental"]
    return lans, mirrors


def switch_plan(lab: Lab, m: int) -> SwitchPlan:
    """Machine m's switch: every LAN's bridge, its hosts' ports, their MACs, and the sniffer's mirror (locally
    or into the mirror VNI); with several machines also the VXLAN devices' place in the bridges and every
    remote host's MAC at its machine's VTEP — so nothing floods that is known, and nothing learns."""
    lines = ["link set lo up"]
    for seg in lab.segments:
        lines += [f"link add {seg.bridge} type bridge stp_state 0 mcast_snooping 0", f"link set {seg.bridge} up"]
    snf_m = sniffer_machine(lab)
    mirror_port: dict[str, str] = {}          # segment -> the sniffer's port on it
    exp_ports: list[tuple[str, str]] = []     # (port, segment) of my hosts
    mine = [h for h in lab.hosts if machine_of(h) == m]
    for h in mine:
        for i in h.interfaces:
            if i.mirror:
                mirror_port[i.segment] = i.port
                lines.append(f"link set {i.port} up")     # not in the bridge: it only ever receives copies
                continue
            lines.append(f"link set {i.port} master {lab.segment(i.segment).bridge} up")
            if lab.segment(i.segment).kind == "experimental":
                exp_ports.append((i.port, i.segment))
    # every host's MAC is known where it is plugged in, as a managed switch is configured
    fdb = [f"fdb add {i.mac} dev {i.port} master static" for h in mine for i in h.interfaces if not i.mirror]
    tc: list[str] = []
    lans, mirrors = stretches(lab)
    many = count(lab) > 1
    for seg_key, mstretch in mirrors:
        ports = [p for p, s in exp_ports if s == seg_key]
        if not many:
            if seg_key in mirror_port:       # ingress-only: every frame enters the switch once, is copied once
                tc += _mirror(ports, mirror_port[seg_key])
        elif snf_m is not None and (m != snf_m or seg_key in mirror_port):
            # elsewhere, my hosts' frames go into the mirror VNI; on the sniffer's machine, they and what
            # arrives in the mirror VNI go to the sniffer's port
            tc += vxlan.mirror_lines(machines(lab)[m], snf_m, ports, mirror_port.get(seg_key, ""), mstretch)
    if many:
        me, ms = machines(lab)[m], machines(lab)
        lines += vxlan.switch_lines(me, lans, [s for _, s in mirrors])
        macs = remote_macs(lab)
        fdb += vxlan.fdb_lines(me, ms, [*lans, *(s for _, s in mirrors)], macs)
        fdb += [f"fdb add {mac} dev {vxlan.device(s.vni)} master static" for s in lans
                for k, ms_macs in macs.get(s.vni, {}).items() if k != m for mac in ms_macs]
    return SwitchPlan(lines, fdb, tc)


def _mirror(ports: list[str], to: str) -> list[str]:
    out = []
    for port in ports:
        out += [f"qdisc add dev {port} clsact",
                f"filter add dev {port} ingress protocol all prio 1 u32 match u32 0 0 action mirred egress mirror dev {to}"]
    return out


def remote_macs(lab: Lab) -> dict[int, dict[int, list[str]]]:
    """VNI → machine → the MACs of the hosts plugged in there (not the sniffer's passive ports)."""
    lans, _ = stretches(lab)
    vni = {s.key: st.vni for s, st in zip(lab.segments, lans, strict=True)}
    out: dict[int, dict[int, list[str]]] = {}
    for h in lab.hosts:
        for i in h.interfaces:
            if not i.mirror:
                out.setdefault(vni[i.segment], {}).setdefault(machine_of(h), []).append(i.mac)
    return out


def underlay_plan(lab: Lab, m: int) -> tuple[list[str], str]:
    """Machine m's underlay namespace: `ip -batch` lines (its VTEP address, the VXLAN devices made there and
    handed to its switch) and its nftables ruleset (only the lab's VXLAN between its VTEPs)."""
    ms = machines(lab)
    lans, mirrors = stretches(lab)
    lines = vxlan.underlay_lines(ms[m], ms, lans, [s for _, s in mirrors], mtu=UNDERLAY_MTU)
    return lines, vxlan.underlay_nft(ms[m], ms)


def underlay_link(lab: Lab) -> str:
    """The `ip -batch` line (in machine 0's underlay namespace) that makes the veth underlay to machine 1."""
    return (f"link add {UNDERLAY_IF} netns {underlay_ns(lab.name, 0)} type veth peer name {UNDERLAY_IF} "
            f"netns {underlay_ns(lab.name, 1)}")

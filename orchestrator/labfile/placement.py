"""Hosts placed on several machines (netns provider: machines simulated as namespaces joined by a veth
underlay, their LANs stretched with VXLAN; docs/scale.md): the lab file's `netns: {machines, underlay}` and each
host's `machine`, checked here and resolved into the lab's options. Pure."""

from __future__ import annotations

import ipaddress
from typing import Any

from orchestrator.labfile import constants, models

MAX_MACHINES = 2          # what the netns provider simulates today: two machines, one veth underlay between them
DEFAULT_UNDERLAY = "198.19.255.248/29"


def options(spec: models.LabFile, nets: dict[str, ipaddress.IPv4Network | None], problems) -> dict[str, Any]:
    """The lab's netns options ({} for a lab on one machine), every problem added to `problems`."""
    placed = [(entry, hs.machine) for entry, hs in spec.hosts.items() if hs.machine is not None]
    n = spec.netns.machines if spec.netns else 1
    if spec.netns is not None and spec.provider != "netns":
        problems.add(("netns",), f"'netns' options are for the netns provider; this lab uses {spec.provider}")
        return {}
    if n > MAX_MACHINES:
        problems.add(("netns", "machines"), f"{n} machines: the netns provider simulates at most {MAX_MACHINES} "
                     "today (two namespaces joined by one veth underlay)")
        return {}
    if placed and n < 2:
        problems.add(("hosts", placed[0][0], "machine"), "a host is placed on a machine but the lab "
                     "has one; say how many with netns: {machines: 2}")
        return {}
    for entry, m in placed:
        if m >= n:
            problems.add(("hosts", entry, "machine"), f"{entry} is placed on machine {m}; the lab has machines "
                         f"0…{n - 1}")
    if n < 2:
        return {}
    assert spec.netns is not None
    under = spec.netns.underlay or DEFAULT_UNDERLAY
    path = ("netns", "underlay")
    try:
        net = ipaddress.ip_network(under, strict=True)
    except ValueError as exc:
        problems.add(path, f"'{under}' is not a valid IPv4 CIDR ({exc})")
        return {}
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(ipaddress.IPv4Network(constants.LAB_RANGE)):
        problems.add(path, f"{under} is outside {constants.LAB_RANGE}: the underlay's addresses are the lab's too")
        return {}
    if net.num_addresses - 2 < n:
        problems.add(path, f"{under} holds {max(0, net.num_addresses - 2)} VTEP addresses; {n} machines need one each")
    for key, seg in nets.items():
        if seg is not None and seg.overlaps(net):
            problems.add(path, f"the underlay {net} overlaps {key} ({seg}): a VTEP address must be no LAN's")
    vteps = [f"{a}/{net.prefixlen}" for a, _ in zip(net.hosts(), range(n), strict=False)]
    return {"machines": n, "underlay": str(net), "vteps": vteps}


"""`kind: spread` experiments (issue 16): which hosts are vulnerable, which one the injector infects, on what
fraction of them (or on the gateway) the mechanism is deployed, and the checks of those keys against the lab
— all before anything is built. Pure: no I/O.

The worm spreads by the test worm's own chain of triggers (testworm/scanner.py's Infector): every vulnerable
host runs a test-worm server; the generation bound is raised to what the lab needs (`generation_bound`) and
stays a bound, beside the worm's attempts and lifetime.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import random
from typing import Any

from orchestrator.labfile.topology import Lab

GATEWAY = "gateway"
MAX_GENERATIONS = 64         # testworm.params.MAX_GENERATIONS: the deepest a spread may chain
Deploy = float | str         # a fraction of the vulnerable hosts, or "gateway"


def vulnerable_hosts(spec: Any, lab: Lab) -> list[str]:
    """The hosts `vulnerable:` names (a role, or a list of hosts), in the lab's order."""
    v = spec.vulnerable
    if v is None:
        return [h.name for h in lab.by_role("blade")]
    if isinstance(v, str):
        named = {h.name for h in lab.by_role(v)} or ({v} if any(h.name == v for h in lab.hosts) else set())
    else:
        named = set(v)
    return [h.name for h in lab.hosts if h.name in named]


def initial_host(spec: Any, lab: Lab) -> str | None:
    """The host the injector infects: `initial:`, or the first vulnerable host."""
    if spec.initial is not None:
        return spec.initial
    vul = vulnerable_hosts(spec, lab)
    return vul[0] if vul else None


def deployments(spec: Any) -> list[Deploy]:
    """The deploy conditions in the file's order (default: none, half, all)."""
    return list(spec.deploy) if spec.deploy is not None else [0.0, 0.5, 1.0]


def generation_bound(hosts: int) -> int:
    """As deep as a spread over `hosts` hosts can chain (hosts − 1 hops), and never beyond the worm's bound."""
    return max(1, min(hosts - 1, MAX_GENERATIONS))


def deploy_label(d: Deploy) -> str:
    """How a deploy condition reads in a trial id and a table: 0, 0.5, 1 or gateway."""
    return d if isinstance(d, str) else f"{float(d):g}"


def carriers(vulnerable: list[str], deploy: Deploy, seed: int, repeat: int) -> list[str]:
    """The vulnerable hosts that carry the mechanism in one trial: round(fraction × hosts) of them, chosen
    from the seed and the repeat (each repeat its own draw); none for `gateway` (the gateway carries it)."""
    if deploy == GATEWAY:
        return []
    n = round(float(deploy) * len(vulnerable))
    digest = hashlib.sha256(f"spread|{seed}|{deploy_label(deploy)}|{repeat}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    chosen = set(rng.sample(vulnerable, n))
    return [h for h in vulnerable if h in chosen]


def check_spread(spec: Any, lab: Lab, problems: Any) -> None:
    """The spread keys against the lab: `vulnerable` names hosts (or a role) there, each with an address in the
    scan range; `initial` is one of them; deploy fractions in [0, 1] or `gateway` (which needs a gateway); the
    worm infects over TCP only."""
    vul = _check_vulnerable(spec, lab, problems)
    if spec.initial is not None and vul and spec.initial not in vul:
        known = any(h.name == spec.initial for h in lab.hosts)
        problems.add(("initial",), f"{spec.initial} is not vulnerable (vulnerable: {_names(vul)})" if known
                     else f"lab {lab.name} has no host '{spec.initial}'")
    for i, d in enumerate(deployments(spec)):
        if isinstance(d, str):
            if d != GATEWAY:
                problems.add(("deploy", i), f"'{d}' is neither a fraction of the vulnerable hosts (0 … 1) nor "
                                            f"'{GATEWAY}'")
            elif not lab.by_role("gateway"):
                problems.add(("deploy", i), f"lab {lab.name} has no gateway to deploy the mechanism on")
        elif isinstance(d, bool) or not (0.0 <= d <= 1.0) or math.isnan(d):
            problems.add(("deploy", i), f"{d} is not a fraction of the vulnerable hosts: a fraction is in "
                                        f"[0, 1] (or write '{GATEWAY}')")
    if spec.deploy is not None and len({deploy_label(d) for d in spec.deploy}) < len(spec.deploy):
        problems.add(("deploy",), "a deploy condition is named twice")
    if list(spec.worm.protocols) != ["tcp"]:
        problems.add(("worm", "protocols"), "a spread runs over TCP only (the worm's trigger rides the "
                                            "connection a scan opened): write protocols: [tcp]")


def _check_vulnerable(spec: Any, lab: Lab, problems: Any) -> list[str]:
    v = spec.vulnerable
    if isinstance(v, list):
        names = {h.name for h in lab.hosts}
        for i, name in enumerate(v):
            if name not in names:
                problems.add(("vulnerable", i), f"lab {lab.name} has no host '{name}'")
        if len(set(v)) < len(v):
            problems.add(("vulnerable",), "a host is named twice")
    elif isinstance(v, str) and not lab.by_role(v) and not any(h.name == v for h in lab.hosts):
        roles = sorted({h.role for h in lab.hosts})
        problems.add(("vulnerable",), f"lab {lab.name} has no host or role '{v}' (roles: {', '.join(roles)})")
        return []
    vul = vulnerable_hosts(spec, lab)
    if v is None and not vul:
        problems.add(("vulnerable",), f"lab {lab.name} has no blade: name the vulnerable hosts")
        return []
    try:
        scan = ipaddress.IPv4Network(spec.worm.scan, strict=True)
    except ValueError:
        return vul          # the scan range's own check says why
    for name in vul:
        h = lab.host(name)
        ips = [i.ip for i in h.interfaces if i.segment.startswith("experimental") and i.ip]
        if h.role not in ("blade", "target"):
            problems.add(("vulnerable",), f"{name} has role {h.role}: only blades and targets run the worm server")
        elif not any(ipaddress.IPv4Address(ip) in scan for ip in ips):
            problems.add(("vulnerable",), f"{name} ({', '.join(ips) or 'no experimental address'}) is outside "
                                          f"the scan range {scan}: the worm could never reach it")
    if len(vul) < 2:
        problems.add(("vulnerable",), f"a spread needs at least two vulnerable hosts ({len(vul)} named)")
    return vul


def _names(hosts: list[str], limit: int = 6) -> str:
    return ", ".join(hosts[:limit]) + (f", … ({len(hosts)} hosts)" if len(hosts) > limit else "")

"""`testbed check`: an isolation audit of a running lab, done with real probes inside every host.

Planning the probes and judging what they saw are pure functions (tested without root); `run_check` runs the
probe (orchestrator/probe_host.py) in every host out-of-band, in parallel. What is audited: LANs that must
not meet do not (admin/management vs experimental, management only for admin-server and blades), the
sniffer is passive, no host has a route towards the machine's uplink, and only the gateway forwards —
and only between experimental subnets.
"""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import isolation
from .providers.base import Provider
from .topology import Host, Lab

PROBE_PORT = 9          # discard: nothing listens, so a reachable address answers with RST at once
PROBE_TIMEOUT = 0.6
RETRY_TIMEOUT = 3.0     # a probe that should connect and timed out is tried once more, this long (a VM under
                        # software emulation once took longer than PROBE_TIMEOUT to answer on its management LAN)
PROBE_SRC = (Path(__file__).parent / "probe_host.py").read_text()


@dataclass(frozen=True)
class Finding:
    check: str
    host: str
    ok: bool
    detail: str
    kind: str = "leak"          # leak | broken (a lab that does not work as declared)


@dataclass
class CheckReport:
    lab: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "ok": self.ok, "findings": [asdict(f) for f in self.findings]}


# ---------------------------------------------------------------- planning (pure)


def _sample(lab: Lab, segment: str, exclude: str) -> list[str]:
    """Up to three addresses on a segment (the gateway's first), not the prober's own."""
    hosts = [h for h in lab.hosts if h.name != exclude and any(i.segment == segment and i.ip for i in h.interfaces)]
    hosts.sort(key=lambda h: (h.role != "gateway", h.index))
    picks = hosts[:2] + hosts[-1:] if len(hosts) > 2 else hosts
    seen, out = set(), []
    for h in picks:
        ip = next(i.ip for i in h.interfaces if i.segment == segment)
        if ip not in seen:
            seen.add(ip)
            out.append(ip)
    return out


def expected_reachable(lab: Lab, host: Host, segment: str) -> bool:
    """May `host` reach addresses on `segment`? Directly attached, or experimental→experimental via the gateway."""
    if any(i.segment == segment and i.ip for i in host.interfaces):
        return True
    seg = lab.segment(segment)
    return (seg.kind == "experimental" and host.default_via is not None
            and any(s.startswith("experimental") for s in host.segments))


def plan(lab: Lab, uplinks: list[str]) -> dict[str, dict[str, Any]]:
    """The probe plan for every host: connect probes to lab addresses, and routing lookups for uplinks."""
    admin_server = lab.by_role("admin-server")[0]
    plans: dict[str, dict[str, Any]] = {}
    for h in lab.hosts:
        probes = []
        for seg in lab.segments:
            for addr in _sample(lab, seg.key, h.name):
                probes.append({"addr": addr, "port": PROBE_PORT, "segment": seg.key,
                               "expect": "reachable" if expected_reachable(lab, h, seg.key) else "unreachable"})
        # traffic entering from the experimental side must not come out on admin or management
        for i in h.interfaces:
            if i.segment.startswith("experimental") and i.ip:
                for seg in (s for s in lab.segments if s.kind != "experimental"):
                    for addr in _sample(lab, seg.key, h.name)[:1]:
                        probes.append({"addr": addr, "port": PROBE_PORT, "segment": seg.key,
                                       "bind_dev": i.ifname, "expect": "unreachable"})
        if h.name != admin_server.name and h.on("admin"):
            probes.append({"addr": admin_server.ip("admin"), "port": PROBE_PORT, "segment": "admin",
                           "expect": "reachable", "purpose": "admin-server"})
        plans[h.name] = {"probes": probes, "uplinks": uplinks, "timeout": PROBE_TIMEOUT,
                         "nft": isolation.ruleset(h) is not None, "machine_boot_id": _boot_id()}
    return plans


def _boot_id() -> str:
    """This machine's kernel boot id: a VM's root namespace is not the machine's (it has its own kernel)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------- judging (pure)


def evaluate(lab: Lab, observed: dict[str, dict[str, Any]]) -> CheckReport:
    rep = CheckReport(lab.name)
    add = rep.findings.append
    lab_nets = [ipaddress.ip_network(s.subnet) for s in lab.segments]
    forwarders = {h.ip(i.segment): h for h in lab.hosts if h.forwarding for i in h.interfaces if i.ip}

    for h in lab.hosts:
        obs = observed.get(h.name)
        if obs is None or "error" in obs:
            add(Finding("probe", h.name, False, f"could not probe: {(obs or {}).get('error', 'no answer')}", "broken"))
            continue
        if obs.get("netns_is_root"):
            add(Finding("namespace", h.name, False, "runs in the machine's root network namespace"))
        # interfaces: only what the lab made, addresses as declared, the sniffer's port passive
        want = {i.ifname: i for i in h.interfaces}
        for itf in obs.get("interfaces", []):
            name = itf["name"]
            if name == "lo":
                continue
            if name not in want:
                add(Finding("interfaces", h.name, False, f"unexpected interface {name} (not made by the lab)"))
                continue
            decl = want[name]
            v4 = [a for a in itf["addrs"] if ":" not in a]
            v6 = [a for a in itf["addrs"] if ":" in a]
            if decl.mirror:
                sends = itf.get("tx_packets") or 0
                ok = not itf["addrs"] and "NOARP" in itf["flags"] and sends == 0
                add(Finding("sniffer-passive", h.name, ok,
                            f"{name}: addresses {itf['addrs'] or 'none'}, "
                            f"{'ARP off' if 'NOARP' in itf['flags'] else 'ARP ON'}, sent {sends} packets"))
            elif v4 != [decl.address] or v6:
                add(Finding("addresses", h.name, False, f"{name} has {itf['addrs']}, declared {decl.address}",
                            "broken"))
        missing = set(want) - {i["name"] for i in obs.get("interfaces", [])}
        if missing:
            add(Finding("interfaces", h.name, False, f"missing {', '.join(sorted(missing))}", "broken"))
        if h.on("management") and h.role not in ("admin-server", "blade"):
            add(Finding("management", h.name, False, f"a {h.role} is on the management LAN"))

        if isolation.ruleset(h) is not None:
            present = obs.get("isolation_table") is True
            add(Finding("filter", h.name, present, f"table inet {isolation.TABLE} "
                        + ("keeps its experimental side apart" if present else "is MISSING")))
        # forwarding: only the gateway, and only between experimental interfaces
        sc = obs.get("sysctl", {})
        if h.forwarding:
            bad = [n for n, v in sc.get("conf", {}).items()
                   if v == "1" and n not in ("lo", "all", "default") and not n.startswith("exp")]
            add(Finding("forwarding", h.name, not bad, f"forwarding on {', '.join(bad)}" if bad else
                        "forwards between experimental subnets only"))
        else:
            on = sc.get("ip_forward") == "1" or any(v == "1" for v in sc.get("conf", {}).values())
            add(Finding("forwarding", h.name, not on,
                        "forwarding is ON (only the gateway may forward)" if on else "off"))

        # routes: only to lab subnets, next hops only lab forwarders
        for r in obs.get("routes", []):
            if r.get("table") == "local" or r.get("type") in ("local", "broadcast"):
                continue
            dst, via = r.get("dst", ""), r.get("gateway")
            if via and via not in forwarders:
                add(Finding("routes", h.name, False, f"route to {dst} via {via}, which is not the lab's gateway"))
            elif dst != "default" and not via:
                net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
                if not any(net.subnet_of(n) for n in lab_nets):
                    add(Finding("routes", h.name, False, f"route to {dst} outside the lab's networks"))

        # uplink: routing lookups must fail here, or at the lab gateway they lead to
        for rg in obs.get("route_get", []):
            if not rg["ok"]:
                continue
            gw = forwarders.get(rg.get("via") or "")
            gw_obs = observed.get(gw.name, {}) if gw else {}
            beyond = next((x for x in gw_obs.get("route_get", []) if x["addr"] == rg["addr"]), None)
            if gw is None or beyond is None or beyond["ok"]:
                add(Finding("uplink", h.name, False,
                            f"has a route towards the machine's uplink address {rg['addr']} "
                            f"(via {rg.get('via') or rg.get('dev')})"))
        if not any(f.check == "uplink" and f.host == h.name for f in rep.findings):
            add(Finding("uplink", h.name, True, "no route to the machine's uplink"))

        # probes
        leaks = [p for p in obs.get("probes", []) if p["expect"] == "unreachable" and p["result"] != "unreachable"]
        broken = [p for p in obs.get("probes", []) if p["expect"] == "reachable" and p["result"] == "unreachable"]
        for p in leaks:
            via = f" from {p['bind_dev']}" if p.get("bind_dev") else ""
            add(Finding("isolation", h.name, False,
                        f"reaches {p['segment']} address {p['addr']}{via} ({p['result']}); it must not"))
        for p in broken:
            add(Finding("connectivity", h.name, False,
                        f"cannot reach {p['segment']} address {p['addr']} ({p['detail']})", "broken"))
        n_unreach = sum(1 for p in obs.get("probes", []) if p["expect"] == "unreachable")
        if not leaks:
            add(Finding("isolation", h.name, True, f"{n_unreach} probes of LANs it is not on: none answered"))
        if not broken:
            add(Finding("connectivity", h.name, True, "reaches its own LANs and the admin server"))
    return rep


# ---------------------------------------------------------------- running (I/O)


def machine_uplinks() -> list[str]:
    """The root namespace's default gateways and global addresses: what no lab host may have a route to."""
    from .proc import run

    out: list[str] = []
    r = run(["ip", "-4", "-j", "route", "show", "default"], timeout=10)
    for x in json.loads(r.stdout or "[]") if r.ok else []:
        if x.get("gateway"):
            out.append(x["gateway"])
    r = run(["ip", "-4", "-j", "addr", "show", "scope", "global"], timeout=10)
    for a in json.loads(r.stdout or "[]") if r.ok else []:
        out += [x["local"] for x in a.get("addr_info", []) if x.get("family") == "inet"]
    return sorted(set(out))


def run_check(provider: Provider, lab: Lab) -> CheckReport:
    plans = plan(lab, machine_uplinks())

    def one(host: str) -> tuple[str, dict[str, Any]]:
        res = provider.exec(lab.name, host, ["python3", "-", json.dumps(plans[host])], input=PROBE_SRC, timeout=30)
        if not res.ok:
            return host, {"error": (res.stderr.strip().splitlines() or [f"exit {res.exit_code}"])[-1]}
        try:
            return host, json.loads(res.stdout)
        except ValueError:
            return host, {"error": "probe printed no JSON"}

    with ThreadPoolExecutor(max_workers=16) as pool:
        observed = dict(pool.map(one, [h.name for h in lab.hosts]))
        # an address that should answer and did not within PROBE_TIMEOUT gets one longer try before it is
        # called broken; a leak probe is never retried (an answer there is a leak however late it came)
        for h, o in observed.items():
            slow = [{k: v for k, v in p.items() if k not in ("result", "detail")} for p in o.get("probes", [])
                    if p["expect"] == "reachable" and p.get("detail") == "timeout"]
            if slow:
                plans[h] = {**plans[h], "timeout": RETRY_TIMEOUT, "probes": slow}
        for h, again in pool.map(one, [h for h in plans if plans[h]["timeout"] == RETRY_TIMEOUT]):
            if "error" in again:
                continue
            redone = {(p["addr"], p.get("bind_dev")): p for p in again.get("probes", [])}
            observed[h]["probes"] = [redone.get((p["addr"], p.get("bind_dev")), p) for p in observed[h]["probes"]]
    return evaluate(lab, observed)

"""`testbed check`: an isolation audit of a running lab, done with real probes inside every host.

Planning the probes and judging what they saw are pure functions (tested without root); `run_check` runs the
probe (orchestrator/lab/audit_probe.py) in every host out-of-band, in parallel, the gateway first. What is audited:
LANs that must not meet do not (admin/management vs experimental, management only for admin-server and
blades); from every experimental interface, no control-LAN address of any host on that segment answers
on-link, and nothing sent through the gateway towards a control LAN leaves it there (the gateway watches its
control interfaces while every host sends); each host's isolation filter is the one the lab installed, rule
for rule; the sniffer is passive; no host has a route towards the machine's uplink; only the gateway
forwards, and only between experimental subnets. A leak probe is never retried: an answer is a leak however
late it came. The probe count per host grows with the hosts on its segment (about 400 frames on a 200-host
LAN, sent at once and answered or not within one timeout).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.lab import audit_underlay
from orchestrator.labfile import isolation
from orchestrator.labfile.topology import Host, Interface, Lab
from orchestrator.providers.base import Provider

PROBE_PORT = 9          # discard: nothing listens, so a reachable address answers with RST at once
PROBE_TIMEOUT = 0.6
RETRY_TIMEOUT = 3.0     # a probe that should connect and timed out is tried once more, this long (a VM under
                        # software emulation once took longer than PROBE_TIMEOUT to answer on its management LAN)
BEACON_WAIT = 10.0      # how long a host waits for the gateway's watch to listen before it gives up on it
PARALLEL = 32           # probe programs at once (each mostly waits for its timeout)
PROBE_SRC = (Path(__file__).parent / "audit_probe.py").read_text()
# the plan is the first line of stdin and the program the rest (a plan grows with the lab; argv is bounded),
# run by the host's own Python, isolated from site packages (it needs the standard library only)
PROBE_BOOT = ("import sys; sys.argv = ['audit_probe', sys.stdin.readline()]; "
              "exec(compile(sys.stdin.read(), 'audit_probe.py', 'exec'), {'__name__': '__main__'})")


def probe_argv(python: str) -> list[str]:
    return [python, "-I", "-S", "-c", PROBE_BOOT]


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


class _Index:
    """Who is on which segment, computed once per plan (a 200-host plan looks it up 80,000 times)."""

    def __init__(self, lab: Lab):
        self.on: dict[str, list[tuple[Host, Interface]]] = {s.key: [] for s in lab.segments}
        for h in sorted(lab.hosts, key=lambda h: (h.role != "gateway", h.index)):     # the gateway first
            for i in h.interfaces:
                self.on[i.segment].append((h, i))
        self.ips = {seg: [(h.name, i.ip) for h, i in on if i.ip] for seg, on in self.on.items()}
        self.ctl = {h.name: [[i.ip, i.segment] for i in h.interfaces
                             if not i.segment.startswith("experimental") and i.ip] for h in lab.hosts}
        self.gateway = next((g for g in lab.hosts if g.forwarding), None)
        self.admin_server = lab.by_role("admin-server")[0]


def _sample(idx: _Index, segment: str, exclude: str) -> list[str]:
    """Up to three addresses on a segment (the gateway's first), not the prober's own."""
    hosts = [ip for name, ip in idx.ips[segment] if name != exclude]
    picks = hosts[:2] + hosts[-1:] if len(hosts) > 2 else hosts
    return list(dict.fromkeys(picks))


def expected_reachable(lab: Lab, host: Host, segment: str) -> bool:
    """May `host` reach addresses on `segment`? Directly attached, or experimental→experimental via the gateway."""
    if any(i.segment == segment and i.ip for i in host.interfaces):
        return True
    seg = lab.segment(segment)
    return (seg.kind == "experimental" and host.default_via is not None
            and any(s.startswith("experimental") for s in host.segments))


def frame_groups(lab: Lab, host: Host, idx: _Index | None = None) -> list[dict[str, Any]]:
    """The raw SYNs `host` sends from each experimental interface: on-link to every control-LAN address of every
    other host on that segment (to its MAC there), and through the gateway (to the gateway's MAC) to each
    control LAN. The sniffer's passive ports neither send nor are sent to: they are not in the bridge."""
    idx = idx or _Index(lab)
    gateway, admin_server = idx.gateway, idx.admin_server
    ctl_lans = [s.key for s in lab.segments if s.kind != "experimental"]
    groups = []
    for i in host.interfaces:
        if not i.segment.startswith("experimental") or not i.ip or i.mirror:
            continue
        to = [{"mac": xi.mac, "host": x.name, "via": "on-link", "addrs": idx.ctl[x.name]}
              for x, xi in idx.on[i.segment] if x.name != host.name and not xi.mirror and idx.ctl[x.name]]
        gw_if = gateway.iface(i.segment) if gateway is not None and gateway.name != host.name else None
        if gateway is not None and gw_if is not None:
            addrs: list[list[str]] = []
            for seg in ctl_lans:         # an address on each control LAN beyond the gateway (the admin server's)
                owner = admin_server if admin_server.ip(seg) else next(
                    (x for x, xi in idx.on[seg] if x.name not in (gateway.name, host.name) and xi.ip), None)
                if owner is not None and (ip := owner.ip(seg)):
                    addrs.append([ip, seg])
            if addrs:
                to.append({"mac": gw_if.mac, "host": gateway.name, "via": "gateway", "addrs": addrs})
        if to:
            groups.append({"dev": i.ifname, "src": i.ip, "mac": i.mac, "to": to})
    return groups


def watch_deadline(senders: int) -> float:
    """How long the gateway's watch stays open at most, waiting for every sender to say it is done (it closes
    as soon as all have). A cap, not a wait: at 1,000 hosts on a loaded 2-core machine the senders took 0.41 s
    each (PARALLEL at a time), and a cap of 0.2 s a sender closed the watch on the last 229 of them."""
    return 30.0 + 0.6 * senders


def plan(lab: Lab, uplinks: list[str], beacon_port: int = 4739) -> dict[str, dict[str, Any]]:
    """The probe plan for every host: connect probes to lab addresses, raw frames from its experimental side,
    the gateway's watch (and the address where senders check in with it), and routing lookups for uplinks."""
    idx = _Index(lab)
    admin_server, gateway, boot_id = idx.admin_server, idx.gateway, _boot_id()
    plans: dict[str, dict[str, Any]] = {}
    for h in lab.hosts:
        probes = []
        for seg in lab.segments:
            for addr in _sample(idx, seg.key, h.name):
                probes.append({"addr": addr, "port": PROBE_PORT, "segment": seg.key,
                               "expect": "reachable" if expected_reachable(lab, h, seg.key) else "unreachable"})
        if h.name != admin_server.name and h.on("admin"):
            # the admin server is often in the admin LAN's sample already: that probe says so, not a second one
            # (probed twice, one timeout was two findings)
            there = next((q for q in probes if q["addr"] == admin_server.ip("admin")), None)
            if there is not None:
                there["purpose"] = "admin-server"
            else:
                probes.append({"addr": admin_server.ip("admin"), "port": PROBE_PORT, "segment": "admin",
                               "expect": "reachable", "purpose": "admin-server"})
        p: dict[str, Any] = {"probes": probes, "uplinks": uplinks, "timeout": PROBE_TIMEOUT,
                             "nft": isolation.ruleset(h) is not None, "machine_boot_id": boot_id}
        groups = frame_groups(lab, h, idx)
        if groups:
            p.update(frames=groups, frame_port=PROBE_PORT)
            via_gw = next((g for g in groups if any(t["via"] == "gateway" for t in g["to"])), None)
            if via_gw is not None and gateway is not None:
                seg_key = next(i.segment for i in h.interfaces if i.ifname == via_gw["dev"])
                p["beacon"] = {"addr": gateway.ip(seg_key), "port": beacon_port, "wait": BEACON_WAIT}
        plans[h.name] = p
    if gateway is not None:
        senders = sum(1 for p in plans.values() if "beacon" in p)
        plans[gateway.name]["watch"] = {
            "ifaces": [i.ifname for i in gateway.interfaces if not i.segment.startswith("experimental")],
            "nets": [s.subnet for s in lab.experimental_segments()], "port": beacon_port, "senders": senders,
            "deadline": watch_deadline(senders)}
    return plans


def _boot_id() -> str:
    """This machine's kernel boot id: a VM's root namespace is not the machine's (it has its own kernel)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------- judging (pure)


def evaluate(lab: Lab, observed: dict[str, dict[str, Any]]) -> CheckReport:
    """Judge what every host's probe observed (one function per audit below); pure."""
    rep = CheckReport(lab.name)
    lab_nets = [ipaddress.ip_network(s.subnet) for s in lab.segments]
    forwarders = {h.ip(i.segment): h for h in lab.hosts if h.forwarding for i in h.interfaces if i.ip}
    for h in lab.hosts:
        obs = observed.get(h.name)
        if obs is None or "error" in obs:
            rep.findings.append(Finding("probe", h.name, False,
                                        f"could not probe: {(obs or {}).get('error', 'no answer')}", "broken"))
            continue
        if obs.get("netns_is_root"):
            rep.findings.append(Finding("namespace", h.name, False, "runs in the machine's root network namespace"))
        rep.findings += _interface_findings(h, obs)
        if (expected := isolation.chains(h)) is not None:
            rep.findings.append(_filter_finding(h.name, expected, obs.get("nft") or {}))
        rep.findings.append(_forwarding_finding(h, obs.get("sysctl", {})))
        rep.findings += _route_findings(h, obs, forwarders, lab_nets)
        rep.findings += _uplink_findings(h, obs, forwarders, observed)
        rep.findings += _probe_findings(h, obs)
        if "watch" in obs:
            rep.findings += _watch_findings(h.name, obs["watch"])
    rep.findings += _answered_findings(observed)
    rep.findings = list(dict.fromkeys(rep.findings))      # one finding once, however many probes found it
    return rep


def _interface_findings(h: Host, obs: dict[str, Any]) -> list[Finding]:
    """Only what the lab made, addresses as declared, the sniffer's port passive; the management LAN's hosts."""
    out: list[Finding] = []
    want = {i.ifname: i for i in h.interfaces}
    for itf in obs.get("interfaces", []):
        name = itf["name"]
        if name == "lo":
            continue
        if name not in want:
            out.append(Finding("interfaces", h.name, False, f"unexpected interface {name} (not made by the lab)"))
            continue
        decl = want[name]
        v4 = [a for a in itf["addrs"] if ":" not in a]
        v6 = [a for a in itf["addrs"] if ":" in a]
        if decl.mirror:
            sends = itf.get("tx_packets") or 0
            ok = not itf["addrs"] and "NOARP" in itf["flags"] and sends == 0
            out.append(Finding("sniffer-passive", h.name, ok,
                               f"{name}: addresses {itf['addrs'] or 'none'}, "
                               f"{'ARP off' if 'NOARP' in itf['flags'] else 'ARP ON'}, sent {sends} packets"))
        elif v4 != [decl.address] or v6:
            own = ipaddress.ip_network(decl.address, strict=False) if decl.address else None
            crossing = [a for a in v4 if own is None or ipaddress.ip_interface(a).ip not in own]  # another LAN's
            out.append(Finding("addresses", h.name, False, f"{name} has {itf['addrs']}, declared {decl.address}"
                               + (f": {', '.join(crossing)} is not on its LAN" if crossing else ""),
                               "leak" if crossing else "broken"))
    missing = set(want) - {i["name"] for i in obs.get("interfaces", [])}
    if missing:
        out.append(Finding("interfaces", h.name, False, f"missing {', '.join(sorted(missing))}", "broken"))
    if h.on("management") and h.role not in ("admin-server", "blade"):
        out.append(Finding("management", h.name, False, f"a {h.role} is on the management LAN"))
    return out


def _forwarding_finding(h: Host, sc: dict[str, Any]) -> Finding:
    """Forwarding: only the gateway, and only between experimental interfaces."""
    if h.forwarding:
        bad = [n for n, v in sc.get("conf", {}).items()
               if v == "1" and n not in ("lo", "all", "default") and not n.startswith("exp")]
        return Finding("forwarding", h.name, not bad, f"forwarding on {', '.join(bad)}" if bad else
                       "forwards between experimental subnets only")
    on = sc.get("ip_forward") == "1" or any(v == "1" for v in sc.get("conf", {}).values())
    return Finding("forwarding", h.name, not on, "forwarding is ON (only the gateway may forward)" if on else "off")


def _route_findings(h: Host, obs: dict[str, Any], forwarders: dict[str | None, Host],
                    lab_nets: list[Any]) -> list[Finding]:
    """Routes: only to lab subnets, next hops only lab forwarders."""
    out: list[Finding] = []
    for r in obs.get("routes", []):
        if r.get("table") == "local" or r.get("type") in ("local", "broadcast"):
            continue
        dst, via = r.get("dst", ""), r.get("gateway")
        if via and via not in forwarders:
            out.append(Finding("routes", h.name, False, f"route to {dst} via {via}, which is not the lab's gateway"))
        elif dst != "default" and not via:
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
            if not any(net.subnet_of(n) for n in lab_nets):
                out.append(Finding("routes", h.name, False, f"route to {dst} outside the lab's networks"))
    return out


def _uplink_findings(h: Host, obs: dict[str, Any], forwarders: dict[str | None, Host],
                     observed: dict[str, dict[str, Any]]) -> list[Finding]:
    """Uplink: routing lookups must fail here, or at the lab gateway they lead to."""
    out: list[Finding] = []
    for rg in obs.get("route_get", []):
        if not rg["ok"]:
            continue
        gw = forwarders.get(rg.get("via") or "")
        gw_obs = observed.get(gw.name, {}) if gw else {}
        beyond = next((x for x in gw_obs.get("route_get", []) if x["addr"] == rg["addr"]), None)
        if gw is None or beyond is None or beyond["ok"]:
            out.append(Finding("uplink", h.name, False,
                               f"has a route towards the machine's uplink address {rg['addr']} "
                               f"(via {rg.get('via') or rg.get('dev')})"))
    return out or [Finding("uplink", h.name, True, "no route to the machine's uplink")]


def _probe_findings(h: Host, obs: dict[str, Any]) -> list[Finding]:
    """The probes: nothing answers from LANs the host is not on; its own LANs and the admin server do."""
    out: list[Finding] = []
    probes = obs.get("probes", [])
    leaks = [p for p in probes if p["expect"] == "unreachable" and p["result"] != "unreachable"]
    broken = [p for p in probes if p["expect"] == "reachable" and p["result"] == "unreachable"]
    for p in leaks:
        out.append(Finding("isolation", h.name, False,
                           f"reaches {p['segment']} address {p['addr']} ({p['result']}); it must not"))
    for p in broken:
        out.append(Finding("connectivity", h.name, False,
                           f"cannot reach {p['segment']} address {p['addr']} ({p['detail']})", "broken"))
    fr = obs.get("frames") or {}
    for e in fr.get("errors", [])[:1]:
        out.append(Finding("isolation", h.name, False, f"could not send its experimental-side probes: {e}", "broken"))
    if obs.get("beacon", "ok") != "ok":
        out.append(Finding("forwarding", h.name, False, f"could not check in with the gateway's watch "
                           f"({obs['beacon']}): its frames through the gateway went unobserved", "broken"))
    n_unreach = sum(1 for p in probes if p["expect"] == "unreachable")
    if not leaks:
        out.append(Finding("isolation", h.name, True, f"{n_unreach} probes of LANs it is not on"
                           + (f", {fr['sent']} frames to control addresses from its experimental side" if fr else "")
                           + ": none answered"))
    if not broken:
        out.append(Finding("connectivity", h.name, True, "reaches its own LANs and the admin server"))
    return out


def _filter_finding(host: str, expected: tuple[isolation.Chain, ...], nft: dict[str, Any]) -> Finding:
    """The host's table as loaded, against the one the lab installed."""
    table = f"table inet {isolation.TABLE}"
    if nft.get("missing"):
        return Finding("filter", host, False, f"{table} is MISSING")
    if "json" not in nft:
        return Finding("filter", host, False, f"{table} could not be read: {nft.get('error', 'no answer')}")
    diffs = isolation.differences(expected, isolation.loaded(nft["json"]))
    if diffs:
        return Finding("filter", host, False, f"{table} is not the one the lab installed: " + "; ".join(diffs))
    n = sum(len(c.rules) for c in expected)
    return Finding("filter", host, True, f"{table} is the one the lab installed ({n} rules)")


def _answered_findings(observed: dict[str, dict[str, Any]]) -> list[Finding]:
    """Frames from an experimental side that were answered: on-link, the answering host leaks (named with the
    address and who reached it); through the gateway, the gateway forwards."""
    by: dict[tuple[str, str, str, str], list[str]] = {}
    for prober, obs in sorted(observed.items()):
        for a in (obs.get("frames") or {}).get("answered", []):
            by.setdefault((a["host"], a["via"], a["segment"], a["addr"]), []).append(
                f"{prober}/{a['dev']} ({a.get('detail', 'answered')})")
    out = []
    for (host, via, segment, addr), who in sorted(by.items()):
        more = f" and {len(who) - 3} more" if len(who) > 3 else ""
        if via == "on-link":
            out.append(Finding("isolation", host, False, f"its {segment} address {addr} answers on the experimental "
                               f"LAN: on-link from {', '.join(who[:3])}{more}"))
        else:
            out.append(Finding("forwarding", host, False, f"forwards from the experimental LAN to {segment} address "
                               f"{addr}, which answered: from {', '.join(who[:3])}{more}"))
    return out


def _watch_findings(gateway: str, w: dict[str, Any]) -> list[Finding]:
    out = []
    if w.get("seen_total"):
        eg = w["seen"][0]
        out.append(Finding("forwarding", gateway, False,
                           f"{w['seen_total']} packet(s) from the experimental LAN crossed its control interfaces "
                           f"while every host sent towards them, e.g. {eg['src']} -> {eg['dst']} "
                           f"{'out of' if eg['dir'] == 'out' else 'into'} {eg['iface']} (proto {eg['proto']}, "
                           f"port {eg['dport']})"))
    for e in w.get("errors", [])[:1]:
        out.append(Finding("forwarding", gateway, False, f"could not watch its control interfaces: {e}", "broken"))
    if w.get("heard", 0) < w.get("expected", 0):
        out.append(Finding("forwarding", gateway, False, f"its watch heard from {w['heard']} of {w['expected']} "
                           "hosts sending through it; the others' frames went unobserved", "broken"))
    elif not out:
        out.append(Finding("forwarding", gateway, True, f"nothing from {w['expected']} hosts' frames towards the "
                           "control LANs came out on its control interfaces"))
    return out


# ---------------------------------------------------------------- running (I/O)


def uplinks_from(route_json: str, addr_json: str) -> list[str]:
    """Default gateways and global IPv4 addresses from `ip -4 -j route show default` / `ip -4 -j addr show
    scope global` output."""
    out: list[str] = []
    for x in json.loads(route_json or "[]"):
        if x.get("gateway"):
            out.append(x["gateway"])
    for a in json.loads(addr_json or "[]"):
        out += [x["local"] for x in a.get("addr_info", []) if x.get("family") == "inet"]
    return sorted(set(out))


def machine_uplinks(argv_prefix: list[str] | None = None) -> list[str]:
    """The root namespace's default gateways and global addresses: what no lab host may have a route to. With
    argv_prefix (a Provider.remote_shells entry), those of that machine."""
    from orchestrator.localrun import run

    pre = argv_prefix or []

    def ip(*args: str) -> str:
        argv = [*pre, shlex.join(["ip", *args])] if pre else ["ip", *args]
        r = run(argv, timeout=15)
        return r.stdout if r.ok else ""

    return uplinks_from(ip("-4", "-j", "route", "show", "default"), ip("-4", "-j", "addr", "show", "scope", "global"))


def run_check(provider: Provider, lab: Lab) -> CheckReport:
    # this machine's uplinks and those of every other machine the lab runs on (a remote hypervisor's)
    uplinks = sorted({u for pre in [None, *provider.remote_shells(lab.name)] for u in machine_uplinks(pre)})
    plans = plan(lab, uplinks, beacon_port=secrets.SystemRandom().randrange(40000, 50000))
    underlay = audit_underlay.Watch(provider, lab)       # a lab on several machines: its underlay, watched

    def one(host: str, p: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        timeout = 30 + (p["watch"]["deadline"] if "watch" in p else BEACON_WAIT if "beacon" in p else 0)
        python = provider.host_vars(lab.name, lab.host(host))["testbed_python"]
        res = provider.exec(lab.name, host, probe_argv(python), input=json.dumps(p) + "\n" + PROBE_SRC,
                            timeout=timeout)
        if not res.ok:
            return host, {"error": (res.stderr.strip().splitlines() or [f"exit {res.exit_code}"])[-1]}
        try:
            return host, json.loads(res.stdout)
        except ValueError:
            return host, {"error": "probe printed no JSON"}

    order = sorted(plans, key=lambda h: "watch" not in plans[h])      # the gateway's watch opens first
    with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL, len(order)))) as pool:
        observed = dict(pool.map(lambda h: one(h, plans[h]), order))
        # an address that should answer and did not within PROBE_TIMEOUT gets one longer try before it is
        # called broken; a leak probe (connect or frame) is never retried: an answer there is a leak however late
        retry = {}
        for h, o in observed.items():
            slow = [{k: v for k, v in p.items() if k not in ("result", "detail")} for p in o.get("probes", [])
                    if p["expect"] == "reachable" and p.get("detail") == "timeout"]
            if slow:
                retry[h] = {"probes": slow, "timeout": RETRY_TIMEOUT, "uplinks": [], "nft": False,
                            "machine_boot_id": plans[h]["machine_boot_id"]}
        for h, again in pool.map(lambda h: one(h, retry[h]), list(retry)):
            if "error" in again:
                continue
            redone = {p["addr"]: p for p in again.get("probes", [])}
            observed[h]["probes"] = [redone.get(p["addr"], p) if p["expect"] == "reachable" else p
                                     for p in observed[h]["probes"]]
    rep = evaluate(lab, observed)
    rep.findings += [Finding(*f) for f in underlay.finish()]
    return rep

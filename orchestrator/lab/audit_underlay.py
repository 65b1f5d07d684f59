"""`testbed check` on a lab placed on several machines: the underlay that joins them (Provider.underlays).

While every host probes (audit.py), each machine's underlay link is captured, and so is this machine's root
namespace: on the underlay nothing may pass but the lab's VXLAN between its own VTEPs (and ARP between them),
and the VXLAN must have carried the probes of hosts on other machines; in the root namespace nothing of the
lab's — its VXLAN port, its underlay's addresses — may be seen at all. Then each underlay
namespace is read: only its link and loopback, only its own VTEP address, no route but the link's subnet, no
forwarding, and its nftables table dropping everything but that VXLAN, both ways. Judging is pure (`judge`);
`Watch` does the I/O (tcpdump, ip, nft, sysctl through the provider's argv prefixes).
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.labfile.topology import Lab
from orchestrator.localrun import run
from orchestrator.providers.base import Provider, Underlay

LISTEN_WAIT = 10.0        # how long a capture may take to start listening


def leak_filter(u: Underlay) -> str:
    """What is *not* the lab's VXLAN between its VTEPs nor ARP between them: any frame it passes is a leak."""
    src = " or ".join(f"src host {v}" for v in u.vteps)
    dst = " or ".join(f"dst host {v}" for v in u.vteps)
    return f"not ((udp dst port {u.port} and ({src}) and ({dst})) or (arp and ({src}) and ({dst})))"


def root_filter(underlays: list[Underlay]) -> str:
    """What of the lab's would show in the machine's root namespace: its VXLAN, its underlay's addresses. (Not
    its hosts' MACs or LAN addresses: `-i any` captures cooked frames, without Ethernet addresses, and other
    labs' libvirt bridges in the root namespace may use the same LAN subnets.)"""
    parts = [f"udp port {p}" for p in sorted({u.port for u in underlays})]
    parts += [f"net {s}" for s in sorted({u.subnet for u in underlays})]
    return " or ".join(parts)


@dataclass
class Seen:
    """What one capture saw: every packet its filter passed, as tcpdump printed them (first few kept)."""
    where: str
    total: int = 0
    vxlan: int = 0
    leaks: int = 0
    examples: list[str] = field(default_factory=list)
    error: str = ""


def judge(lab: Lab, underlays: list[Underlay], seen: list[Seen], static: dict[int, dict[str, Any]],
          root: Seen) -> list[tuple[str, str, bool, str, str]]:
    """(check, where, ok, detail, kind) for every underlay and the root namespace. Pure."""
    out: list[tuple[str, str, bool, str, str]] = []
    for u, s in zip(underlays, seen, strict=True):
        where = f"underlay.m{u.machine}"
        if s.error:
            out.append(("underlay", where, False, f"could not capture {u.iface}: {s.error}", "broken"))
        elif s.leaks:
            out.append(("underlay", where, False, f"{s.leaks} packet(s) on {u.iface} that are not the lab's VXLAN "
                        f"between its VTEPs, e.g. {s.examples[0] if s.examples else '?'}", "leak"))
        elif not s.vxlan:
            out.append(("underlay", where, False, f"no VXLAN crossed {u.iface} while every host probed: the "
                        "stretched LANs carried nothing", "broken"))
        else:
            out.append(("underlay", where, True, f"{s.vxlan} VXLAN packets between the lab's VTEPs on {u.iface}, "
                        "nothing else", "leak"))
        out += _static_findings(u, where, static.get(u.machine, {}))
    if root.error:
        out.append(("root-namespace", "machine", False, f"could not capture the root namespace: {root.error}",
                    "broken"))
    else:
        out.append(("root-namespace", "machine", root.total == 0,
                    "nothing of the lab's (its VXLAN, its underlay's addresses) in the machine's root namespace" if not
                    root.total else f"{root.total} packet(s) of the lab's in the machine's root namespace, e.g. "
                    f"{root.examples[0] if root.examples else '?'}", "leak"))
    return out


def _static_findings(u: Underlay, where: str, st: dict[str, Any]) -> list[tuple[str, str, bool, str, str]]:
    """An underlay namespace as read: its interfaces and address, its routes, forwarding, its filter."""
    if "error" in st:
        return [("underlay", where, False, f"could not read the underlay namespace: {st['error']}", "broken")]
    out = []
    mine = u.vteps[u.machine]
    prefix = ipaddress.ip_network(u.subnet).prefixlen
    ifs = {i["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in i.get("addr_info", []) if a.get("family") == "inet"]
           for i in st.get("addrs", [])}
    extra = sorted(set(ifs) - {"lo", u.iface})
    bad_addr = ifs.get(u.iface) != [f"{mine}/{prefix}"]
    out.append(("underlay-interfaces", where, not extra and not bad_addr,
                f"unexpected interface(s) {', '.join(extra)}" if extra else
                f"{u.iface} has {ifs.get(u.iface)}, declared {mine}/{prefix}" if bad_addr else
                f"only lo and {u.iface} ({mine}/{prefix})", "leak"))
    routes = [r.get("dst", "") for r in st.get("routes", [])]
    out.append(("underlay-routes", where, routes == [u.subnet],
                f"routes {routes}; only {u.subnet} may be known (nothing is routed between machines)", "leak"))
    fwd = st.get("ip_forward")
    out.append(("underlay-forwarding", where, fwd == "0", "forwarding off" if fwd == "0" else
                f"forwarding is {fwd!r} (nothing may be forwarded on the underlay)", "leak"))
    chains = {c["name"]: c.get("policy") for c in st.get("chains", [])}
    want = {"input": "drop", "output": "drop", "forward": "drop"}
    ok = chains == want and st.get("accepts") == 2
    out.append(("underlay-filter", where, ok, f"table inet {u.table}: chains {chains or 'MISSING'}, "
                f"{st.get('accepts', 0)} accept rules besides loopback" + ("" if ok else
                f" (want {want} and only the VTEPs' VXLAN accepted)"), "leak"))
    return out


def read_static(u: Underlay) -> dict[str, Any]:
    """The underlay namespace's addresses, routes, forwarding and nftables table, read there."""
    def sh(*argv: str) -> str:
        r = run([*u.argv, *argv], timeout=15)
        if not r.ok:
            raise OSError(f"{' '.join(argv)}: {r.stderr.strip()[-200:]}")
        return r.stdout
    try:
        addrs = json.loads(sh("ip", "-4", "-j", "addr", "show") or "[]")
        routes = json.loads(sh("ip", "-4", "-j", "route", "show") or "[]")
        fwd = sh("sysctl", "-n", "net.ipv4.ip_forward").strip()
        r = run([*u.argv, "nft", "-j", "list", "table", "inet", u.table], timeout=15)
        items = json.loads(r.stdout).get("nftables", []) if r.ok else []
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}
    chains = [x["chain"] for x in items if "chain" in x]
    accepts = sum(1 for x in items if "rule" in x and any("accept" in e for e in x["rule"].get("expr", []))
                  and '"lo"' not in json.dumps(x["rule"].get("expr", [])))
    return {"addrs": addrs, "routes": routes, "ip_forward": fwd, "chains": chains, "accepts": accepts}


class Capture:
    """tcpdump on one interface (or `any`) with a filter, into a file, until stopped; then counted."""

    def __init__(self, where: str, argv: list[str], iface: str, flt: str, out: Path, bound_s: float):
        self.where, self.out, self.error = where, out, ""
        # -Z root: Debian's tcpdump drops to its own user, who may not write into our private directory;
        # `timeout`: bounded even if the check dies before it stops the capture (it passes SIGINT on)
        self.p = subprocess.Popen([*argv, "timeout", f"{bound_s:.0f}", "tcpdump", "-Z", "root", "-i", iface, "-nn", "-p",
                                   "--immediate-mode", "-U", "-w", str(out),
                                   *([flt] if flt else [])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._listening()

    def _listening(self) -> None:
        assert self.p.stderr is not None
        fd, deadline, said = self.p.stderr.fileno(), time.monotonic() + LISTEN_WAIT, b""
        while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            said += chunk
            if b"listening on" in said:
                return
            if not chunk:       # tcpdump ended
                break
        last = said.decode(errors="replace").strip().splitlines()[-1:] or ["no word from it"]
        self.error = f"tcpdump did not start listening: {last[0]}"

    def stop(self, vxlan_port: int | None = None, leaks: str | None = None) -> Seen:
        seen = Seen(self.where, error=self.error)
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=5)
        if seen.error or not self.out.exists():
            seen.error = seen.error or "no capture file"
            return seen

        def read(flt: str | None) -> list[str]:
            r = run(["tcpdump", "-r", str(self.out), "-nn", *([flt] if flt else [])], timeout=60)
            return r.stdout.splitlines() if r.ok else []
        every = read(None)
        seen.total = len(every)
        seen.examples = every[:3]
        if vxlan_port is not None:
            seen.vxlan = len(read(f"udp dst port {vxlan_port}"))
        if leaks is not None:
            bad = read(leaks)
            seen.leaks, seen.examples = len(bad), bad[:3]
        return seen


class Watch:
    """Started before the hosts probe, finished after: the underlay and root-namespace captures, then the
    underlay namespaces read. Nothing at all for a lab on one machine."""

    def __init__(self, provider: Provider, lab: Lab):
        self.lab, self.underlays = lab, provider.underlays(lab.name)
        self.caps: list[Capture] = []
        self.root: Capture | None = None
        self.tmp: Path | None = None
        if not self.underlays:
            return
        self.tmp = Path(tempfile.mkdtemp(prefix="wt-underlay-"))
        bound = 600 + 1.0 * len(lab.hosts)       # far beyond the check's own time (237 s at 1,000 hosts)
        self.caps = [Capture(f"underlay.m{u.machine}", u.argv, u.iface, "", self.tmp / f"m{u.machine}.pcap", bound)
                     for u in self.underlays]
        self.root = Capture("root", [], "any", root_filter(self.underlays), self.tmp / "root.pcap", bound)

    def finish(self) -> list[tuple[str, str, bool, str, str]]:
        if not self.underlays or self.root is None or self.tmp is None:
            return []
        try:
            seen = [c.stop(u.port, leak_filter(u)) for c, u in zip(self.caps, self.underlays, strict=True)]
            root = self.root.stop()
            static = {u.machine: read_static(u) for u in self.underlays}
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return judge(self.lab, self.underlays, seen, static, root)

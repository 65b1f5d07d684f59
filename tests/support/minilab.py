"""A tiny namespace lab for component tests (worm, throttle, capture) that need real hosts but not a lab file.

MiniLab(hosts={"a": ["lan1"], "gw": ["lan1", "lan2"], "t": ["lan2"]}, lans={"lan1": "198.18.201.0/24", ...},
gateway="gw") builds one namespace per host, one bridge per LAN inside a switch namespace the MiniLab owns,
veth pairs (host side named after the LAN, e.g. `lan1`), addresses in order of declaration (.1 is the first
host on the LAN), a default route via the gateway (when given) and forwarding on the gateway only.
Every name starts with a random prefix, and `close()` kills the processes it started and deletes exactly the
namespaces it made. Nothing is created in the root namespace.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

import pytest

MINILAB_NETS = ("198.18.201.0/24", "198.18.202.0/24", "198.18.203.0/24", "198.18.204.0/24")


def have_netns() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "needs root (network namespaces)"
    name = f"wtprobe{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return True, ""


def require_netns() -> None:
    ok, why = have_netns()
    if not ok:
        pytest.skip(why)


class MiniLab:
    def __init__(self, hosts: Mapping[str, Sequence[str]], lans: Mapping[str, str] | None = None,
                 gateway: str | None = None):
        lan_names = sorted({lan for lst in hosts.values() for lan in lst})
        if lans is None:
            lans = {lan: MINILAB_NETS[i] for i, lan in enumerate(lan_names)}
        self.prefix = f"wtm{secrets.token_hex(3)}"
        self.lans = {k: ipaddress.ip_network(v) for k, v in lans.items()}
        self.hosts = {h: list(v) for h, v in hosts.items()}
        self.gateway = gateway
        self.addrs: dict[str, dict[str, str]] = {h: {} for h in hosts}
        self._procs: list[subprocess.Popen] = []
        self._made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def addr(self, host: str, lan: str | None = None) -> str:
        lan = lan or self.hosts[host][0]
        return self.addrs[host][lan]

    def _ip(self, *args: str, ns: str | None = None) -> None:
        argv = ["ip", *(["-n", ns] if ns else []), *args]
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")

    def _build(self) -> None:
        for ns in [self.switch, *(self.ns(h) for h in self.hosts)]:
            self._ip("netns", "add", ns)
            self._made.append(ns)
            self._ip("link", "set", "lo", "up", ns=ns)
        for lan in self.lans:
            self._ip("link", "add", f"br-{lan}", "type", "bridge", ns=self.switch)
            self._ip("link", "set", f"br-{lan}", "up", ns=self.switch)
        counters = {lan: 0 for lan in self.lans}
        for i, (host, lans) in enumerate(self.hosts.items()):
            for lan in lans:
                counters[lan] += 1
                port = f"p{i}-{lan}"[:15]
                self._ip("link", "add", "name", lan, "netns", self.ns(host), "type", "veth",
                         "peer", "name", port, "netns", self.switch)
                self._ip("link", "set", port, "master", f"br-{lan}", "up", ns=self.switch)
                net = self.lans[lan]
                a = net.network_address + counters[lan]
                self.addrs[host][lan] = str(a)
                self._ip("addr", "add", f"{a}/{net.prefixlen}", "dev", lan, ns=self.ns(host))
                self._ip("link", "set", lan, "up", ns=self.ns(host))
        if self.gateway:
            self.run(self.gateway, ["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
            for host, lans in self.hosts.items():
                if host != self.gateway:
                    shared = [lan for lan in lans if lan in self.hosts[self.gateway]]
                    if shared:
                        self._ip("route", "add", "default", "via", self.addrs[self.gateway][shared[0]],
                                 ns=self.ns(host))
        self._wait_carrier()

    def _wait_carrier(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for host, lans in self.hosts.items():
            for lan in lans:
                path = "/sys/class/net/{}/carrier"
                while True:
                    r = self.run(host, ["cat", path.format(lan)])
                    if r.stdout.strip() == "1" or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)

    def run(self, host: str, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(["ip", "netns", "exec", self.ns(host), *argv], capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{host}: {' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
        return r

    def popen(self, host: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *argv], **kw)
        self._procs.append(p)
        return p

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()

    def __enter__(self) -> MiniLab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

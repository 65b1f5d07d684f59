"""Safety interlocks: which addresses the worm may ever touch, and whether this host is inside a lab at all.

Range interlocks (pure): lab ranges must lie in the benchmark block 198.18.0.0/15; the allow-list must lie
inside the lab ranges; targets inside the allow-list; `TargetGuard` re-checks every single target before its socket is
created. Environment interlocks: not in the machine's root network namespace (unless this is a VM provisioned
as a lab guest), no default route or gateway outside the lab ranges, and no route to the outside world. Only
`--i-know-this-is-not-a-lab` (for tests) bypasses the environment checks; nothing bypasses the range checks.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .addrs import AddressSet, ip_str, parse_cidr
from .errors import InterlockError

OVERRIDE_FLAG = "--i-know-this-is-not-a-lab"

# The only block a lab may use: RFC 2544 benchmark space, as the testbed's labs do. Never public space, and
# never private space either (RFC 1918, RFC 6598): that is where real networks live.
LAB_BLOCKS_TEXT = ("198.18.0.0/15",)
LAB_BLOCKS = AddressSet(parse_cidr(c) for c in LAB_BLOCKS_TEXT)

# Route look-ups only (a UDP connect() sends nothing): documentation addresses stand for "the outside".
PROBES_V4 = ("203.0.113.1", "198.51.100.1")
PROBES_V6 = ("2001:db8::1",)
LAB_GUEST_MARKER = "/etc/testworm/lab-guest"

RTF_GATEWAY = 0x0002
RTF_REJECT = 0x0200


# ---------------------------------------------------------------- range interlocks (pure)

def check_lab_ranges(lab: AddressSet) -> None:
    bad = lab.outside(LAB_BLOCKS)
    if bad is not None:
        raise InterlockError(
            f"lab range {', '.join(lab.cidrs())} reaches {ip_str(bad)}, outside the blocks a lab may use "
            f"({', '.join(LAB_BLOCKS_TEXT)})")


def check_allow(allow: AddressSet, lab: AddressSet) -> None:
    if not allow:
        raise InterlockError("the allow-list is empty")
    bad = allow.outside(lab)
    if bad is not None:
        raise InterlockError(f"the allow-list reaches {ip_str(bad)}, outside the lab ranges "
                             f"{', '.join(lab.cidrs())}")


def check_targets(targets: AddressSet, allow: AddressSet, what: str = "targets") -> None:
    if not targets:
        raise InterlockError(f"{what}: no targets")
    bad = targets.outside(allow)
    if bad is not None:
        raise InterlockError(f"{what}: {ip_str(bad)} is not inside the allow-list {', '.join(allow.cidrs())}")


class TargetGuard:
    """Called for every target before anything is created for it; raises InterlockError when outside."""

    __slots__ = ("allow",)

    def __init__(self, allow: AddressSet):
        self.allow = allow

    def __call__(self, addr: int) -> None:
        if addr not in self.allow:
            raise InterlockError(f"target {ip_str(addr)} is outside the allow-list: refusing to touch it")


# ---------------------------------------------------------------- environment interlocks

@dataclass
class Route:
    iface: str
    dest: int
    gateway: int
    flags: int
    mask: int


@dataclass
class Environment:
    own_netns: tuple[int, int] | None
    root_netns: list[tuple[int, int]]
    lab_guest: bool
    routes_v4: list[Route]
    defaults_v6: list[str]
    probes: dict[str, str | None] = field(default_factory=dict)  # probe address → source chosen, None = no route


def parse_route_table(text: str, byteorder: Literal["little", "big"] = sys.byteorder) -> list[Route]:
    """/proc/net/route → routes (addresses as ints in network order)."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        def a(h: str) -> int:
            return int.from_bytes(bytes.fromhex(h), byteorder)
        out.append(Route(f[0], a(f[1]), a(f[2]), int(f[3], 16), a(f[7])))
    return out


def parse_ipv6_defaults(text: str) -> list[str]:
    """Devices of usable ::/0 routes in /proc/net/ipv6_route (reject routes and loopback ignored)."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 10 or f[1] != "00" or f[0] != "0" * 32:
            continue
        if int(f[8], 16) & RTF_REJECT or f[9] == "lo":
            continue
        out.append(f[9])
    return out


def environment_problems(env: Environment, lab: AddressSet) -> list[str]:
    """Why this host does not look like a lab host (empty list: it does). Pure."""
    problems = []
    if not env.lab_guest:
        if env.own_netns is None or not env.root_netns:
            problems.append("cannot tell whether this is the machine's root network namespace "
                            "(/proc/self/ns/net, /proc/1/ns/net and kthreadd's are unreadable)")
        elif env.own_netns in env.root_netns:
            problems.append("this is the machine's root network namespace")
    for r in env.routes_v4:
        if r.flags & RTF_REJECT or r.iface == "lo":
            continue
        if r.flags & RTF_GATEWAY and r.gateway not in lab:
            problems.append(f"route {ip_str(r.dest)}/{bin(r.mask).count('1')} via {ip_str(r.gateway)} "
                            f"(dev {r.iface}): gateway outside the lab ranges")
        elif not r.flags & RTF_GATEWAY and r.dest == 0 and r.mask == 0:
            problems.append(f"default route on dev {r.iface} (no lab gateway)")
    for dev in env.defaults_v6:
        problems.append(f"IPv6 default route on dev {dev}")
    for probe, src in env.probes.items():
        if src is None:
            continue
        if ":" in probe:
            problems.append(f"an IPv6 route to the outside exists ({probe} from {src})")
        elif int.from_bytes(socket.inet_aton(src), "big") not in lab:
            problems.append(f"a route to the outside exists ({probe} from {src}, outside the lab ranges)")
    return problems


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_kthreadd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    comm = data[data.index(b"(") + 1:data.rindex(b")")]
    ppid = data[data.rindex(b")") + 2:].split()[1]
    return comm == b"kthreadd" and ppid == b"0"


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _lab_guest(marker: str = LAB_GUEST_MARKER) -> bool:
    """A VM provisioned as a lab guest: a root-owned, not group/other-writable marker file on a CPU that
    reports a hypervisor. (Its routes are still checked.)"""
    try:
        st = os.stat(marker)
    except OSError:
        return False
    if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False
    return any(line.startswith("flags") and " hypervisor" in line
               for line in _read("/proc/cpuinfo").splitlines())


def _probe(family: int, addr: str) -> str | None:
    try:
        s = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:  # e.g. IPv6 disabled in this kernel: then there is no IPv6 route either
        return None
    try:
        s.connect((addr, 9))  # a route look-up: nothing is sent by connect() on a datagram socket
        return s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()


def read_environment(probe: bool = True) -> Environment:
    roots = [i for i in (_ns_id("/proc/1/ns/net"),) if i is not None]
    if _is_kthreadd(2):  # kernel threads always live in the initial namespaces
        k = _ns_id("/proc/2/ns/net")
        if k is not None:
            roots.append(k)
    env = Environment(
        own_netns=_ns_id("/proc/self/ns/net"), root_netns=roots, lab_guest=_lab_guest(),
        routes_v4=parse_route_table(_read("/proc/net/route")),
        defaults_v6=parse_ipv6_defaults(_read("/proc/net/ipv6_route")))
    if probe:
        env.probes = {a: _probe(socket.AF_INET, a) for a in PROBES_V4}
        if socket.has_ipv6:
            env.probes.update({a: _probe(socket.AF_INET6, a) for a in PROBES_V6})
    return env


def check_environment(lab: AddressSet, *, override: bool = False,
                      read: Callable[[bool], Environment] = read_environment,
                      warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> list[str]:
    """Raise InterlockError unless this host looks like a lab host. With the test override, return the
    problems that were overridden (after warning about them). The cheap file checks run before the route
    probes, so a refusal in the root namespace happens before any socket exists."""
    problems = environment_problems(read(False), lab)
    if not problems:
        problems = environment_problems(read(True), lab)
    if problems and not override:
        raise InterlockError("refusing to run outside a lab: " + "; ".join(problems)
                             + f" (tests only: {OVERRIDE_FLAG})")
    if problems:
        warn(f"testworm: WARNING: lab interlocks overridden ({OVERRIDE_FLAG}): " + "; ".join(problems))
    return problems

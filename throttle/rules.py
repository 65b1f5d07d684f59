"""The daemon's iptables rules: one chain of its own plus one jump from OUTPUT (host), FORWARD (gateway), or
FORWARD matched on the bridge port a host's frames enter by (wire: bridge netfilter, `-m physdev`),
every rule tagged with a comment marker, installed and removed atomically with `iptables-restore --noflush`.

Exactly one set exists at any time: installing first removes every tagged rule (a stale set left by a
SIGKILLed daemon) in the same transaction, unless the daemon named in the stale tag is still alive in this
network namespace — then installing is refused rather than stealing its traffic.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .core import ThrottleError

MARKER = "wtb-throttle"
CHAIN = "WTB-THROTTLE"
HOOKS = {"host": "OUTPUT", "gateway": "FORWARD", "wire": "FORWARD"}


@dataclass(frozen=True)
class Tag:
    """Whose rules: the comment marker every rule carries, the chain of its own, the word a live owner's
    command line contains, and its name in messages. Other mechanisms (mechanisms/trw) pass their own."""

    marker: str
    chain: str
    owner: bytes
    what: str

    @property
    def pid_re(self) -> re.Pattern:
        return re.compile(re.escape(self.marker) + r" pid=(\d+)")


THROTTLE = Tag(MARKER, CHAIN, b"throttle", "throttle")


class RuleError(ThrottleError):
    """iptables is missing or refused."""


class RulesOwnedError(RuleError):
    """Another throttle daemon, still alive in this network namespace, owns the rules (left untouched)."""


@dataclass(frozen=True)
class RuleSpec:
    mode: str
    queue_num: int
    protocols: tuple[str, ...] = ("tcp", "udp")
    interface: str | None = None
    fail_closed: bool = False
    pid: int = 0

    def lines(self) -> list[str]:
        """The rules as iptables-restore lines (without table header/COMMIT)."""
        tag = f"{MARKER} pid={self.pid} q={self.queue_num} mode={self.mode}"
        comment = f'-m comment --comment "{tag}"'
        target = f"-j NFQUEUE --queue-num {self.queue_num}" + ("" if self.fail_closed else " --queue-bypass")
        out = [f":{CHAIN} - [0:0]"]
        for proto in self.protocols:
            match = "-p tcp --syn" if proto == "tcp" else "-p udp"
            out.append(f"-A {CHAIN} {match} -m conntrack --ctstate NEW {comment} {target}")
        hook = HOOKS[self.mode]
        if self.mode == "host":
            iface = f"-o {self.interface}" if self.interface else "! -o lo"
        elif self.mode == "wire":       # frames a host sends into a bridge, seen by bridge netfilter
            iface = f"-m physdev --physdev-in {self.interface}"
        else:
            iface = f"-i {self.interface}" if self.interface else ""
        out.append(f"-I {hook} 1 {iface} {comment} -j {CHAIN}".replace("  ", " "))
        return out


def _run(argv: Sequence[str], input: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RuleError(f"{argv[0]} not found: install iptables (iptables-nft or legacy)") from None
    except subprocess.TimeoutExpired:
        raise RuleError(f"{' '.join(argv)} did not finish within 30 s") from None


def check_tools() -> None:
    for tool in ("iptables", "iptables-restore"):
        if shutil.which(tool) is None:
            raise RuleError(f"{tool} not found: install iptables (iptables-nft or legacy)")


def _fail(what: str, cp: subprocess.CompletedProcess) -> RuleError:
    detail = (cp.stderr or cp.stdout).strip().splitlines()
    hint = ""
    if any("Permission denied" in d or "you must be root" in d for d in detail):
        hint = " (needs root / CAP_NET_ADMIN)"
    return RuleError(f"{what} failed (exit {cp.returncode}){hint}: {detail[-1] if detail else 'no message'}")


def listing() -> list[str]:
    """`iptables -S` of the filter table."""
    cp = _run(["iptables", "-w", "5", "-t", "filter", "-S"])
    if cp.returncode != 0:
        raise _fail("iptables -S", cp)
    return cp.stdout.splitlines()


def ours(lines: Sequence[str] | None = None, tag: Tag = THROTTLE) -> list[str]:
    """Every rule line (`iptables -S` form) that belongs to a throttle: tagged, or in our chain."""
    lines = listing() if lines is None else lines
    return [ln for ln in lines if tag.marker in ln or ln.split()[:2] in (["-N", tag.chain], ["-A", tag.chain])]


def _netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def live_owner(lines: Sequence[str] | None = None, tag: Tag = THROTTLE) -> int | None:
    """PID of another throttle daemon, alive in this network namespace, that installed the current rules."""
    me = os.getpid()
    here = _netns_inode("self")
    for ln in ours(lines, tag):
        m = tag.pid_re.search(ln)
        if not m:
            continue
        pid = int(m.group(1))
        if pid in (0, me):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ")
        except OSError:
            continue
        if tag.owner in cmd and _netns_inode(pid) == here:
            return pid
    return None


def _removal(lines: Sequence[str], tag: Tag = THROTTLE) -> list[str]:
    out = []
    has_chain = False
    for ln in lines:
        parts = ln.split(None, 2)
        if parts[:2] == ["-N", tag.chain]:
            has_chain = True
        elif parts[0] == "-A" and parts[1] != tag.chain and len(parts) == 3:
            out.append(f"-D {parts[1]} {parts[2]}")
    if has_chain:
        out += [f"-F {tag.chain}", f"-X {tag.chain}"]
    return out


def _restore(body: list[str], what: str) -> None:
    script = "*filter\n" + "\n".join(body) + "\nCOMMIT\n"
    cp = _run(["iptables-restore", "-w", "5", "--noflush"], input=script)
    if cp.returncode != 0:
        raise _fail(what, cp)


class Rules(Protocol):
    """What install() takes: anything that renders its rules as iptables-restore lines (RuleSpec, TRW's)."""

    def lines(self) -> list[str]: ...


def install(spec: Rules, tag: Tag = THROTTLE) -> list[str]:
    """Replace any stale throttle rules with `spec`'s (anything with `lines()`), in one transaction. Returns
    the stale lines removed."""
    check_tools()
    current = listing()
    owner = live_owner(current, tag)
    if owner is not None:
        raise RulesOwnedError(f"another {tag.what} daemon (pid {owner}) is running in this network namespace "
                              "and owns the rules; stop it first")
    stale = ours(current, tag)
    _restore(_removal(stale, tag) + spec.lines(), f"installing the {tag.what}'s iptables rules")
    return stale


def remove(tag: Tag = THROTTLE) -> bool:
    """Remove every throttle rule in this namespace (ours or stale). True when something was removed."""
    current = ours(tag=tag)
    if not current:
        return False
    _restore(_removal(current, tag), f"removing the {tag.what}'s iptables rules")
    return True

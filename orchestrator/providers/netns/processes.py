"""Processes of a namespace lab, seen from this machine: whether one listens (its namespace's /proc table),
signalling only the very process that was recorded (its start time), waiting for them to go, and the
open-files limit a big lab needs."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Set as AbstractSet

from orchestrator.errors import ProviderError
from orchestrator.localrun import pid_start_time
from orchestrator.providers.base import Resource


def tcp_listening(pid: int, address: str, port: int) -> bool:
    """Whether a TCP socket listens on address:port in the network namespace of process `pid`
    (its /proc/PID/net/tcp: addresses in the kernel's byte order, state 0A = LISTEN)."""
    want = f"{struct.unpack('=I', socket.inet_aton(address))[0]:08X}:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/tcp") as fh:
            next(fh, None)
            return any(f[1] == want and f[3] == "0A" for f in (line.split() for line in fh))
    except OSError:
        return False


def signal_if_same(pid: int, starttime: int | None, sig: int) -> bool:
    """Signal pid only if it is still the process we started (same kernel start time)."""
    if starttime is None or pid_start_time(pid) != starttime:
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def wait_gone(pids: dict[int, int | None], timeout: float, kill: bool) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(pid_start_time(p) != st for p, st in pids.items()):
            return
        time.sleep(0.02)
    if kill:
        for p, st in pids.items():
            signal_if_same(p, st, signal.SIGKILL)
        wait_gone(pids, 2.0, kill=False)


def terminate(pids: dict[int, str], removed: list[Resource], already: AbstractSet[int] = frozenset()) -> None:
    """End processes found inside the lab's namespaces: SIGTERM, then SIGKILL after 3 s."""
    known = {p: pid_start_time(p) for p in pids}
    for p, st in known.items():
        if signal_if_same(p, st, signal.SIGTERM) and p not in already:
            removed.append(Resource("process", str(p), True, f"in {pids[p]}"))
    wait_gone(known, 3.0, kill=True)

def raise_open_files(need: int) -> None:
    """This process holds a pipe trio per host while it builds: lift its soft open-file limit to fit (up to the
    hard limit; per-process, so nothing to restore), or refuse with the figure."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise ProviderError(f"building this lab holds up to {need} open files; this process may open {hard}",
                            hint=f"ulimit -n {need} (as root: raise the hard limit, e.g. LimitNOFILE=) — "
                                 "or build a smaller lab")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

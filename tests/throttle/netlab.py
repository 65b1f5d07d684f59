"""Helpers for the daemon tests inside MiniLab namespaces: start/stop the daemon, open connections, sniff.

Everything runs inside namespaces a MiniLab made (addresses in 198.18.0.0/15); every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.minilab import MiniLab

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]


def need_tools(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} is not installed")


class Daemon:
    """`python -m throttle run …` in one lab host; its event log in `events`."""

    def __init__(self, lab: MiniLab, host: str, events: Path, *args: str):
        self.lab, self.host, self.events_path = lab, host, events
        self.p = lab.popen(host, [PY, "-m", "throttle", "run", "--events", str(events), *args], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 15.0) -> dict:
        """Until the config line is written (rules installed, queue bound). Returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise AssertionError(f"daemon exited {self.p.returncode}: {self.p.stderr.read()}")
            for e in self.events():
                if e["event"] == "config" and e["pid"] == self.p.pid:
                    return e
            time.sleep(0.02)
        raise AssertionError("daemon not ready within the timeout")

    def events(self, kind: str | None = None) -> list[dict]:
        if not self.events_path.exists():
            return []
        out = [json.loads(ln) for ln in self.events_path.read_text().splitlines() if ln.strip()]
        return [e for e in out if kind is None or e["event"] == kind]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return self.lab.run(self.host, [PY, "-m", "throttle", *args], timeout=30)

    def status(self) -> dict:
        r = self.cli("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        return self.p.wait(timeout=timeout)


def run_daemon_once(lab: MiniLab, host: str, *args: str, env: dict | None = None,
                    timeout: float = 20.0) -> subprocess.CompletedProcess:
    """A daemon expected to refuse to start: its exit status and stderr."""
    argv = ["ip", "netns", "exec", lab.ns(host)]
    if env:
        argv += ["env", *(f"{k}={v}" for k, v in env.items())]
    return subprocess.run([*argv, PY, "-m", "throttle", "run", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def throttle_rules(lab: MiniLab, host: str) -> list[str]:
    out = lab.run(host, ["iptables", "-S"], check=True).stdout.splitlines()
    return [ln for ln in out if "wtb-throttle" in ln or "WTB-THROTTLE" in ln]


CONNECT = r"""
import json, socket, sys, time
port, gap, hold = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
out, keep = [], []
for d in sys.argv[4:]:
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((d, port))
    except (BlockingIOError, OSError):
        pass
    out.append([d, s.getsockname()[1], time.monotonic(), time.time()])
    keep.append(s)
    if gap:
        time.sleep(gap)
print(json.dumps(out), flush=True)
time.sleep(hold)
"""

SEND_UDP = r"""
import json, socket, sys, time
port, gap = int(sys.argv[1]), float(sys.argv[2])
out = []
for d in sys.argv[3:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"wtb", (d, port))
    out.append([d, s.getsockname()[1], time.monotonic(), time.time()])
    s.close()
    if gap:
        time.sleep(gap)
print(json.dumps(out), flush=True)
"""


def connect(lab: MiniLab, host: str, dsts, port: int = 8080, gap: float = 0.0, hold: float = 0.0) -> list:
    """Non-blocking TCP connects from `host`, one per destination; [dst, sport, t_mono, t_wall] each."""
    r = lab.run(host, [PY, "-c", CONNECT, str(port), str(gap), str(hold), *dsts], timeout=60 + hold)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[0])


def send_udp(lab: MiniLab, host: str, dsts, port: int = 9, gap: float = 0.0) -> list:
    r = lab.run(host, [PY, "-c", SEND_UDP, str(port), str(gap), *dsts], timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


_LINE = re.compile(r"^(\d+\.\d+) IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): (.*)$")


class Sniffer:
    """tcpdump on one interface of one lab host; packets as (t_wall, src, sport, dst, dport, rest)."""

    def __init__(self, lab: MiniLab, host: str, iface: str, bpf: str):
        self.p = lab.popen(host, ["tcpdump", "-i", iface, "-n", "-tt", "-l", "-Q", "in", bpf],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        line = ""
        while "listening on" not in line:
            if time.monotonic() > deadline or self.p.poll() is not None:
                raise AssertionError(f"tcpdump did not start: {line}")
            line = self.p.stderr.readline()

    def stop(self) -> list[tuple]:
        time.sleep(0.2)                       # let the last packets through the capture buffer
        self.p.send_signal(signal.SIGINT)
        out, _ = self.p.communicate(timeout=10)
        pk = []
        for ln in out.splitlines():
            m = _LINE.match(ln)
            if m:
                pk.append((float(m[1]), m[2], int(m[3]), m[4], int(m[5]), m[6]))
        return pk


def add_addresses(lab: MiniLab, host: str, lan: str, first: int, count: int) -> list[str]:
    """Extra addresses on `host`'s LAN interface, so released SYNs have somewhere to go."""
    net = lab.lans[lan]
    base = str(net.network_address).rsplit(".", 1)[0]
    addrs = [f"{base}.{i}" for i in range(first, first + count)]
    lab.run(host, ["ip", "-b", "-"], input="".join(f"addr add {a}/{net.prefixlen} dev {lan}\n" for a in addrs),
            check=True)
    return addrs


def not_root_reason() -> str | None:
    return None if os.geteuid() == 0 else "needs root"

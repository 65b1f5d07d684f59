"""Helpers for the mechanisms' root tests: a three-host MiniLab whose gateway answers an empty address with an
RST (as `testbed`'s gateway does, an nft reject at forward priority 10), the test worm run in a host, and a
tcpdump on the gateway's side of the wire (what left the placement point; nothing the mechanism writes).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.minilab import MiniLab
from tests.throttle.netlab import PY, REPO, Sniffer

TOPO = {"a": ["lan1"], "gw": ["lan1", "lan2"], "t": ["lan2"]}
SCAN_NET = "198.18.204.0/24"          # not on any LAN: routed via the gateway, which answers RST

GATEWAY_RESET = """table inet wtm_gateway {
  chain forward {
    type filter hook forward priority 10; policy accept;
    ip daddr 198.18.204.0/24 meta l4proto tcp reject with tcp reset
  }
}
"""


def gateway_answers_reset(lab: MiniLab) -> None:
    """The scanned range routed on-link behind the gateway (so it reaches the forward hook, not an ICMP
    network unreachable), where the reject answers every SYN with an RST."""
    lab.run("gw", ["ip", "route", "add", SCAN_NET, "dev", "lan2"], check=True)
    lab.run("gw", ["nft", "-f", "-"], input=GATEWAY_RESET, check=True)


def worm_syn_sniffer(lab: MiniLab) -> Sniffer:
    """The worm's SYNs (no ACK) as they reach the gateway from host a."""
    return Sniffer(lab, "gw", "lan1", f"src host {lab.addr('a')} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn")


def run_worm(lab: MiniLab, log: Path, *, rate: float, attempts: int, lifetime: float = 30.0,
             timeout: float = 60.0) -> list[dict]:
    """A sequential TCP scan of SCAN_NET from host a (bounded by attempts and lifetime); its log's lines."""
    r = lab.run("a", [PY, "-m", "testworm", "scan", "--rate", str(rate), "--port", "8080", "--allow", SCAN_NET,
                      "--targets", SCAN_NET, "--log", str(log), "--max-attempts", str(attempts),
                      "--lifetime", str(lifetime), "--start", "198.18.204.1"], timeout=timeout)
    assert r.returncode == 0, r.stderr
    return [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]


def wire_attempts(syns: list[tuple]) -> dict[tuple[str, int], float]:
    """Distinct worm attempts on the wire, (dst, sport) → wall time of the first SYN seen."""
    first: dict[tuple[str, int], float] = {}
    for t, _src, sport, dst, _dport, _ in syns:
        first.setdefault((dst, sport), t)
    return first


def popen_module(lab: MiniLab, host: str, *args: str) -> subprocess.Popen:
    return lab.popen(host, [PY, "-m", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

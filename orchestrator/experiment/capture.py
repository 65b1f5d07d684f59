"""One packet capture per trial on the sniffer's passive mirror port, over SSH (so it works on VMs too).

Started with a bounded snap length, a large kernel buffer and immediate mode (without it, packets still in
libpcap's ring when tcpdump is told to stop are counted as received but never written); not trusted until a
canary datagram sent on the same segment is seen in the file; stopped with SIGINT so the file is complete;
tcpdump's own counts (captured, received by filter, dropped by kernel) are returned, and a capture that cannot
be trusted — it dropped packets, printed no statistics (it died), or had to be killed — is an error.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.errors import AccessError, CaptureError
from orchestrator.lab.programs import LabHosts

CANARY_PORT = 9        # discard: nothing answers; the datagram only has to cross the segment once
SNAPLEN = 128          # Ethernet + VLAN + IPv4 + TCP with options fits; payloads are not needed
BUFFER_KIB = 32768     # tcpdump -B: kernel buffer, so a 10,000 packets/s burst is not dropped

_COUNTS = {
    "captured": re.compile(r"^(\d+) packets? captured", re.M),
    "received": re.compile(r"^(\d+) packets? received by filter", re.M),
    "dropped": re.compile(r"^(\d+) packets? dropped by kernel", re.M),
    "if_dropped": re.compile(r"^(\d+) packets? dropped by interface", re.M),
}


@dataclass
class CaptureStats:
    file: str
    interface: str
    captured: int
    received: int
    dropped: int
    if_dropped: int
    canary: dict
    duration_s: float
    sniffer: str = ""
    forced: bool = False          # tcpdump did not stop on SIGINT and was killed

    def to_dict(self) -> dict:
        return asdict(self)

    def problem(self) -> str | None:
        """Why this capture's figures cannot be trusted, or None."""
        if self.forced:
            return f"tcpdump on {self.sniffer} had to be killed: its file may be incomplete"
        if self.captured < 0:
            return f"tcpdump on {self.sniffer} reported no statistics: the capture is incomplete"
        if self.dropped > 0 or self.if_dropped > 0:
            return (f"the capture on {self.sniffer}:{self.interface} lost packets: {self.dropped} dropped by the "
                    f"kernel, {self.if_dropped} by the interface, of {self.received} received")
        if self.received > self.captured:
            return f"the capture on {self.sniffer} wrote {self.captured} of {self.received} packets it received"
        return None


def parse_counts(log: str) -> dict[str, int]:
    """tcpdump's closing statistics (the last ones in the log)."""
    out = {}
    for key, rx in _COUNTS.items():
        found = rx.findall(log)
        out[key] = int(found[-1]) if found else -1
    return out


_FIND = ("import sys\nd=open(sys.argv[1],'rb').read()\n"
         "sys.exit(0 if sys.argv[2].encode() in d else 1)")
_SEND = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         "s.sendto(sys.argv[3].encode(),(sys.argv[1],int(sys.argv[2])))")


class Capture:
    def __init__(self, hosts: LabHosts, *, segment: str, name: str, sniffer: str | None = None,
                 snaplen: int = SNAPLEN, buffer_kib: int = BUFFER_KIB):
        lab = hosts.lab
        self.hosts = hosts
        sniffers = lab.by_role("sniffer") if sniffer is None else [lab.host(sniffer)]
        if not sniffers:
            raise CaptureError(f"lab '{lab.name}' has no sniffer to capture on")
        self.sniffer = sniffers[0].name
        port = next((i for i in sniffers[0].interfaces if i.mirror and i.segment == segment), None)
        if port is None:
            raise CaptureError(f"the sniffer {self.sniffer} has no passive port on {segment}")
        self.segment, self.interface, self.name = segment, port.ifname, name
        self.file = f"{hosts.prefix(self.sniffer)}/captures/{name}.pcap"
        self.log = f"{hosts.prefix(self.sniffer)}/log/{name}.log"
        self.snaplen, self.buffer_kib = snaplen, buffer_kib
        self.canary: dict = {}
        self.stop_report: dict = {}       # the host agent's answer to the stop (did tcpdump end before it?)
        self._started = 0.0

    def start(self, canary_from: str, canary_to: str, timeout: float = 10.0) -> None:
        """Start tcpdump and return once a canary sent from `canary_from` to `canary_to` is in the file."""
        self.hosts.sh(self.sniffer, f"rm -f {self.file}; : > {self.log}", timeout=15)
        argv = ["tcpdump", "-i", self.interface, "-s", str(self.snaplen), "-B", str(self.buffer_kib),
                "--immediate-mode", "-U", "-n", "-Z", "root", "-w", self.file]
        try:
            self.hosts.start(self.sniffer, self.name, argv, log=self.log)
        except AccessError as exc:
            raise CaptureError(f"tcpdump did not start on {self.sniffer}: {exc.message}") from None
        self._started = time.monotonic()
        deadline = self._started + timeout
        while "listening on" not in self.hosts.read(self.sniffer, self.log):
            if time.monotonic() > deadline:
                raise CaptureError(f"tcpdump on {self.sniffer} did not report listening within {timeout:.0f} s")
            time.sleep(0.05)
        token = f"wt-canary-{self.name}-{secrets.token_hex(4)}"
        self.canary = {"src": self.hosts.lab.host(canary_from).name, "dst": canary_to, "port": CANARY_PORT,
                       "token": token, "sent": 0}
        while time.monotonic() < deadline:
            self.hosts.access.run(canary_from, ["python3", "-c", _SEND, canary_to, str(CANARY_PORT), token],
                                  timeout=10, check=True)
            self.canary["sent"] += 1
            time.sleep(0.05)
            if self.hosts.access.run(self.sniffer, ["python3", "-c", _FIND, self.file, token], timeout=10).ok:
                self.canary["seen_after_s"] = round(time.monotonic() - self._started, 3)
                return
        self.stop(check=False)
        raise CaptureError(f"the capture on {self.sniffer}:{self.interface} is not live: "
                           f"{self.canary['sent']} canary datagrams from {canary_from} never arrived")

    def stop(self, *, check: bool = True) -> CaptureStats:
        """SIGINT, wait for tcpdump to finish its file, read its counts; with `check`, CaptureError when they
        cannot be trusted (`CaptureStats.problem`)."""
        rep = self.stop_report = self.hosts.stop(self.sniffer, self.name, signal="INT", timeout=15)
        counts = parse_counts(self.hosts.read(self.sniffer, self.log))
        stats = CaptureStats(self.file, self.interface, counts["captured"], counts["received"], counts["dropped"],
                             counts["if_dropped"], self.canary, round(time.monotonic() - self._started, 3),
                             sniffer=self.sniffer, forced=bool(rep.get("forced")))
        if check and (problem := stats.problem()):
            raise CaptureError(problem)
        return stats

    def fetch(self, local: str | Path) -> Path:
        local = Path(local)
        self.hosts.access.get(self.sniffer, self.file, local)
        return local

"""One packet capture per trial on the sniffer's passive mirror port, over SSH (so it works on VMs too).

Started with a bounded snap length, a large kernel buffer and immediate mode (without it, packets still in
libpcap's ring when tcpdump is told to stop are counted as received but never written); not trusted until a
canary datagram sent on the same segment is seen in the file; closed by an end marker seen in the file, then
stopped with SIGINT so the file is complete; tcpdump's own counts (captured, received by filter, dropped by
kernel) are returned, and a capture that cannot be trusted — it dropped packets, printed no statistics (it
died), had to be killed, or received more than it wrote before anything marked the end — is an error.

Why the end marker: tcpdump counts a packet as received when the kernel puts it in the ring, and a packet that
arrives between tcpdump's last read and SIGINT is counted but never written (seen on a TCG sniffer: 1,226 of
1,227). The ring is read in order, so once the end marker is in the file every packet before it is too, and
the ones received but unwritten came after the end of the trial: they are counted (`unwritten_after_end`),
not an error. The marker is one UDP datagram to the segment's broadcast address, port 9 (`end_marker`), from a
host that is still on the segment when a trial ends: the gateway, else another host there — never the
injector (it leaves the experimental LAN after the trigger) nor the host whose traffic a trial measures. A
broadcast leaves the segment nowhere and is answered by nothing (no ICMP for broadcasts).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.errors import AccessError, CaptureError, TestbedError
from orchestrator.lab.programs import LabHosts
from orchestrator.labfile.topology import Lab

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
    end_seen_s: float | None = None   # when the end marker was in the file (s after the start), None if never

    @property
    def unwritten_after_end(self) -> int:
        """Packets tcpdump received after the end marker and never wrote (harmless: after the trial)."""
        if self.end_seen_s is None or self.captured < 0:
            return 0
        return max(0, self.received - self.captured)

    def to_dict(self) -> dict:
        return {**asdict(self), "unwritten_after_end": self.unwritten_after_end}

    def problem(self) -> str | None:
        """Why this capture's figures cannot be trusted, or None."""
        if self.forced:
            return f"tcpdump on {self.sniffer} had to be killed: its file may be incomplete"
        if self.captured < 0:
            return f"tcpdump on {self.sniffer} reported no statistics: the capture is incomplete"
        if self.dropped > 0 or self.if_dropped > 0:
            return (f"the capture on {self.sniffer}:{self.interface} lost packets: {self.dropped} dropped by the "
                    f"kernel, {self.if_dropped} by the interface, of {self.received} received")
        if self.received > self.captured and self.end_seen_s is None:
            why = (self.canary.get("end") or {}).get("why") or "it was not sent"
            return (f"the capture on {self.sniffer} wrote {self.captured} of {self.received} packets it received, "
                    f"and no end marker showed where the file is complete ({why})")
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
         "s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\n"
         "s.sendto(sys.argv[3].encode(),(sys.argv[1],int(sys.argv[2])))")

_NOT_MARKERS = ("sniffer", "injector", "admin-server")   # passive; gone after the trigger; not on the segment


def end_marker(lab: Lab, segment: str, avoid: Collection[str] = ()) -> tuple[str, str] | str:
    """Who sends a capture's end marker on `segment`, and where to: (host, the segment's broadcast address) for
    a host that is still on the segment when a trial ends — the gateway, else the first other host with an
    address there that is not the sniffer, the injector or in `avoid` (the host whose traffic is measured) —
    or, when there is none, why."""
    def on(h) -> bool:
        return any(i.segment == segment and i.ip and not i.mirror for i in h.interfaces)
    hosts = [h for h in lab.hosts if on(h) and h.role not in _NOT_MARKERS and h.name not in avoid]
    hosts.sort(key=lambda h: h.role != "gateway")
    if not hosts:
        return f"no host on {segment} to send it but the injector{' and ' + ', '.join(avoid) if avoid else ''}"
    return hosts[0].name, str(ipaddress.ip_network(lab.segment(segment).subnet, strict=False).broadcast_address)


class Capture:
    def __init__(self, hosts: LabHosts, *, segment: str, name: str, sniffer: str | None = None,
                 snaplen: int = SNAPLEN, buffer_kib: int = BUFFER_KIB, end_avoid: Collection[str] = ()):
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
        self.end_by = end_marker(lab, segment, end_avoid)     # (host, broadcast address), or why there is none
        self._started = 0.0
        self._seen: float | None = None

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
        self.canary["sent"] = self._send_until_seen(self.canary["src"], canary_to, token, deadline)
        if self._seen is not None:
            self.canary["seen_after_s"] = self._seen
            return
        self.stop(check=False, mark_end=False)
        raise CaptureError(f"the capture on {self.sniffer}:{self.interface} is not live: "
                           f"{self.canary['sent']} canary datagrams from {canary_from} never arrived")

    def _send_until_seen(self, src: str, dst: str, token: str, deadline: float) -> int:
        """Send the datagram `token` from `src` to `dst` until it is in the file or `deadline`; how many were
        sent (`self._seen`: seconds after the start when it was in the file, else None). Raises what the
        send raises (AccessError, CommandError)."""
        self._seen, sent = None, 0
        while time.monotonic() < deadline:
            self.hosts.access.run(src, ["python3", "-c", _SEND, dst, str(CANARY_PORT), token], timeout=10,
                                  check=True)
            sent += 1
            time.sleep(0.05)
            if self.hosts.access.run(self.sniffer, ["python3", "-c", _FIND, self.file, token], timeout=10).ok:
                self._seen = round(time.monotonic() - self._started, 3)
                break
        return sent

    def mark_end(self, timeout: float = 5.0) -> float | None:
        """Send the end marker (`end_by`) and wait for it in the file: everything before it is then written.
        Seconds after the start when it was seen, or None (never live, no host to send it, not seen in
        `timeout`, or the send failed); `canary["end"]` says which."""
        if "seen_after_s" not in self.canary:
            return None
        if isinstance(self.end_by, str):
            self.canary["end"] = {"why": self.end_by}
            return None
        src, dst = self.end_by
        token = f"wt-end-{self.name}-{secrets.token_hex(4)}"
        end: dict = {"src": src, "dst": dst, "port": CANARY_PORT, "token": token, "sent": 0}
        self.canary["end"] = end
        try:
            end["sent"] = self._send_until_seen(src, dst, token, time.monotonic() + timeout)
        except TestbedError as exc:
            end["why"] = f"{src} could not send it: {exc.message}"
            return None
        if self._seen is None:
            end["why"] = f"{end['sent']} end markers from {src} were not in the file within {timeout:.0f} s"
            return None
        end["seen_after_s"] = self._seen
        return self._seen

    def stop(self, *, check: bool = True, mark_end: bool = True) -> CaptureStats:
        """The end marker (`mark_end`), SIGINT, wait for tcpdump to finish its file, read its counts; with
        `check`, CaptureError when they cannot be trusted (`CaptureStats.problem`)."""
        end_seen = self.mark_end() if mark_end else None
        rep = self.stop_report = self.hosts.stop(self.sniffer, self.name, signal="INT", timeout=15)
        counts = parse_counts(self.hosts.read(self.sniffer, self.log))
        stats = CaptureStats(self.file, self.interface, counts["captured"], counts["received"], counts["dropped"],
                             counts["if_dropped"], self.canary, round(time.monotonic() - self._started, 3),
                             sniffer=self.sniffer, forced=bool(rep.get("forced")), end_seen_s=end_seen)
        if check and (problem := stats.problem()):
            raise CaptureError(problem)
        return stats

    def fetch(self, local: str | Path) -> Path:
        local = Path(local)
        self.hosts.access.get(self.sniffer, self.file, local)
        return local

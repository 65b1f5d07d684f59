"""Small captures for the trace and reader tests, written with scapy (a dev dependency; the workload itself is
stdlib only)."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import CookedLinux, Dot1Q, Ether
from scapy.utils import wrpcap, wrpcapng

T0 = 1_764_050_000.0


def packets(link: str = "ether"):
    """(time, packet) pairs: host .1 starts 3 TCP connections (one SYN retransmitted) and 2 UDP flows, host .7
    starts one; SYN-ACKs and data packets that are not connection starts are mixed in."""
    a, b, c, d, o = "198.18.201.1", "198.18.201.2", "198.18.201.3", "198.18.201.4", "198.18.201.7"
    spec = [
        (0.000, IP(src=a, dst=b) / TCP(sport=40000, dport=80, flags="S")),
        (0.001, IP(src=b, dst=a) / TCP(sport=80, dport=40000, flags="SA")),
        (0.002, IP(src=a, dst=b) / TCP(sport=40000, dport=80, flags="A")),
        (0.100, IP(src=a, dst=c) / UDP(sport=50000, dport=53) / b"q"),
        (0.101, IP(src=c, dst=a) / UDP(sport=53, dport=50000) / b"a"),
        (0.200, IP(src=a, dst=d) / TCP(sport=40001, dport=443, flags="S")),
        (1.200, IP(src=a, dst=d) / TCP(sport=40001, dport=443, flags="S")),      # a retransmission
        (1.300, IP(src=o, dst=b) / TCP(sport=41000, dport=80, flags="S")),
        (1.500, IP(src=a, dst=b) / TCP(sport=40002, dport=80, flags="S")),
        (1.600, IP(src=a, dst=c) / UDP(sport=50000, dport=53) / b"q2"),          # same flow: not a start
        (1.700, IP(src=a, dst=c) / UDP(sport=50001, dport=53) / b"q3"),
    ]
    out = []
    for t, p in spec:
        if link == "ether":
            frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p
        elif link == "vlan":
            frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=5) / p
        elif link == "sll":
            frame = CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\x01\0\0", proto=0x0800) / p
        else:
            frame = p
        frame.time = T0 + t
        out.append(frame)
    return out


def write(path: Path, link: str = "ether", ng: bool = False, nano: bool = False) -> Path:
    pk = packets(link)
    if ng:
        wrpcapng(str(path), pk)
    else:
        wrpcap(str(path), pk, nano=nano, linktype=101 if link == "raw" else None)
    return path

"""Test captures with known contents: frames built with scapy, written by scapy or by the small writers here
(which also produce what scapy cannot: big-endian pcap, big-endian or multi-section pcapng, SPB/OPB blocks,
odd timestamp resolutions); and tshark as the independent reader to compare against.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
T0 = 1_764_050_000.0


def eth(*layers, vlan: int | None = None, outer: int | None = None):
    e = Ether(src=MAC_A, dst=MAC_B)
    if outer is not None:
        e = e / Dot1AD(vlan=outer)
    if vlan is not None:
        e = e / Dot1Q(vlan=vlan)
    for layer in layers:
        e = e / layer
    return e


def syn(src: str, dst: str, sport: int, dport: int, flags: str = "S", **kw):
    return eth(IP(src=src, dst=dst), TCP(sport=sport, dport=dport, flags=flags), **kw)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"hi", **kw):
    return eth(IP(src=src, dst=dst), UDP(sport=sport, dport=dport), Raw(payload), **kw)


def mixed_packets() -> list:
    """A known mix: 4 SYNs (1 a retransmission), SYN-ACK, ACK, RST, 3 UDP datagrams to 2 destinations,
    ARP, ICMP port-unreachable quoting a UDP header, an IPv6 SYN (not IPv4: not counted)."""
    a, b, c = "198.18.0.1", "198.18.0.2", "198.18.0.3"
    pkts = [
        syn(a, b, 40000, 80),
        syn(a, c, 40001, 80),
        eth(IP(src=b, dst=a), TCP(sport=80, dport=40000, flags="SA")),
        eth(IP(src=a, dst=b), TCP(sport=40000, dport=80, flags="A")),
        syn(a, c, 40001, 80),  # retransmission of the second SYN
        eth(IP(src=c, dst=a), TCP(sport=80, dport=40001, flags="RA")),
        syn(b, c, 50000, 22, flags="SEC"),  # SYN with ECN bits: still SYN without ACK
        udp(a, b, 5000, 53),
        udp(a, b, 5001, 53),  # same destination (ip, port): not a new UDP attempt by default
        udp(a, c, 5000, 53),
        Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=a, pdst=b),
        eth(IP(src=b, dst=a), ICMP(type=3, code=3), IP(src=a, dst=b), UDP(sport=5000, dport=53)),
        eth(IPv6(src="2001:db8::1", dst="2001:db8::2"), TCP(sport=1, dport=2, flags="S")),
    ]
    for i, p in enumerate(pkts):
        p.time = T0 + i * 0.25
    return pkts


# ------------------------------------------------------------------------------------------------ writers

def write_pcap(path: Path, frames: Sequence[tuple[float, bytes]], *, linktype: int = 1, endian: str = "<",
               nano: bool = False, snaplen: int = 262144, caplens: Sequence[int | None] | None = None) -> Path:
    """Classic pcap in either byte order and resolution; caplens[i] cuts frame i short (snaplen-style)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, (ts, data) in enumerate(frames):
        cap = caplens[i] if caplens and caplens[i] is not None else len(data)
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        out.append(struct.pack(endian + "IIII", sec, frac, cap, len(data)) + data[:cap])
    path.write_bytes(b"".join(out))
    return path


def _opt(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def _block(endian: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


@dataclass
class NgInterface:
    linktype: int = 1
    snaplen: int = 0
    tsresol: int | None = None  # the if_tsresol byte; None = default (microseconds)
    tsoffset: int | None = None
    name: str | None = None


@dataclass
class NgSection:
    endian: str = "<"
    interfaces: list[NgInterface] = field(default_factory=lambda: [NgInterface()])
    # (kind "epb" | "spb" | "opb", interface, timestamp in seconds, frame bytes)
    packets: list[tuple[str, int, float, bytes]] = field(default_factory=list)


def _units(ts, iface: NgInterface) -> int:
    """Timestamp (float, or Decimal for exact sub-microsecond values) in the interface's units."""
    r = 6 if iface.tsresol is None else iface.tsresol
    t = (ts if isinstance(ts, Decimal) else Decimal(repr(ts))) - (iface.tsoffset or 0)
    return int((t * (2 ** (r & 0x7F) if r & 0x80 else 10 ** r)).to_integral_value())


def pcapng_bytes(sections: Sequence[NgSection]) -> bytes:
    out = []
    for sec in sections:
        e = sec.endian
        out.append(_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
        for f in sec.interfaces:
            opts = b""
            if f.name:
                opts += _opt(e, 2, f.name.encode())
            if f.tsresol is not None:
                opts += _opt(e, 9, bytes([f.tsresol]))
            if f.tsoffset is not None:
                opts += _opt(e, 14, struct.pack(e + "q", f.tsoffset))
            if opts:
                opts += _opt(e, 0, b"")
            out.append(_block(e, 1, struct.pack(e + "HHI", f.linktype, 0, f.snaplen) + opts))
        for kind, i, ts, data in sec.packets:
            u = _units(ts, sec.interfaces[i])
            if kind == "epb":
                out.append(_block(e, 6, struct.pack(e + "IIIII", i, u >> 32, u & 0xFFFFFFFF, len(data), len(data))
                                  + data))
            elif kind == "opb":
                out.append(_block(e, 2, struct.pack(e + "HHIIII", i, 0, u >> 32, u & 0xFFFFFFFF, len(data),
                                                    len(data)) + data))
            else:
                out.append(_block(e, 3, struct.pack(e + "I", len(data)) + data))
        out.append(_block(e, 5, struct.pack(e + "III", 0, 0, 0)))  # an Interface Statistics Block to skip
    return b"".join(out)


def frames(pkts) -> list[tuple[float, bytes]]:
    return [(float(p.time), bytes(p)) for p in pkts]


# ------------------------------------------------------------------------------------------------- tshark

def need_tshark() -> str:
    exe = shutil.which("tshark")
    if not exe:
        pytest.skip("tshark is not installed (Debian package tshark): no independent reader to compare with")
    return exe


# our semantics equal tshark's per-frame dissection with IP reassembly off: the first fragment's TCP/UDP
# header is read, later fragments never are
TSHARK_SYN = "ip && !icmp && tcp.flags.syn==1 && tcp.flags.ack==0"
TSHARK_UDP = "ip && !icmp && udp"


def tshark_fields(path: Path, display_filter: str | None, *fields: str) -> list[list[str]]:
    exe = need_tshark()
    argv = [exe, "-n", "-o", "ip.defragment:FALSE", "-r", str(path), "-T", "fields"]
    if display_filter:
        argv += ["-Y", display_filter]
    for f in fields or ("frame.number",):
        argv += ["-e", f]
    argv += ["-E", "occurrence=f"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 and "cut short" not in r.stderr and "appears to be damaged" not in r.stderr:
        raise AssertionError(f"tshark failed on {path}: {r.stderr.strip()}")
    return [line.split("\t") for line in r.stdout.splitlines()]


def tshark_counts(path: Path) -> dict[str, int]:
    """packets, SYN-without-ACK packets, UDP datagrams and distinct (src, dst, dport) UDP destinations, as
    tshark reads them (one tshark run; the same rules as TSHARK_SYN / TSHARK_UDP, applied in Python)."""
    rows = tshark_fields(path, None, "frame.protocols", "ip.src", "ip.dst", "tcp.flags.syn", "tcp.flags.ack",
                         "udp.dstport")
    yes = ("1", "True")
    syns = udps = 0
    dests = set()
    for row in rows:
        protos, src, dst, fsyn, fack, dport = (row + [""] * 6)[:6]
        layers = protos.split(":")
        if "ip" not in layers or "icmp" in layers:
            continue
        if "tcp" in layers and fsyn in yes and fack not in yes and fack != "":
            syns += 1
        if "udp" in layers:
            udps += 1
            dests.add((src, dst, dport))
    return {"packets": len(rows), "syn_attempts": syns, "udp_datagrams": udps, "udp_attempts": len(dests)}

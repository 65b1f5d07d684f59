"""Connection starts in a pcap or pcapng capture, standard library only (the workload runs on bare guests, and
replays a user's pcap there; the testbed's fast NumPy reader, orchestrator.analysis, is not available on a guest).

`read_packets(path)` yields one `Packet` per IPv4 TCP/UDP record (first fragments only) with its time in
seconds since the epoch and its TCP flags; `connection_starts(packets)` keeps the first SYN-without-ACK of each
(src, sport, dst, dport) — later ones are retransmissions, counted — and the first datagram of each UDP flow.
Link types: Ethernet (with 802.1Q/802.1ad tags), raw IP, Linux cooked (SLL, SLL2), BSD loopback. Anything that
is not a capture, or is cut short inside a header, is a UsageError naming the record and its byte offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from testworm.addrs import ip_str
from testworm.errors import UsageError

TCP_SYN, TCP_ACK = 0x02, 0x10
LINK_ETHERNET, LINK_RAW, LINK_RAW_IPV4, LINK_SLL, LINK_SLL2, LINK_NULL, LINK_LOOP = 1, 101, 228, 113, 276, 0, 108
LINKTYPES = {LINK_ETHERNET: "Ethernet", LINK_RAW: "raw IP", LINK_RAW_IPV4: "raw IPv4", LINK_SLL: "Linux SLL",
             LINK_SLL2: "Linux SLL2", LINK_NULL: "BSD loopback", LINK_LOOP: "OpenBSD loopback"}
MAX_RECORD = 1 << 18


@dataclass(frozen=True)
class Packet:
    ts: float
    proto: str          # tcp | udp
    src: str
    sport: int
    dst: str
    dport: int
    flags: int          # TCP flags (0 for UDP)


@dataclass
class Starts:
    """Connection starts in capture order, and the SYN retransmissions left out of them."""

    starts: list[Packet]
    retransmissions: dict[tuple[str, str, int, str, int], int]


def _ip(frame: bytes, ts: float) -> Packet | None:
    if len(frame) < 20 or frame[0] >> 4 != 4:
        return None
    ihl = (frame[0] & 0x0F) * 4
    proto = frame[9]
    if proto not in (6, 17) or struct.unpack(">H", frame[6:8])[0] & 0x1FFF:  # not TCP/UDP, or a later fragment
        return None
    l4 = frame[ihl:]
    if len(l4) < (14 if proto == 6 else 4):
        return None
    sport, dport = struct.unpack(">HH", l4[:4])
    return Packet(ts, "tcp" if proto == 6 else "udp", ip_str(int.from_bytes(frame[12:16], "big")), sport,
                  ip_str(int.from_bytes(frame[16:20], "big")), dport, l4[13] if proto == 6 else 0)


def _link(linktype: int, data: bytes, ts: float) -> Packet | None:
    if linktype == LINK_ETHERNET:
        off, etype = 14, data[12:14]
        while etype in (b"\x81\x00", b"\x88\xa8") and len(data) >= off + 4:
            etype, off = data[off + 2:off + 4], off + 4
        return _ip(data[off:], ts) if etype == b"\x08\x00" else None
    if linktype in (LINK_RAW, LINK_RAW_IPV4):
        return _ip(data, ts)
    if linktype == LINK_SLL:
        return _ip(data[16:], ts) if data[14:16] == b"\x08\x00" else None
    if linktype == LINK_SLL2:
        return _ip(data[20:], ts) if data[0:2] == b"\x08\x00" else None
    if linktype in (LINK_NULL, LINK_LOOP):
        return _ip(data[4:], ts) if len(data) > 4 and 2 in (data[0], data[3]) else None
    return None


def read_packets(path: str) -> Iterator[Packet]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read capture {path}: {exc.strerror}") from None
    with fh:
        head = fh.read(4)
        if head == b"\x0a\x0d\x0d\x0a":
            yield from _pcapng(fh, path)
        elif head in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
            yield from _pcap(fh, path, head)
        else:
            raise UsageError(f"{path}: not a pcap or pcapng capture (first bytes {head.hex() or 'none'})")


def _pcap(fh, path: str, magic: bytes) -> Iterator[Packet]:
    e = "<" if magic[0] in (0xD4, 0x4D) else ">"
    scale = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    rest = fh.read(20)
    if len(rest) < 20:
        raise UsageError(f"{path}: the pcap file header is cut short")
    linktype = struct.unpack(e + "I", rest[16:20])[0] & 0x0FFFFFFF
    _check_linktype(path, linktype)
    n, off = 0, 24
    while True:
        hdr = fh.read(16)
        if not hdr:
            return
        if len(hdr) < 16:
            raise UsageError(f"{path}: record {n} at offset {off}: header cut short")
        sec, frac, incl, _ = struct.unpack(e + "IIII", hdr)
        if incl > MAX_RECORD:
            raise UsageError(f"{path}: record {n} at offset {off}: length {incl} is not plausible")
        data = fh.read(incl)
        if len(data) < incl:
            raise UsageError(f"{path}: record {n} at offset {off}: data cut short")
        p = _link(linktype, data, sec + frac * scale)
        if p is not None:
            yield p
        n, off = n + 1, off + 16 + incl


def _pcapng(fh, path: str) -> Iterator[Packet]:
    ifaces: list[tuple[int, float]] = []
    e, n, off = "<", 0, 0
    fh.seek(0)
    while True:
        hdr = fh.read(8)
        if not hdr:
            return
        if len(hdr) < 8:
            raise UsageError(f"{path}: block {n} at offset {off}: header cut short")
        if hdr[:4] == b"\x0a\x0d\x0d\x0a":
            bom = fh.read(4)
            e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            fh.seek(-4, 1)
            ifaces = []
        btype, blen = struct.unpack(e + "II", hdr)
        if blen < 12 or blen % 4 or blen > MAX_RECORD:
            raise UsageError(f"{path}: block {n} at offset {off}: length {blen} is not plausible")
        body = fh.read(blen - 8)
        if len(body) < blen - 8:
            raise UsageError(f"{path}: block {n} at offset {off}: cut short")
        if btype == 1:  # interface description: link type, and the timestamp resolution option
            ifaces.append((struct.unpack(e + "H", body[:2])[0], _tsresol(body[8:-4], e)))
            _check_linktype(path, ifaces[-1][0])
        elif btype in (6, 2) and len(body) >= 24:  # enhanced (6) and obsolete (2) packet blocks
            if btype == 6:
                iface, hi, lo, incl = struct.unpack(e + "IIII", body[:16])
            else:
                iface, _, hi, lo, incl = struct.unpack(e + "HHIII", body[:16])
            if iface >= len(ifaces):
                raise UsageError(f"{path}: block {n} at offset {off}: packet on undeclared interface {iface}")
            linktype, res = ifaces[iface]
            p = _link(linktype, body[20:20 + incl], ((hi << 32) | lo) * res)
            if p is not None:
                yield p
        n, off = n + 1, off + blen


def _check_linktype(path: str, linktype: int) -> None:
    if linktype not in LINKTYPES:
        raise UsageError(f"{path}: link type {linktype} is not supported (only {', '.join(LINKTYPES.values())})")


def _tsresol(opts: bytes, e: str) -> float:
    p = 0
    while p + 4 <= len(opts):
        code, ln = struct.unpack(e + "HH", opts[p:p + 4])
        if code == 0:
            break
        if code == 9 and ln >= 1:
            v = opts[p + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
        p += 4 + ln + (-ln % 4)
    return 1e-6


def connection_starts(packets: Iterable[Packet]) -> Starts:
    """First SYN per TCP 4-tuple (later SYNs are counted as retransmissions), first datagram per UDP flow."""
    seen: set[tuple] = set()
    out: list[Packet] = []
    retx: dict[tuple, int] = {}
    for p in packets:
        if p.proto == "tcp" and p.flags & (TCP_SYN | TCP_ACK) != TCP_SYN:
            continue
        key = (p.proto, p.src, p.sport, p.dst, p.dport)
        if key in seen:
            if p.proto == "tcp":
                retx[key] = retx.get(key, 0) + 1
            continue
        seen.add(key)
        out.append(p)
    return Starts(out, retx)

"""A fast reader for pcap and pcapng captures: frames records with one tight `struct` loop, then parses
Ethernet (+802.1Q/QinQ), Linux cooked (SLL, SLL2), raw IPv4 and BSD loopback, IPv4, TCP and UDP headers
with NumPy over the raw bytes, all packets at once. Nothing else is dissected.

`read_capture(path)` returns a `Packets` table (one row per packet record, in file order). A file that cannot
be analysed at all raises `CaptureReadError`; a file damaged part-way is read up to the damage and flagged
`partial`, with the reason in `problems`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .errors import CaptureReadError, reading
from .packets import (  # noqa: F401  (re-exported: the reader's public names)
    _PAD,
    ETHERTYPE_IPV4,
    FRAG_FIRST,
    FRAG_LATER,
    FRAG_NONE,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    MAX_CAPLEN,
    OTHER_LINKTYPE_NAMES,
    SUPPORTED_LINKTYPES,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    TS_UNKNOWN,
    VLAN_TPIDS,
    Interface,
    Packets,
    _dissect,
    _finish,
    _gather,
    linktype_name,
)
from .pcapng import _read_pcapng

# ----------------------------------------------------------------------------------------------- entry point

def read_capture(path: str | Path) -> Packets:
    """Read a pcap or pcapng file. Raises CaptureReadError when nothing can be analysed."""
    p = Path(path)
    arr, size = _load(p)
    if size < 4:
        raise CaptureReadError(f"{p}: too short to be a capture ({size} bytes; a pcap header alone is 24)")
    head = arr[:4].tobytes()
    mv = memoryview(arr)[:size]
    if head == b"\x0a\x0d\x0d\x0a":
        return _read_pcapng(p, arr, mv, size)
    for endian in ("<", ">"):
        (magic,) = struct.unpack(endian + "I", head)
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            return _read_pcap(p, arr, mv, size, endian, nano=magic == 0xA1B23C4D)
        if magic == 0xA1B2CD34:
            raise CaptureReadError(f"{p}: a 'modified' (Kuznetzov) pcap file, which this reader does not support",
                                   hint="convert it with `editcap -F pcap IN OUT`")
    raise CaptureReadError(
        f"{p}: not a pcap or pcapng file (starts with {head.hex(' ')}; expected d4 c3 b2 a1, a1 b2 c3 d4, "
        "4d 3c b2 a1, a1 b2 3c 4d or the pcapng block 0a 0d 0d 0a)")


def _load(p: Path) -> tuple[np.ndarray, int]:
    """The whole file in a uint8 array followed by _PAD zero bytes, and the file's size."""
    with reading(p, CaptureReadError, "capture file"), open(p, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        if size == 0:
            raise CaptureReadError(f"{p}: empty file (0 bytes): no pcap or pcapng header",
                                   hint="was the capture stopped before it wrote anything?")
        buf = np.empty(size + _PAD, dtype=np.uint8)
        got = fh.readinto(memoryview(buf)[:size]) or 0
        buf[got:] = 0
    return buf, got


# ------------------------------------------------------------------------------------------------ classic pcap

def _read_pcap(p: Path, arr: np.ndarray, mv: memoryview, size: int, endian: str, nano: bool) -> Packets:
    if size < 24:
        raise CaptureReadError(f"{p}: pcap file header cut short ({size} of 24 bytes)")
    _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack_from(endian + "HHiIII", mv, 4)
    linktype = network & 0xFFFF
    iface = Interface(linktype, snaplen, "ns" if nano else "us")
    if not iface.supported:
        raise CaptureReadError(
            f"{p}: link type {linktype} ({linktype_name(linktype)}) is not supported",
            hint="supported: " + ", ".join(f"{k} {v}" for k, v in SUPPORTED_LINKTYPES.items()))

    # framing: the only per-packet Python loop. It stops when a header no longer fits (struct.error);
    # the last offset appended is where that happened, checked below.
    unpack = struct.Struct(endian + "8xI").unpack_from
    offs: list[int] = []
    app = offs.append
    off = 24
    try:
        while True:
            app(off)
            (cap,) = unpack(mv, off)
            off += cap + 16
    except struct.error:
        pass
    end_off = offs.pop()
    o = np.array(offs, dtype=np.int64)
    hdr = _gather(arr, o, 16).view(endian + "u4").reshape(-1, 4) if len(o) else np.zeros((0, 4), np.uint32)
    sec, frac, caplen, wirelen = (hdr[:, i].astype(np.int64) for i in range(4))

    problems: list[str] = []
    maxcap = max(MAX_CAPLEN, snaplen if snaplen <= (1 << 28) else 0)
    bad = np.flatnonzero((caplen > maxcap) | (o + 16 + caplen > size))
    n = len(o)
    if len(bad):
        k = int(bad[0])
        at, cap = int(o[k]), int(caplen[k])
        if cap > maxcap:
            problems.append(f"corrupt record header of packet {k + 1} at byte {at}: captured length {cap} "
                            f"exceeds the maximum {maxcap}; read the {k} packets before it")
        else:
            problems.append(f"file ends in the middle of packet {k + 1} (record at byte {at} needs {cap} bytes "
                            f"of data, {size - at - 16} present): truncated capture; read the {k} packets before it")
        n = k
    elif end_off < size:
        problems.append(f"file ends inside the record header of packet {n + 1} ({size - end_off} of 16 bytes "
                        f"at byte {end_off}): truncated capture; read the {n} packets before it")
    sec, frac, caplen, wirelen, o = sec[:n], frac[:n], caplen[:n], wirelen[:n], o[:n]
    ts_ns = sec * 1_000_000_000 + (frac if nano else frac * 1000)
    lt = np.full(n, linktype, dtype=np.uint16)
    pk = _dissect(p, "pcap", [iface], arr, o + 16, caplen, wirelen, ts_ns, np.zeros(n, np.uint16), lt)
    _finish(pk, problems)
    return pk



"""A fast reader for pcap and pcapng captures, in chunks: reads a few MiB of the file at a time, frames the
records complete in them, parses Ethernet (+802.1Q/QinQ), Linux cooked (SLL, SLL2), raw IPv4 and BSD loopback,
IPv4, TCP and UDP headers with NumPy over all of a chunk's records at once, and carries the record that
straddles the chunk's end over to the next. Nothing else is dissected; memory is bounded by the chunk size
(and the largest record), not by the file.

`CaptureReader(path)` yields one `Packets` table per chunk (file order, `index` = the record's number in the
file); `read_capture(path)` joins them into one table of every record, for callers that need all rows. A file
that cannot be analysed at all raises `CaptureReadError`; a file damaged part-way is read up to the damage and
flagged `partial`, with the reason in `problems`.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import framing
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
    Framed,
    Interface,
    Packets,
    _dissect,
    ethernet_fields,
    linktype_name,
    window,
)
from .pcapng import PcapngFramer

CHUNK_BYTES = 8 << 20  # what a CaptureReader reads at a time (a record larger than this is read whole)


# ---------------------------------------------------------------------------------------------- entry points

def read_capture(path: str | Path, *, chunk_bytes: int = CHUNK_BYTES) -> Packets:
    """Every record of a pcap or pcapng file in one table. Raises CaptureReadError when nothing can be analysed.
    Its columns grow with the file (~50 bytes a record): `scan_capture` keeps only the rows that matter."""
    reader = CaptureReader(path, chunk_bytes=chunk_bytes)
    parts = list(reader)
    return Packets.concat(parts, **reader.facts())


class CaptureReader:
    """Iterate for the capture's records, one `Packets` table per chunk of about `chunk_bytes` of the file.

    The constructor raises CaptureReadError for a file that cannot be a capture (missing, empty, not pcap or
    pcapng, an unsupported pcap link type); iterating raises it too where that is only known later (a pcapng
    file none of whose interfaces can be dissected, or without a readable section header). After the
    iteration, `packets`, `ipv4_packets`, `ts_range`, `partial`, `problems`, `notes` and `interfaces` describe
    the whole file.
    A reader is iterated once.
    """

    def __init__(self, path: str | Path, *, chunk_bytes: int = CHUNK_BYTES):
        self.path = Path(path)
        self.chunk_bytes = max(16, int(chunk_bytes))
        self.packets = 0
        self.ipv4_packets = 0
        self.ts_range: tuple[int, int] | None = None  # earliest and latest known timestamp (ns)
        self.partial = False
        self.problems: list[str] = []
        self.notes: list[str] = []
        p = self.path
        with reading(p, CaptureReadError, "capture file"):
            fh = open(p, "rb")  # noqa: SIM115  (closed by the iteration, or below)
            try:
                self.size = os.fstat(fh.fileno()).st_size
                head = fh.read(24)
            except OSError:
                fh.close()
                raise
        try:
            self.format, self._framer = _framer(p, head, self.size)
        except CaptureReadError:
            fh.close()
            raise
        self._fh: io.BufferedReader | None = fh

    @property
    def interfaces(self) -> list[Interface]:
        return self._framer.interfaces

    def facts(self) -> dict:
        """What a Packets table of this file says about the file as a whole (after the iteration)."""
        return {"path": str(self.path), "format": self.format, "interfaces": list(self.interfaces),
                "partial": self.partial, "problems": list(self.problems), "notes": list(self.notes)}

    def __iter__(self) -> Iterator[Packets]:
        fh, self._fh = self._fh, None
        if fh is None:
            raise RuntimeError(f"{self.path}: a CaptureReader is iterated once")
        fr, size, p = self._framer, self.size, self.path
        base, have, cap = fr.start, 0, self.chunk_bytes
        buf = np.zeros(cap + _PAD, np.uint8)
        fr.peek = lambda at, k: os.pread(fh.fileno(), k, at)
        try:
            fh.seek(base)
            while True:
                want = min(cap, size - base)
                while have < want:
                    with reading(p, CaptureReadError, "capture file"):
                        got = fh.readinto(buf.data[have:want])
                    if not got:  # the file shrank while we read it: it ends here
                        size = self.size = base + have
                        break
                    have += got
                step = fr.frame(buf, base, have, size, self.packets)
                n = len(step.data_off)
                if n:
                    pk = _dissect(p, self.format, list(fr.interfaces), buf, step, self.packets)
                    self.packets += n
                    self.ipv4_packets += int(np.count_nonzero(pk.ipv4))
                    known = step.ts_ns[step.ts_ns != TS_UNKNOWN]
                    if len(known):
                        lo, hi = int(known.min()), int(known.max())
                        self.ts_range = (lo, hi) if self.ts_range is None else (min(lo, self.ts_range[0]),
                                                                                max(hi, self.ts_range[1]))
                    yield pk
                if step.done:
                    break
                if step.consumed == 0 and step.need <= have:
                    raise AssertionError(f"{p}: capture framing made no progress at byte {base}")
                rest = have - step.consumed
                size_for = max(self.chunk_bytes, step.need, rest)  # grown for a large record, back once it is read
                if size_for != cap:
                    cap = size_for
                    resized = np.zeros(cap + _PAD, np.uint8)
                    resized[:rest] = buf[step.consumed:have]
                    buf = resized
                elif rest:
                    buf[:rest] = buf[step.consumed:have]
                base, have = base + step.consumed, rest
        finally:
            fh.close()
        self.problems, self.notes = fr.finish(self.packets)
        self.partial = bool(self.problems)
        if self.packets == 0 and not self.partial:
            self.notes.append("the capture contains no packets (only its file header)")


def _framer(p: Path, head: bytes, size: int):
    if size == 0:
        raise CaptureReadError(f"{p}: empty file (0 bytes): no pcap or pcapng header",
                               hint="was the capture stopped before it wrote anything?")
    if size < 4:
        raise CaptureReadError(f"{p}: too short to be a capture ({size} bytes; a pcap header alone is 24)")
    if head[:4] == b"\x0a\x0d\x0d\x0a":
        return "pcapng", PcapngFramer(p)
    for endian in ("<", ">"):
        (magic,) = struct.unpack(endian + "I", head[:4])
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            return "pcap", PcapFramer(p, head, size, endian, nano=magic == 0xA1B23C4D)
        if magic == 0xA1B2CD34:
            raise CaptureReadError(f"{p}: a 'modified' (Kuznetzov) pcap file, which this reader does not support",
                                   hint="convert it with `editcap -F pcap IN OUT`")
    raise CaptureReadError(
        f"{p}: not a pcap or pcapng file (starts with {head[:4].hex(' ')}; expected d4 c3 b2 a1, a1 b2 c3 d4, "
        "4d 3c b2 a1, a1 b2 3c 4d or the pcapng block 0a 0d 0d 0a)")


# ------------------------------------------------------------------------------------------------ classic pcap

class PcapFramer:
    """Frames classic pcap records (16-byte header, then `caplen` bytes) in a buffer, round after round."""

    start = 24  # the file header

    def __init__(self, p: Path, head: bytes, size: int, endian: str, nano: bool):
        if size < 24:
            raise CaptureReadError(f"{p}: pcap file header cut short ({size} of 24 bytes)")
        _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack_from(endian + "HHiIII", head, 4)
        linktype = network & 0xFFFF
        iface = Interface(linktype, snaplen, "ns" if nano else "us")
        if not iface.supported:
            raise CaptureReadError(
                f"{p}: link type {linktype} ({linktype_name(linktype)}) is not supported",
                hint="supported: " + ", ".join(f"{k} {v}" for k, v in SUPPORTED_LINKTYPES.items()))
        self.interfaces = [iface]
        self.endian, self.nano, self.linktype = endian, nano, linktype
        self.maxcap = max(MAX_CAPLEN, snaplen if snaplen <= (1 << 28) else 0)
        self.frac_limit = 1_000_000_000 if nano else 1_000_000
        u4 = endian + "u4"
        self._record = ethernet_fields(16, 40, sec=(u4, 0), frac=(u4, 4), cap=(u4, 8), wl=(u4, 12))
        self._problems: list[str] = []

    def frame(self, arr: np.ndarray, base: int, have: int, size: int, n: int) -> Framed:
        o, end_off = framing.frame(arr, have, self.endian, self.maxcap, self.frac_limit)
        rec = window(arr, o, self._record)  # the record header, and the Ethernet header after it
        sec, frac, caplen, wirelen = (rec[f].astype(np.int64) for f in ("sec", "frac", "cap", "wl"))
        bad = np.flatnonzero((caplen > self.maxcap) | (o + 16 + caplen > have))
        k, consumed, need, done = len(o), end_off, 16, False
        if len(bad):
            k = int(bad[0])
            at, cap, consumed = base + int(o[k]), int(caplen[k]), int(o[k])
            if cap > self.maxcap:
                self._problems.append(f"corrupt record header of packet {n + k + 1} at byte {at}: captured length "
                                      f"{cap} exceeds the maximum {self.maxcap}; read the {n + k} packets before it")
                done = True
            elif at + 16 + cap > size:
                self._problems.append(
                    f"file ends in the middle of packet {n + k + 1} (record at byte {at} needs {cap} bytes of data, "
                    f"{size - at - 16} present): truncated capture; read the {n + k} packets before it")
                done = True
            else:
                need = 16 + cap
        elif base + have >= size:  # the end of the file is in the buffer
            done = True
            if end_off < have:
                at = base + end_off
                self._problems.append(f"file ends inside the record header of packet {n + k + 1} ({size - at} of 16 "
                                      f"bytes at byte {at}): truncated capture; read the {n + k} packets before it")
        sec, frac, caplen, wirelen, o = sec[:k], frac[:k], caplen[:k], wirelen[:k], o[:k]
        ts_ns = sec * 1_000_000_000 + (frac if self.nano else frac * 1000)
        return Framed(o + 16, caplen, wirelen, ts_ns, np.zeros(k, np.uint16), np.full(k, self.linktype, np.uint16),
                      consumed, need, done, eth=rec[:k] if self.linktype == LINKTYPE_ETHERNET else None)

    def finish(self, packets: int) -> tuple[list[str], list[str]]:
        """(problems, notes) of the whole file."""
        return list(self._problems), []


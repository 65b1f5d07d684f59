"""What the analysis needs from a capture, reduced chunk by chunk while the reader streams it: the file's facts
and counts, its time span, and only the rows that matter — the connection attempts (SYNs without ACK and UDP
datagrams, as an `Attempts` table) and, when asked for, the answers (TCP RST or SYN+ACK, as a `Packets` table
of those rows). Memory is the chunk being read plus those rows (~35 bytes an attempt), never every packet.

`scan_capture(path)` is the streaming counterpart of `extract_attempts(read_capture(path))`: its attempts are
the same rows with the same flags, whatever the chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .attempts import Attempts, build_attempts
from .packets import Interface, Packets
from .pcap import CHUNK_BYTES, CaptureReader

# the attempt columns kept from each chunk: Attempts' own, before the repeat/attempt flags are worked out
_KEPT = ("index", "ts", "src", "dst", "sport", "dport", "proto", "vlan")


@dataclass
class CaptureSummary:
    """A capture file as a whole: its format, interfaces, counts, time span and whether it was read whole."""

    path: str
    format: str  # "pcap" | "pcapng"
    interfaces: list[Interface]
    packets: int
    ipv4_packets: int
    first_ts_ns: int | None  # the earliest and latest known timestamps (None: no packet has one)
    last_ts_ns: int | None
    partial: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def linktypes(self) -> list[int]:
        return sorted({i.linktype for i in self.interfaces})

    @property
    def span(self) -> tuple[float, float] | None:
        """(first, last) packet time in float seconds since the epoch, as `Packets.ts` gives them."""
        if self.first_ts_ns is None or self.last_ts_ns is None:
            return None
        return float(np.float64(self.first_ts_ns) / 1e9), float(np.float64(self.last_ts_ns) / 1e9)


@dataclass
class CaptureScan:
    """One streamed pass over a capture: the file's summary, its attempt rows and (if asked for) its answers."""

    summary: CaptureSummary
    columns: dict[str, np.ndarray]  # the attempt rows' columns (_KEPT), capture order
    answers: Packets | None  # the answer rows, every column (None unless asked for)
    udp_mode: str
    _attempts: Attempts | None = field(default=None, repr=False)

    def attempts(self, udp: str | None = None) -> Attempts:
        """The attempt table (as `extract_attempts` gives it) under `udp` (default: the mode scanned with)."""
        mode = udp or self.udp_mode
        if self._attempts is not None and self._attempts.udp_mode == mode:
            return self._attempts
        c = self.columns
        att = build_attempts(c["ts"], c["src"], c["dst"], c["sport"], c["dport"], c["proto"], udp=mode,
                             packets=self.summary.packets, index=c["index"], vlan=c["vlan"])
        if mode == self.udp_mode:
            self._attempts = att
        return att


def scan_capture(path: str | Path, *, udp: str = "first_per_destination", answers: bool = False,
                 chunk_bytes: int = CHUNK_BYTES) -> CaptureScan:
    """Stream a capture once and keep what the analysis needs (see the module's docstring). Raises
    CaptureReadError as `read_capture` does; a damaged file is read up to the damage, `summary.partial` set."""
    build_attempts([], [], [], [], [], [], udp=udp)  # a bad udp mode fails before the file is read
    reader = CaptureReader(path, chunk_bytes=chunk_bytes)
    kept: dict[str, list[np.ndarray]] = {c: [] for c in _KEPT}
    answer_parts: list[Packets] = []
    for pk in reader:
        sel = np.flatnonzero(pk.syn | pk.udp)
        if answers:
            answer_parts.append(pk.select(pk.answer))
        if len(sel):
            kept["ts"].append(pk.ts[sel])
            for c in _KEPT:
                if c != "ts":
                    kept[c].append(getattr(pk, c)[sel])
    lo, hi = reader.ts_range or (None, None)
    summary = CaptureSummary(str(reader.path), reader.format, list(reader.interfaces), reader.packets,
                             reader.ipv4_packets, lo, hi, reader.partial, list(reader.problems), list(reader.notes))
    cols = {c: _join(kept.pop(c), d) for c, d in (("index", np.int64), ("ts", np.float64), ("src", np.uint32),
                                                  ("dst", np.uint32), ("sport", np.uint16), ("dport", np.uint16),
                                                  ("proto", np.uint8), ("vlan", np.int32))}
    ans = Packets.concat(answer_parts, **reader.facts()) if answers else None
    scan = CaptureScan(summary, cols, ans, udp)
    scan.attempts()
    return scan


def _join(parts: list[np.ndarray], dtype) -> np.ndarray:
    out = np.concatenate(parts) if parts else np.zeros(0, dtype)
    parts.clear()
    return out

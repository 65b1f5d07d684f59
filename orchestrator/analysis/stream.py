"""A capture's attempt figures in memory bounded by the chunk, not by the file: what `testbed analyse` reads.

Telling a retransmitted SYN from a new one (and a repeated UDP datagram from a first one) needs every earlier
key of the file, so the attempt rows cannot simply be dropped once counted. They are instead written, 21 bytes
a row, to one of P partition files chosen by a hash of (src, dst), P growing with the file (`SPILL_FILE_BYTES`
of capture per partition). Every key names its (src, dst), so a key's rows all land in one partition, in
capture order; each partition is then read back and reduced on its own to totals and per-source partial sums
(`SourcePartials`), which add up across partitions because no (src, dst) pair is in two of them. Memory is one
chunk while streaming, then one partition: about `SPILL_FILE_BYTES` × 21 / 76 bytes at most, whatever the size
of the file. A capture of one partition (up to 64 MiB) never touches the disk.

The rows of the sources the metrics look at (`keep`: the infected ones) are kept whole, as `scan_capture` keeps
every row; the logs that name those sources hold a line per attempt already.

The limit: the rows of one (src, dst) pair are never split, so a capture that is one pair's flood holds that
pair's rows in one partition.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .attempts import Attempts, SourcePartials, build_attempts, merge_partials, source_partials
from .pcap import CaptureReader
from .scan import _KEPT, CaptureSummary, _join

SPILL_FILE_BYTES = 64 << 20  # capture bytes per partition
_ROW = np.dtype([("ts", "<f8"), ("src", "<u4"), ("dst", "<u4"), ("sport", "<u2"), ("dport", "<u2"),
                 ("proto", "u1")])
_TOTALS = ("syn_attempts", "syn_retransmissions", "udp_attempts", "udp_datagrams")


@dataclass
class StreamedCapture:
    """A capture reduced in one pass: its summary, attempt totals, per-source partial sums and kept rows."""

    summary: CaptureSummary
    udp_mode: str
    totals: dict[str, int]  # Attempts.totals() of the whole file
    partials: SourcePartials  # per source, histogram over `span` (moved by `offset_s`)
    kept: Attempts  # every attempt row of the `keep` sources (timestamps moved by `offset_s`)
    partitions: int  # how many partitions the rows were spread over (1: none written)


def partitions_for(size: int) -> int:
    return min(65_535, max(1, -(-int(size) // SPILL_FILE_BYTES)))


def stream_capture(reader: CaptureReader, *, udp: str = "first_per_destination", keep: Sequence[int] = (),
                   bins: int = 24, offset_s: float = 0.0, partitions: int | None = None) -> StreamedCapture:
    """Read `reader` (not yet iterated) once and reduce it (see the module's docstring). `offset_s` is taken
    off every timestamp before the histograms are binned, as `analyse_trial`'s capture offset. Raises
    CaptureReadError as the reader does."""
    build_attempts([], [], [], [], [], [], udp=udp)  # a bad udp mode fails before the file is read
    n_parts = partitions or partitions_for(reader.size)
    keep_arr = np.asarray(sorted(keep), np.uint32)
    with tempfile.TemporaryDirectory(prefix="testbed-analyse-") as tmp:
        spill = _Spill(Path(tmp), n_parts)
        kept = _read(reader, spill, keep_arr)
        lo_ns, hi_ns = reader.ts_range or (None, None)
        summary = CaptureSummary(str(reader.path), reader.format, list(reader.interfaces), reader.packets,
                                 reader.ipv4_packets, lo_ns, hi_ns, reader.partial, list(reader.problems),
                                 list(reader.notes))
        span = summary.span
        if span is not None:
            span = (span[0] - offset_s, span[1] - offset_s)
        elif spill.ts_range is not None:  # no packet time at all: the attempts' own (as source_timelines)
            span = (spill.ts_range[0] - offset_s, spill.ts_range[1] - offset_s)
        lo, hi = span or (0.0, 0.0)
        totals = dict.fromkeys(_TOTALS, 0)
        parts = []
        for rows in spill.parts():
            att = build_attempts(rows["ts"] - offset_s, rows["src"], rows["dst"], rows["sport"], rows["dport"],
                                 rows["proto"], udp=udp)
            del rows
            for k, v in att.totals().items():
                if k in totals:
                    totals[k] += v
            parts.append(source_partials(att, lo, hi, bins))
            del att
    cols = {c: _join(kept.pop(c), d) for c, d in (("index", np.int64), ("ts", np.float64), ("src", np.uint32),
                                                  ("dst", np.uint32), ("sport", np.uint16), ("dport", np.uint16),
                                                  ("proto", np.uint8), ("vlan", np.int32))}
    kept_att = build_attempts(cols["ts"] - offset_s, cols["src"], cols["dst"], cols["sport"], cols["dport"],
                              cols["proto"], udp=udp, packets=summary.packets, index=cols["index"],
                              vlan=cols["vlan"])
    return StreamedCapture(summary, udp, {"packets": summary.packets, **totals}, merge_partials(parts, bins),
                           kept_att, n_parts)


def _read(reader: CaptureReader, spill: _Spill, keep: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Stream the reader into the spill; the `keep` sources' rows (every _KEPT column) in memory."""
    kept: dict[str, list[np.ndarray]] = {c: [] for c in _KEPT}
    for pk in reader:
        sel = np.flatnonzero(pk.syn | pk.udp)
        if not len(sel):
            continue
        rows = np.empty(len(sel), _ROW)
        for c in ("ts", "src", "dst", "sport", "dport", "proto"):
            rows[c] = getattr(pk, c)[sel]
        spill.add(rows)
        if len(keep):
            mine = sel[np.isin(pk.src[sel], keep)]
            if len(mine):
                for c in _KEPT:
                    kept[c].append(getattr(pk, c)[mine])
    return kept


class _Spill:
    """Attempt rows partitioned by a hash of (src, dst): in memory for one partition, else one file each."""

    def __init__(self, tmp: Path, n: int):
        self.n = n
        self.ts_range: tuple[float, float] | None = None  # of the attempts' known timestamps
        self._mem: list[np.ndarray] = []
        self._paths = [tmp / f"part-{i}.rows" for i in range(n)] if n > 1 else []
        self._files = [p.open("wb") for p in self._paths]

    def add(self, rows: np.ndarray) -> None:
        ts = rows["ts"][np.isfinite(rows["ts"])]
        if len(ts):
            lo, hi = float(ts.min()), float(ts.max())
            self.ts_range = (lo, hi) if self.ts_range is None else (min(lo, self.ts_range[0]),
                                                                    max(hi, self.ts_range[1]))
        if self.n == 1:
            self._mem.append(rows)
            return
        k = (rows["src"].astype(np.uint64) << np.uint64(32)) | rows["dst"].astype(np.uint64)
        with np.errstate(over="ignore"):
            k *= np.uint64(0x9E3779B97F4A7C15)
        k >>= np.uint64(40)
        k %= np.uint64(self.n)
        part = k.astype(np.uint16)  # (at most 65,535 partitions: a 4 TiB capture)
        order = np.argsort(part, kind="stable")  # a radix sort: capture order within a partition
        ends = np.cumsum(np.bincount(part, minlength=self.n))
        rows = rows[order]
        start = 0
        for fh, end in zip(self._files, ends, strict=True):
            if end > start:
                fh.write(rows[start:end].data)
            start = int(end)

    def parts(self):
        """Each partition's rows in capture order, one at a time (each file deleted once read)."""
        if self.n == 1:
            rows = np.concatenate(self._mem) if self._mem else np.zeros(0, _ROW)
            self._mem.clear()
            yield rows
            return
        for fh in self._files:
            fh.close()
        for p in self._paths:
            rows = np.fromfile(p, _ROW)
            p.unlink()
            yield rows
            del rows

"""pcapng framing, resumable chunk after chunk: walks the blocks (sections, interfaces, Enhanced/Simple/obsolete
Packet Blocks) complete in a buffer, checks them, and hands their packet records to the shared dissection;
what it learnt (sections, interfaces, damage) carries over to the next chunk.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CaptureReadError
from .packets import (
    NO_RECORDS,
    PCAPNG_EPB,
    PCAPNG_IDB,
    PCAPNG_OPB,
    PCAPNG_SHB,
    PCAPNG_SPB,
    SUPPORTED_LINKTYPES,
    TS_UNKNOWN,
    Framed,
    Interface,
    _gather,
    _present,
    linktype_name,
)

SHB_MAGIC = b"\x0a\x0d\x0d\x0a"


@dataclass
class _Section:
    endian: str
    iface_base: int
    n_ifaces: int = 0
    unpack2: Callable[[memoryview, int], tuple[Any, ...]] = field(init=False, repr=False)  # (block type, length)

    def __post_init__(self) -> None:
        self.unpack2 = struct.Struct(self.endian + "II").unpack_from


class PcapngFramer:
    """Frames a pcapng file's packet blocks in a buffer, round after round (see `packets.Framed`)."""

    start = 0

    def __init__(self, p: Path):
        self.path = p
        self.interfaces: list[Interface] = []
        self.iface_block: list[int] = []  # file offset of each IDB (to forget those after a damaged block)
        self.tsinfo: list[tuple[int, int]] = []  # per interface: (if_tsresol byte, if_tsoffset seconds)
        self.sec: _Section | None = None
        self.sections = 0
        self.in_section = False  # where the walk stands: at a section's blocks, or where a section header may be
        self.problem: str | None = None
        self.stop: int | None = None  # file offset of the damage: nothing at or after it is trusted
        self.no_ts = 0  # packets from Simple Packet Blocks
        self.per_iface: Counter[int] = Counter()  # packets per interface
        self.peek = lambda at, n: b""  # (file offset, n) -> those bytes of the file: set by the reader

    # ------------------------------------------------------------------------------------------ one round

    def frame(self, arr: np.ndarray, base: int, have: int, size: int, n: int) -> Framed:
        mv = arr.data[:have]
        runs: list[tuple[_Section, list[int]]] = []  # EPB offsets (in the buffer), per section
        # blocks other than EPBs (SPB, OPB), handled one by one: (block off, data off, iface, ts units|None, cap, len)
        others: list[tuple[int, int, int, int | None, int, int]] = []
        off, need, done, err = 0, 12, False, None
        while True:
            if not self.in_section:
                if base + off >= size:
                    done = True
                    break
                if size - base - off < 12:
                    err = f"file ends inside a block header at byte {base + off} ({size - base - off} bytes left): truncated"
                    break
                if have - off < 12:
                    need = 12
                    break
                if bytes(mv[off:off + 4]) == SHB_MAGIC:
                    off, need, err = self._section_header(mv, base, have, size, off)
                    if err or need:
                        break
                elif self.sec is None:
                    raise CaptureReadError(f"{self.path}: pcapng file without a section header block")
                self.in_section = True
            assert self.sec is not None
            run: list[int] = []
            runs.append((self.sec, run))
            off, need, err = self._blocks(mv, base, have, size, off, run, others)
            if err:
                break
            if need:
                if need < 0:  # the end of the file
                    done, need = True, 0
                break
            self.in_section = False  # at a section header block
        if err:
            self.problem, self.stop, done = err, base + off, True
        recs = self._records(arr, base, have, size, runs, others)
        if self.stop is not None:
            done = True
        return Framed(*recs, consumed=off, need=need, done=done)

    def _section_header(self, mv: memoryview, base: int, have: int, size: int,
                        off: int) -> tuple[int, int, str | None]:
        """(offset after it, bytes needed to read it whole (0: it was read), problem)."""
        at = base + off
        bom = bytes(mv[off + 8:off + 12])
        endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
        if endian is None:
            if at == 0:
                raise CaptureReadError(f"{self.path}: pcapng section header with an invalid byte-order magic "
                                       f"({bom.hex(' ')})")
            return off, 0, f"corrupt section header at byte {at} (byte-order magic {bom.hex(' ')})"
        (blen,) = struct.unpack_from(endian + "I", mv, off + 4)
        if blen < 28 or blen % 4 or at + blen > size:
            if at == 0 and blen < 28:
                raise CaptureReadError(f"{self.path}: pcapng section header block has an invalid length {blen}")
            return off, 0, (f"section header block at byte {at} has length {blen}"
                            + (" beyond the end of the file: truncated" if at + blen > size else ": corrupt"))
        if off + blen > have:
            return off, blen, None
        self.sec = _Section(endian, len(self.interfaces))
        self.sections += 1
        return off + blen, 0, None

    def _blocks(self, mv: memoryview, base: int, have: int, size: int, off: int, run: list[int],
                others: list) -> tuple[int, int, str | None]:
        """Walk one section's blocks from `off` until its end (a section header), the end of the buffer or
        damage. EPB offsets are only collected here (their fields are parsed vectorised later); other blocks
        are handled as they come. Returns (offset reached, bytes needed from there (0: at a section header;
        -1: at the end of the file), problem or None)."""
        sec = self.sec
        assert sec is not None
        unpack2, app = sec.unpack2, run.append
        while True:
            try:
                while True:  # the hot loop: Enhanced Packet Blocks only
                    bt, bl = unpack2(mv, off)
                    if bt == PCAPNG_EPB and bl >= 32:
                        app(off)
                        off += bl
                    else:
                        break
            except struct.error:
                return self._buffer_end(mv, base, have, size, off, run, sec)
            if bt == PCAPNG_SHB:
                return off, 0, None
            stop = self._block_frame(mv, base, have, size, off, bt, bl, sec)
            if stop is None:
                problem = self._other_block(mv, base + off, off, bt, bl, sec, others)
                if problem:
                    return off, 0, problem
                off += bl
            else:
                return stop

    def _buffer_end(self, mv: memoryview, base: int, have: int, size: int, off: int, run: list[int],
                    sec: _Section) -> tuple[int, int, str | None]:
        """The walk reached the end of the buffer: how much more to read, or the end of the file, or damage."""
        if off > have:  # the last EPB runs past the buffer: read it whole next round, or it is cut short
            off = run.pop()
            (bl,) = struct.unpack_from(sec.endian + "I", mv, off + 4)
            at = base + off
            if at + bl > size:
                return off, 0, (f"file ends in the middle of a packet block at byte {at} (block length "
                                f"{bl}, {size - at} bytes left): truncated capture")
            return off, bl, self._epb_beyond(at, bl, sec)
        if base + off >= size:
            return off, -1, None
        if size - base - off < 8:
            return off, 0, (f"file ends inside a block header at byte {base + off} ({size - base - off} "
                            "bytes left): truncated")
        return off, 8, None

    def _block_frame(self, mv: memoryview, base: int, have: int, size: int, off: int, bt: int, bl: int,
                     sec: _Section) -> tuple[int, int, str | None] | None:
        """A block's length and trailer checked: None when it is whole in the buffer and sound, else where the
        walk stops (damage, or a block to read whole next round)."""
        at = base + off
        if bl < 12 or bl % 4:
            return off, 0, f"corrupt block at byte {at}: type {bt:#x}, invalid length {bl}"
        if at + bl > size:
            return off, 0, (f"file ends in the middle of a block at byte {at} (type {bt:#x}, length {bl}, "
                            f"{size - at} bytes left): truncated capture")
        if off + bl > have:  # read it whole next round, unless its trailer already says it is damage
            (trail,) = struct.unpack(sec.endian + "I", self.peek(at + bl - 4, 4))
            if trail != bl:
                return off, 0, (f"corrupt block at byte {at}: trailing length {trail} differs from leading "
                                f"length {bl}")
            return off, bl, None
        (trail,) = struct.unpack_from(sec.endian + "I", mv, off + bl - 4)
        if trail != bl:
            return off, 0, f"corrupt block at byte {at}: trailing length {trail} differs from leading length {bl}"
        return None

    def _other_block(self, mv: memoryview, at: int, off: int, bt: int, bl: int, sec: _Section,
                     others: list) -> str | None:
        """A block that is not a sound EPB: an interface description, a simple or obsolete packet block (or
        anything else, skipped). Its problem, or None."""
        endian = sec.endian
        if bt == PCAPNG_IDB and bl >= 20:
            lt, _res, snap = struct.unpack_from(endian + "HHI", mv, off + 8)
            name, resol, tsoff = _idb_options(mv, off + 16, off + bl - 4, endian)
            self.interfaces.append(Interface(lt, snap, _resol_name(resol), name))
            sec.n_ifaces += 1
            self.iface_block.append(at)
            self.tsinfo.append((resol, tsoff))
        elif bt == PCAPNG_SPB and bl >= 16:
            if sec.n_ifaces == 0:
                return f"simple packet block at byte {at} before any interface description"
            (wl,) = struct.unpack_from(endian + "I", mv, off + 8)
            snap = self.interfaces[sec.iface_base].snaplen
            cap = min(wl, bl - 16, snap if snap else wl)
            others.append((off, off + 12, sec.iface_base, None, cap, wl))
        elif bt == PCAPNG_OPB and bl >= 32:
            ifc, _drops, hi, lo, cap, wl = struct.unpack_from(endian + "HHIIII", mv, off + 8)
            if ifc >= sec.n_ifaces or 32 + cap > bl:
                return (f"corrupt packet block at byte {at} (obsolete format): interface {ifc}, "
                        f"length {cap}")
            others.append((off, off + 28, sec.iface_base + ifc, (hi << 32) | lo, cap, wl))
        elif bt == PCAPNG_EPB:  # bl < 32
            return f"corrupt packet block at byte {at}: length {bl} is too short"
        return None

    def _epb_beyond(self, at: int, bl: int, sec: _Section) -> str | None:
        """An EPB that runs past the buffer is checked from the file before the buffer grows to hold it (a
        damaged length must not make the reader allocate it): its problem, or None."""
        _bt, _bl, ifc, _hi, _lo, cap, _wl = struct.unpack(sec.endian + "7I", self.peek(at, 28))
        (trail,) = struct.unpack(sec.endian + "I", self.peek(at + bl - 4, 4))
        described = ifc < sec.n_ifaces and self.iface_block[sec.iface_base + ifc] < at
        if bl % 4 == 0 and 32 + cap <= bl and trail == bl and described:
            return None
        return _epb_problem(at, bl, cap, ifc, described, trail)

    # ------------------------------------------------------------------------------- records of one round

    def _records(self, arr: np.ndarray, base: int, have: int, size: int, runs: list, others: list
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The round's packet records, EPBs checked vectorised (the first bad one is damage), in file order."""
        cols: list[tuple[np.ndarray, ...]] = []
        blocks = np.array(self.iface_block, np.int64)
        for s, run in runs:
            if not run:
                continue
            if self.stop is not None and base + run[0] >= self.stop:
                break
            o = np.array(run, dtype=np.int64)
            h = _gather(arr, o, 28).view(s.endian + "u4").reshape(-1, 7).astype(np.int64)
            blen, ifc, hi, lo, cap, wl = h[:, 1], h[:, 2], h[:, 3], h[:, 4], h[:, 5], h[:, 6]
            trailer = _gather(arr, o + blen - 4, 4).view(s.endian + "u4").ravel().astype(np.int64)
            g = np.minimum(s.iface_base + np.minimum(ifc, max(s.n_ifaces - 1, 0)), max(len(blocks) - 1, 0))
            # an interface is described by an IDB before the packet that uses it
            described = (ifc < s.n_ifaces) & (blocks[g] < base + o) if len(blocks) else np.zeros(len(o), bool)
            bad = (blen % 4 != 0) | (32 + cap > blen) | (trailer != blen) | ~described
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                at = base + int(o[k])
                if self.stop is None or at < self.stop:  # damage found while walking after it was its consequence
                    self.stop = at
                    self.problem = _epb_problem(at, int(blen[k]), int(cap[k]), int(ifc[k]), bool(described[k]),
                                                int(trailer[k]))
                o, ifc, hi, lo, cap, wl = (x[:k] for x in (o, ifc, hi, lo, cap, wl))
            units = (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)
            cols.append((o, o + 28, ifc + s.iface_base, units, cap, wl, np.zeros(len(o), bool)))
        if self.stop is not None:
            others = [r for r in others if base + r[0] < self.stop]
        if others:
            ob, od, oi, ou, oc, ow = zip(*others, strict=True)
            cols.append((np.array(ob, np.int64), np.array(od, np.int64), np.array(oi, np.int64),
                         np.array([u or 0 for u in ou], np.uint64), np.array(oc, np.int64), np.array(ow, np.int64),
                         np.array([u is None for u in ou], bool)))
        if not cols:
            return NO_RECORDS, NO_RECORDS, NO_RECORDS, NO_RECORDS, np.zeros(0, np.uint16), np.zeros(0, np.uint16)
        o, data_off, ifc, units, cap, wl, no_ts = (np.concatenate([c[i] for c in cols]) for i in range(7))
        if len(cols) > 1:
            order = np.argsort(o, kind="stable")
            o, data_off, ifc, units, cap, wl, no_ts = (x[order] for x in (o, data_off, ifc, units, cap, wl, no_ts))
        ts_ns = np.zeros(len(o), np.int64)
        for i in _present(ifc):
            m = ifc == i
            ts_ns[m] = _units_to_ns(units[m], *self.tsinfo[int(i)])
            self.per_iface[int(i)] += int(m.sum())
        ts_ns[no_ts] = TS_UNKNOWN
        self.no_ts += int(no_ts.sum())
        lt = np.array([f.linktype for f in self.interfaces], dtype=np.uint16)[ifc] if len(o) else np.zeros(0, np.uint16)
        return data_off, cap, wl, ts_ns, ifc.astype(np.uint16), lt

    # -------------------------------------------------------------------------------------- the whole file

    def finish(self, packets: int) -> tuple[list[str], list[str]]:
        """(problems, notes) of the whole file; raises CaptureReadError when none of it can be analysed."""
        problems = [self.problem] if self.problem else []
        if not self.sections:
            raise CaptureReadError(f"{self.path}: no readable pcapng section header: " + "; ".join(problems))
        # interfaces described before the damage, and any a kept packet refers to (indices must stay valid)
        live = sum(1 for b in self.iface_block if self.stop is None or b < self.stop)
        used = max(self.per_iface) + 1 if self.per_iface else 0
        del self.interfaces[max(live, used):]
        supported = [f.supported for f in self.interfaces]
        if not all(supported) and not any(self.per_iface[i] for i, ok in enumerate(supported) if ok):
            bad_lts = sorted({f.linktype for f in self.interfaces if not f.supported})
            raise CaptureReadError(
                f"{self.path}: link type{'s' if len(bad_lts) > 1 else ''} "
                + ", ".join(f"{x} ({linktype_name(x)})" for x in bad_lts) + " not supported"
                + ("" if packets == 0 else f"; none of its {packets} packets can be analysed"),
                hint="supported: " + ", ".join(f"{k} {v}" for k, v in SUPPORTED_LINKTYPES.items()))
        for i in sorted(self.per_iface):
            f = self.interfaces[i]
            if not f.supported:
                problems.append(f"{self.per_iface[i]} packets on interface {i} have unsupported link type "
                                f"{f.linktype} ({linktype_name(f.linktype)}) and were not dissected")
        notes = [f"{self.no_ts} packets come from Simple Packet Blocks, which carry no timestamp"] if self.no_ts else []
        return problems, notes


def _epb_problem(at: int, blen: int, cap: int, ifc: int, described: bool, trailer: int) -> str:
    if not described:
        return f"corrupt packet block at byte {at}: interface {ifc} was never described"
    if blen % 4 or 32 + cap > blen:
        return f"corrupt packet block at byte {at}: block length {blen} cannot hold {cap} captured bytes"
    return f"corrupt packet block at byte {at}: trailing length {trailer} differs from leading length {blen}"


def _idb_options(mv: memoryview, start: int, end: int, endian: str) -> tuple[str | None, int, int]:
    name, resol, tsoff = None, 6, 0
    while start + 4 <= end:
        code, ln = struct.unpack_from(endian + "HH", mv, start)
        if code == 0 or start + 4 + ln > end:
            break
        val = bytes(mv[start + 4:start + 4 + ln])
        if code == 2:
            name = val.rstrip(b"\0").decode("utf-8", "replace")
        elif code == 9 and ln >= 1:
            resol = val[0]
        elif code == 14 and ln >= 8:
            (tsoff,) = struct.unpack(endian + "q", val[:8])
        start += 4 + ((ln + 3) & ~3)
    return name, resol, tsoff


def _resol_name(resol: int) -> str:
    if resol & 0x80:
        return f"2^-{resol & 0x7F}"
    return {6: "us", 9: "ns"}.get(resol, f"10^-{resol}")


def _units_to_ns(units: np.ndarray, resol: int, tsoffset: int) -> np.ndarray:
    """pcapng timestamps (in the interface's if_tsresol units) to int64 nanoseconds since the epoch."""
    off_ns = np.int64(tsoffset) * np.int64(1_000_000_000)
    if resol & 0x80:
        k = resol & 0x7F
        if k >= 64:         # a damaged or absurd option: every 64-bit count is a fraction of a second
            return np.round(units.astype(np.float64) * (1e9 / 2.0 ** k)).astype(np.int64) + off_ns
        secs = (units >> np.uint64(k)).astype(np.int64)
        frac = (units & np.uint64((1 << k) - 1)).astype(np.float64)
        return secs * 1_000_000_000 + np.round(frac * (1e9 / 2.0 ** k)).astype(np.int64) + off_ns
    u = units.astype(np.int64)
    if resol <= 9:
        return u * np.int64(10 ** (9 - resol)) + off_ns
    if resol - 9 > 18:      # 10**19 is past int64: no 64-bit count reaches a nanosecond
        return np.zeros_like(u) + off_ns
    return u // np.int64(10 ** (resol - 9)) + off_ns


"""pcapng framing: walks a file's blocks (sections, interfaces, Enhanced/Simple/obsolete Packet Blocks), checks
them and hands the packet records to the shared dissection in `packets`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CaptureReadError
from .packets import (
    PCAPNG_EPB,
    PCAPNG_IDB,
    PCAPNG_OPB,
    PCAPNG_SHB,
    PCAPNG_SPB,
    SUPPORTED_LINKTYPES,
    TS_UNKNOWN,
    Interface,
    Packets,
    _dissect,
    _finish,
    _gather,
    linktype_name,
)


@dataclass
class _Section:
    endian: str
    iface_base: int
    n_ifaces: int = 0
    epb: list[int] = field(default_factory=list)


def _read_pcapng(p: Path, arr: np.ndarray, mv: memoryview, size: int) -> Packets:
    interfaces: list[Interface] = []
    iface_block: list[int] = []  # block offset of each IDB (to forget those after a damaged block)
    tsinfo: list[tuple[int, int]] = []  # per interface: (if_tsresol byte, if_tsoffset seconds)
    sections: list[_Section] = []
    # blocks other than EPBs (SPB, OPB), handled one by one: (block off, data off, iface, ts units|None, cap, len)
    others: list[tuple[int, int, int, int | None, int, int]] = []
    problems: list[str] = []
    stop = size  # packets in blocks at or after this offset are not trusted
    off = 0
    sec: _Section | None = None
    while off < size:
        if size - off < 12:
            problems.append(f"file ends inside a block header at byte {off} ({size - off} bytes left): truncated")
            stop = off
            break
        if bytes(mv[off:off + 4]) == b"\x0a\x0d\x0d\x0a":
            bom = bytes(mv[off + 8:off + 12])
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
            if endian is None:
                if off == 0:
                    raise CaptureReadError(f"{p}: pcapng section header with an invalid byte-order magic "
                                           f"({bom.hex(' ')})")
                problems.append(f"corrupt section header at byte {off} (byte-order magic {bom.hex(' ')})")
                stop = off
                break
            (blen,) = struct.unpack_from(endian + "I", mv, off + 4)
            if blen < 28 or blen % 4 or off + blen > size:
                if off == 0 and blen < 28:
                    raise CaptureReadError(f"{p}: pcapng section header block has an invalid length {blen}")
                problems.append(f"section header block at byte {off} has length {blen}"
                                + (" beyond the end of the file: truncated" if off + blen > size else ": corrupt"))
                stop = off
                break
            sec = _Section(endian, len(interfaces))
            sections.append(sec)
            off += blen
        elif sec is None:
            raise CaptureReadError(f"{p}: pcapng file without a section header block")
        off, err = _pcapng_section_blocks(mv, size, off, sec, interfaces, iface_block, tsinfo, others)
        if err:
            problems.append(err)
            stop = off
            break
    if not sections:
        raise CaptureReadError(f"{p}: no readable pcapng section header: " + "; ".join(problems))

    # vectorised EPB parse, one run per section
    cols: list[tuple[np.ndarray, ...]] = []
    for s in sections:
        if not s.epb:
            continue
        o = np.array(s.epb, dtype=np.int64)
        h = _gather(arr, o, 28).view(s.endian + "u4").reshape(-1, 7).astype(np.int64)
        blen, ifc, hi, lo, cap, wl = h[:, 1], h[:, 2], h[:, 3], h[:, 4], h[:, 5], h[:, 6]
        fits = o + blen <= size
        trailer = np.zeros(len(o), np.int64)
        if fits.any():
            t_off = np.where(fits, o + blen - 4, 0)
            trailer = _gather(arr, t_off, 4).view(s.endian + "u4").ravel().astype(np.int64)
        n_if = s.n_ifaces
        bad = (blen % 4 != 0) | ~fits | (32 + cap > blen) | (trailer != blen) | (ifc >= n_if)
        ok_until = len(o)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            at = int(o[k])
            if at < stop:  # damage found while walking blocks after this one was misframing's consequence
                stop = at
                problems = [_epb_problem(at, int(blen[k]), int(cap[k]), int(ifc[k]), n_if, size,
                                         bool(fits[k]), int(trailer[k]))]
            ok_until = k
        keep = o[:ok_until] < stop
        o, ifc, hi, lo, cap, wl = (x[:ok_until][keep] for x in (o, ifc, hi, lo, cap, wl))
        units = (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)
        cols.append((o, o + 28, ifc + s.iface_base, units, cap, wl))
    others = [r for r in others if r[0] < stop]
    no_ts = np.array([r[0] for r in others if r[3] is None], dtype=np.int64)
    if others:
        ob, od, oi, ou, oc, ow = zip(*others, strict=True)
        cols.append((np.array(ob, np.int64), np.array(od, np.int64), np.array(oi, np.int64),
                     np.array([u or 0 for u in ou], np.uint64), np.array(oc, np.int64), np.array(ow, np.int64)))
    if cols:
        o, data_off, ifc, units, cap, wl = (np.concatenate([c[i] for c in cols]) for i in range(6))
        if len(cols) > 1:
            order = np.argsort(o, kind="stable")
            o, data_off, ifc, units, cap, wl = (x[order] for x in (o, data_off, ifc, units, cap, wl))
    else:
        o = data_off = ifc = cap = wl = np.zeros(0, np.int64)
        units = np.zeros(0, np.uint64)

    # interfaces described before the damage, and any a kept packet refers to (indices must stay valid)
    live = sum(1 for b in iface_block if b < stop)
    interfaces = interfaces[:max(live, int(ifc.max()) + 1 if len(o) else 0)]
    ts_ns = np.zeros(len(o), np.int64)
    for i in np.unique(ifc):
        m = ifc == i
        ts_ns[m] = _units_to_ns(units[m], *tsinfo[int(i)])
    if len(no_ts):
        ts_ns[np.isin(o, no_ts)] = TS_UNKNOWN
    lt = np.array([f.linktype for f in interfaces], dtype=np.uint16)[ifc] if len(o) else np.zeros(0, np.uint16)

    supported = np.array([f.supported for f in interfaces], dtype=bool)
    if not supported.all() and (len(o) == 0 or not supported[ifc].any()):
        bad_lts = sorted({f.linktype for f in interfaces if not f.supported})
        raise CaptureReadError(
            f"{p}: link type{'s' if len(bad_lts) > 1 else ''} "
            + ", ".join(f"{x} ({linktype_name(x)})" for x in bad_lts) + " not supported"
            + ("" if len(o) == 0 else f"; none of its {len(o)} packets can be analysed"),
            hint="supported: " + ", ".join(f"{k} {v}" for k, v in SUPPORTED_LINKTYPES.items()))
    if len(o) and not supported[ifc].all():
        for i in np.unique(ifc[~supported[ifc]]):
            f = interfaces[int(i)]
            problems.append(f"{int((ifc == i).sum())} packets on interface {int(i)} have unsupported link type "
                            f"{f.linktype} ({linktype_name(f.linktype)}) and were not dissected")
    pk = _dissect(p, "pcapng", interfaces, arr, data_off, cap, wl, ts_ns, ifc.astype(np.uint16), lt)
    if len(no_ts):
        pk.notes.append(f"{len(no_ts)} packets come from Simple Packet Blocks, which carry no timestamp")
    _finish(pk, problems)
    return pk


def _epb_problem(at: int, blen: int, cap: int, ifc: int, n_if: int, size: int, fits: bool, trailer: int) -> str:
    if not fits:
        return (f"file ends in the middle of a packet block at byte {at} (block length {blen}, "
                f"{size - at} bytes left): truncated capture")
    if ifc >= n_if:
        return f"corrupt packet block at byte {at}: interface {ifc} was never described"
    if blen % 4 or 32 + cap > blen:
        return f"corrupt packet block at byte {at}: block length {blen} cannot hold {cap} captured bytes"
    return f"corrupt packet block at byte {at}: trailing length {trailer} differs from leading length {blen}"


def _pcapng_section_blocks(mv: memoryview, size: int, off: int, sec: _Section, interfaces: list[Interface],
                           iface_block: list[int], tsinfo: list[tuple[int, int]],
                           others: list) -> tuple[int, str | None]:
    """Walk one section's blocks from `off` until the next section header or the end of the file.

    EPB offsets are only collected here (their fields are parsed vectorised later); other blocks are
    handled as they come. Returns (offset reached, problem or None).
    """
    endian = sec.endian
    unpack2 = struct.Struct(endian + "II").unpack_from
    app = sec.epb.append
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
            if off >= size:
                return off, None
            return off, f"file ends inside a block header at byte {off} ({size - off} bytes left): truncated"
        if bt == PCAPNG_SHB:
            return off, None
        if bl < 12 or bl % 4:
            return off, f"corrupt block at byte {off}: type {bt:#x}, invalid length {bl}"
        if off + bl > size:
            return off, (f"file ends in the middle of a block at byte {off} (type {bt:#x}, length {bl}, "
                         f"{size - off} bytes left): truncated capture")
        (trail,) = struct.unpack_from(endian + "I", mv, off + bl - 4)
        if trail != bl:
            return off, f"corrupt block at byte {off}: trailing length {trail} differs from leading length {bl}"
        local_ifaces = len(interfaces) - sec.iface_base
        if bt == PCAPNG_IDB and bl >= 20:
            lt, _res, snap = struct.unpack_from(endian + "HHI", mv, off + 8)
            name, resol, tsoff = _idb_options(mv, off + 16, off + bl - 4, endian)
            interfaces.append(Interface(lt, snap, _resol_name(resol), name))
            sec.n_ifaces += 1
            iface_block.append(off)
            tsinfo.append((resol, tsoff))
        elif bt == PCAPNG_SPB and bl >= 16:
            if local_ifaces == 0:
                return off, f"simple packet block at byte {off} before any interface description"
            (wl,) = struct.unpack_from(endian + "I", mv, off + 8)
            snap = interfaces[sec.iface_base].snaplen
            cap = min(wl, bl - 16, snap if snap else wl)
            others.append((off, off + 12, sec.iface_base, None, cap, wl))
        elif bt == PCAPNG_OPB and bl >= 32:
            ifc, _drops, hi, lo, cap, wl = struct.unpack_from(endian + "HHIIII", mv, off + 8)
            if ifc >= local_ifaces or 32 + cap > bl:
                return off, f"corrupt packet block at byte {off} (obsolete format): interface {ifc}, length {cap}"
            others.append((off, off + 28, sec.iface_base + ifc, (hi << 32) | lo, cap, wl))
        elif bt == PCAPNG_EPB:  # bl < 32
            return off, f"corrupt packet block at byte {off}: length {bl} is too short"
        off += bl


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
        secs = (units >> np.uint64(k)).astype(np.int64)
        frac = (units & np.uint64((1 << k) - 1)).astype(np.float64)
        return secs * 1_000_000_000 + np.round(frac * (1e9 / 2.0 ** k)).astype(np.int64) + off_ns
    u = units.astype(np.int64)
    if resol <= 9:
        return u * np.int64(10 ** (9 - resol)) + off_ns
    return u // np.int64(10 ** (resol - 9)) + off_ns


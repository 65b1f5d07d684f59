"""A fast reader for pcap and pcapng captures: frames records with one tight `struct` loop, then parses
Ethernet (+802.1Q/QinQ), Linux cooked (SLL, SLL2), raw IPv4 and BSD loopback, IPv4, TCP and UDP headers
with NumPy over the raw bytes, all packets at once. Nothing else is dissected.

`read_capture(path)` returns a `Packets` table (one row per packet record, in file order). A file that cannot
be analysed at all raises `CaptureReadError`; a file damaged part-way is read up to the damage and flagged
`partial`, with the reason in `problems`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CaptureReadError, reading

# link types we dissect (LINKTYPE_* values as stored in files) and a few names for those we do not
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL2 = 113, 228, 276
SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "NULL (BSD loopback)",
    LINKTYPE_ETHERNET: "ETHERNET",
    LINKTYPE_RAW: "RAW (IP)",
    LINKTYPE_LOOP: "LOOP (OpenBSD loopback)",
    LINKTYPE_LINUX_SLL: "LINUX_SLL (cooked)",
    LINKTYPE_IPV4: "IPV4",
    LINKTYPE_LINUX_SLL2: "LINUX_SLL2 (cooked v2)",
}
OTHER_LINKTYPE_NAMES = {
    6: "IEEE802_5", 9: "PPP", 10: "FDDI", 50: "PPP_HDLC", 104: "C_HDLC", 105: "IEEE802_11",
    127: "IEEE802_11_RADIOTAP", 147: "USER0", 192: "PPI", 195: "IEEE802_15_4", 220: "USB_LINUX_MMAPPED",
    229: "IPV6", 249: "NETLINK", 253: "NFLOG",
}

VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
ETHERTYPE_IPV4 = 0x0800
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
FRAG_NONE, FRAG_FIRST, FRAG_LATER = 0, 1, 2

PCAPNG_SHB, PCAPNG_IDB, PCAPNG_OPB, PCAPNG_SPB, PCAPNG_EPB = 0x0A0D0D0A, 1, 2, 3, 6
MAX_CAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN; larger record lengths mean a corrupt header
_PAD = 160  # zero bytes after the file so fixed-size header windows never run off the buffer
TS_UNKNOWN = np.iinfo(np.int64).min  # pcapng Simple Packet Blocks carry no timestamp


def linktype_name(lt: int) -> str:
    return SUPPORTED_LINKTYPES.get(lt) or OTHER_LINKTYPE_NAMES.get(lt) or "unknown"


@dataclass(frozen=True)
class Interface:
    """One capture interface: a pcap file has one, a pcapng file one per Interface Description Block."""

    linktype: int
    snaplen: int
    tsresol: str = "us"  # "us", "ns", "10^-k" or "2^-k"
    name: str | None = None

    @property
    def supported(self) -> bool:
        return self.linktype in SUPPORTED_LINKTYPES


@dataclass
class Packets:
    """Parsed header fields of every packet record in a capture, as NumPy columns in file order.

    Fields that a packet does not have are 0 (addresses, ports, flags) or -1 (VLAN ids); the boolean
    columns `ipv4` and `l4` say which rows carry a readable IPv4 header and readable TCP/UDP ports.
    Non-first IP fragments have `frag == FRAG_LATER` and never `l4` (their payload is not a header).
    """

    path: str
    format: str  # "pcap" | "pcapng"
    interfaces: list[Interface]
    ts_ns: np.ndarray  # int64 ns since the epoch; TS_UNKNOWN where the file has no timestamp
    caplen: np.ndarray  # uint32
    wirelen: np.ndarray  # uint32
    iface: np.ndarray  # uint16 index into interfaces
    vlan: np.ndarray  # int32 outermost 802.1Q/802.1ad VLAN id, -1 untagged
    vlan_inner: np.ndarray  # int32 second tag's VLAN id (QinQ), -1 if none
    ipv4: np.ndarray  # bool
    src: np.ndarray  # uint32 IPv4 source, host order
    dst: np.ndarray  # uint32
    proto: np.ndarray  # uint8 IP protocol
    ttl: np.ndarray  # uint8
    frag: np.ndarray  # uint8 FRAG_NONE / FRAG_FIRST / FRAG_LATER
    l4: np.ndarray  # bool: sport/dport are valid (TCP or UDP header present)
    sport: np.ndarray  # uint16
    dport: np.ndarray  # uint16
    tcp_flags: np.ndarray  # uint8, 0 unless a TCP header is present
    partial: bool = False
    problems: list[str] = field(default_factory=list)  # why the read is partial
    notes: list[str] = field(default_factory=list)  # worth saying, but the read is complete

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    @property
    def ts(self) -> np.ndarray:
        """Timestamps as float64 seconds since the epoch (NaN where unknown)."""
        out = self.ts_ns.astype(np.float64) / 1e9
        out[self.ts_ns == TS_UNKNOWN] = np.nan
        return out

    @property
    def linktypes(self) -> list[int]:
        return sorted({i.linktype for i in self.interfaces})

    @property
    def tcp(self) -> np.ndarray:
        return self.l4 & (self.proto == 6)

    @property
    def udp(self) -> np.ndarray:
        return self.l4 & (self.proto == 17)

    @property
    def syn(self) -> np.ndarray:
        """TCP SYN without ACK: a connection attempt (first transmission or retransmission)."""
        return self.tcp & ((self.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)


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


def _gather(arr: np.ndarray, offs: np.ndarray, width: int) -> np.ndarray:
    """`width` bytes starting at each offset, as an (n, width) uint8 array (one vectorised copy)."""
    rows = np.ndarray(shape=(arr.size - width + 1,), dtype=np.dtype((np.void, width)), buffer=arr,
                      offset=0, strides=(1,))
    return rows[offs].view(np.uint8).reshape(-1, width)


def _be16(a: np.ndarray, k: int) -> np.ndarray:
    return (a[:, k].astype(np.uint16) << 8) | a[:, k + 1]


def _u32(a: np.ndarray, k: int, endian: str) -> np.ndarray:
    return np.ascontiguousarray(a[:, k:k + 4]).view(endian + "u4").ravel()


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


# ------------------------------------------------------------------------------------------------------ pcapng

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


# -------------------------------------------------------------------------------------- header dissection

def _dissect(p: Path, fmt: str, interfaces: list[Interface], arr: np.ndarray, data_off: np.ndarray,
             caplen: np.ndarray, wirelen: np.ndarray, ts_ns: np.ndarray, iface: np.ndarray,
             linktype: np.ndarray) -> Packets:
    n = len(data_off)
    caplen = caplen.astype(np.int64)
    et = np.zeros(n, np.int64)
    l3 = np.zeros(n, np.int64)
    vlan = np.full(n, -1, np.int32)
    vlan2 = np.full(n, -1, np.int32)
    present = np.unique(linktype) if n else np.zeros(0, np.uint16)
    for lt in present:
        lt = int(lt)
        if lt not in SUPPORTED_LINKTYPES:
            continue
        sel = slice(None) if len(present) == 1 else np.flatnonzero(linktype == lt)
        w = _gather(arr, data_off[sel], 24)
        if lt == LINKTYPE_ETHERNET:
            e = _be16(w, 12).astype(np.int64)
            t1 = np.isin(e, VLAN_TPIDS) & (caplen[sel] >= 18)
            v1 = np.where(t1, (_be16(w, 14) & 0x0FFF).astype(np.int32), -1)
            e = np.where(t1, _be16(w, 16), e)
            t2 = t1 & np.isin(e, VLAN_TPIDS) & (caplen[sel] >= 22)
            v2 = np.where(t2, (_be16(w, 18) & 0x0FFF).astype(np.int32), -1)
            e = np.where(t2, _be16(w, 20), e)
            et[sel], vlan[sel], vlan2[sel] = e, v1, v2
            l3[sel] = np.where(t2, 22, np.where(t1, 18, 14))
        elif lt == LINKTYPE_LINUX_SLL:
            et[sel], l3[sel] = _be16(w, 14), 16
        elif lt == LINKTYPE_LINUX_SLL2:
            et[sel], l3[sel] = _be16(w, 0), 20
        elif lt in (LINKTYPE_RAW, LINKTYPE_IPV4):
            et[sel], l3[sel] = np.where((w[:, 0] >> 4) == 4, ETHERTYPE_IPV4, 0), 0
        else:  # NULL / LOOP: a 4-byte address family, AF_INET == 2 (host byte order for NULL)
            fam_le, fam_be = _u32(w, 0, "<"), _u32(w, 0, ">")
            et[sel], l3[sel] = np.where((fam_le == 2) | (fam_be == 2), ETHERTYPE_IPV4, 0), 4

    ip = _gather(arr, data_off + l3, 20)
    ihl = (ip[:, 0] & 0x0F).astype(np.int64) * 4
    ipv4 = (et == ETHERTYPE_IPV4) & ((ip[:, 0] >> 4) == 4) & (ihl >= 20) & (caplen >= l3 + 20)
    tot = _be16(ip, 2).astype(np.int64)
    fr = _be16(ip, 6)
    foff = fr & 0x1FFF
    frag = np.where(~ipv4, FRAG_NONE, np.where(foff > 0, FRAG_LATER,
                                               np.where(fr & 0x2000, FRAG_FIRST, FRAG_NONE))).astype(np.uint8)
    proto = np.where(ipv4, ip[:, 9], 0).astype(np.uint8)
    src = np.where(ipv4, _u32(ip, 12, ">"), 0).astype(np.uint32)
    dst = np.where(ipv4, _u32(ip, 16, ">"), 0).astype(np.uint32)
    ttl = np.where(ipv4, ip[:, 8], 0).astype(np.uint8)

    l4off = l3 + np.where(ipv4, ihl, 0)
    l4w = _gather(arr, data_off + l4off, 14)
    # bytes of transport header really there: captured, and inside the IP datagram (not Ethernet padding);
    # total length 0 is what TSO-offloaded packets captured on the sender show: trust the capture then
    avail = np.minimum(caplen - l4off, np.where(tot == 0, caplen, tot - ihl))
    first = ipv4 & (foff == 0) & (caplen >= l4off)
    is_tcp = first & (proto == 6) & (avail >= 20)
    is_udp = first & (proto == 17) & (avail >= 8)
    l4 = is_tcp | is_udp
    sport = np.where(l4, _be16(l4w, 0), 0).astype(np.uint16)
    dport = np.where(l4, _be16(l4w, 2), 0).astype(np.uint16)
    flags = np.where(is_tcp, l4w[:, 13], 0).astype(np.uint8)
    return Packets(
        path=str(p), format=fmt, interfaces=interfaces, ts_ns=ts_ns.astype(np.int64),
        caplen=caplen.astype(np.uint32), wirelen=np.asarray(wirelen).astype(np.uint32), iface=iface,
        vlan=vlan, vlan_inner=vlan2, ipv4=ipv4, src=src, dst=dst, proto=proto, ttl=ttl, frag=frag,
        l4=l4, sport=sport, dport=dport, tcp_flags=flags)


def _finish(pk: Packets, problems: list[str]) -> None:
    pk.problems.extend(problems)
    pk.partial = bool(pk.problems)
    if len(pk) == 0 and not pk.partial:
        pk.notes.append("the capture contains no packets (only its file header)")

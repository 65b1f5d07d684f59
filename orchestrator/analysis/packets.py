"""Parsed packet headers: the `Packets` table (NumPy columns, one row per packet record), the link types and
constants the readers share, and the vectorised dissection of Ethernet (+802.1Q/QinQ), Linux cooked (SLL,
SLL2), raw IPv4 and BSD loopback frames, IPv4, TCP and UDP headers over all the records of a buffer at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

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
    """Parsed header fields of packet records, as NumPy columns in file order: every record of a capture
    (`read_capture`), one chunk of them (`CaptureReader`), or only the rows that matter (`scan_capture`);
    `index` says which record of the capture each row is.

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
    index: np.ndarray  # int64 the record's number in the capture, from 0
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

    @property
    def answer(self) -> np.ndarray:
        """TCP RST (any other flags) or SYN+ACK: what answers a connection attempt."""
        f = self.tcp_flags
        return self.tcp & (((f & TCP_RST) != 0) | ((f & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)))

    def select(self, rows: np.ndarray) -> Packets:
        """These rows only (a boolean mask or indices), every column; the file's facts stay as they are."""
        return replace(self, **{c: getattr(self, c)[rows] for c in COLUMNS},
                       problems=list(self.problems), notes=list(self.notes))

    @classmethod
    def concat(cls, parts: list[Packets], **facts) -> Packets:
        """One table from chunks of the same capture (in order); `facts` (path, format, interfaces,
        partial, problems, notes) are the whole file's. A column's chunks are freed as it is joined."""
        cols: dict[str, Any] = {}       # column name -> its joined array
        for c in COLUMNS:
            cols[c] = np.concatenate([getattr(x, c) for x in parts]) if parts else _EMPTY[c]()
            for x in parts:
                setattr(x, c, None)
        return cls(**facts, **cols)


COLUMNS = tuple(f.name for f in fields(Packets) if f.type == "np.ndarray")
_DTYPES = {"ts_ns": np.int64, "caplen": np.uint32, "wirelen": np.uint32, "iface": np.uint16, "vlan": np.int32,
           "vlan_inner": np.int32, "ipv4": bool, "src": np.uint32, "dst": np.uint32, "proto": np.uint8,
           "ttl": np.uint8, "frag": np.uint8, "l4": bool, "sport": np.uint16, "dport": np.uint16,
           "tcp_flags": np.uint8, "index": np.int64}
_EMPTY = {c: (lambda d=d: np.zeros(0, d)) for c, d in _DTYPES.items()}




def _gather(arr: np.ndarray, offs: np.ndarray, width: int) -> np.ndarray:
    """`width` bytes starting at each offset, as an (n, width) uint8 array (one vectorised copy)."""
    return window(arr, offs, np.dtype((np.void, width))).view(np.uint8).reshape(-1, width)


def window(arr: np.ndarray, offs: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The `dtype.itemsize` bytes at each offset, copied in one go and viewed as `dtype` (a structured dtype
    names the header fields in them: no per-field copies)."""
    width = dtype.itemsize
    rows = np.ndarray(shape=(arr.size - width + 1,), dtype=np.dtype((np.void, width)), buffer=arr, strides=(1,))
    return rows[offs].view(dtype)


def fields_at(width: int, **spec: tuple[str, int]) -> np.dtype:
    """A structured dtype of `width` bytes with the named fields (format, offset)."""
    return np.dtype({"names": list(spec), "formats": [f for f, _ in spec.values()],
                     "offsets": [o for _, o in spec.values()], "itemsize": width})


def ethernet_fields(at: int = 0, width: int = 24, **more: tuple[str, int]) -> np.dtype:
    """The ethertype and up to two VLAN tags of an Ethernet header starting `at` bytes into a window (and the
    `more` fields before it)."""
    return fields_at(width, **more, e1=(">u2", at + 12), v1=(">u2", at + 14), e2=(">u2", at + 16),
                     v2=(">u2", at + 18), e3=(">u2", at + 20))


_ETH = ethernet_fields()
_IP_L4 = fields_at(34, vihl=("u1", 0), tot=(">u2", 2), frag=(">u2", 6), ttl=("u1", 8), proto=("u1", 9),
                   src=(">u4", 12), dst=(">u4", 16), sport=(">u2", 20), dport=(">u2", 22), flags=("u1", 33))
_L4 = fields_at(14, sport=(">u2", 0), dport=(">u2", 2), flags=("u1", 13))
_L2_OTHER = fields_at(24, sll=(">u2", 14), sll2=(">u2", 0), ver=("u1", 0), fam_le=("<u4", 0), fam_be=(">u4", 0))


# lookup tables: one gather per packet instead of a chain of comparisons
_TAGGED = np.zeros(1 << 16, bool)
_TAGGED[list(VLAN_TPIDS)] = True
_IHL = ((np.arange(256) & 0x0F) * 4).astype(np.int32)  # IPv4 header length from the version/IHL byte
_V4 = ((np.arange(256) >> 4) == 4) & (_IHL >= 20)  # an IPv4 header of at least 20 bytes
_FRAG = np.where(np.arange(1 << 16) & 0x1FFF, FRAG_LATER,  # from the flags/fragment-offset word
                 np.where(np.arange(1 << 16) & 0x2000, FRAG_FIRST, FRAG_NONE)).astype(np.uint8)


def _present(values: np.ndarray) -> np.ndarray:
    """The distinct values of a small-integer column, sorted (np.unique hashes, which is slow for this)."""
    if len(values) == 0:
        return np.zeros(0, values.dtype)
    if values[0] == values[-1] and (values == values[0]).all():
        return values[:1].copy()
    return np.flatnonzero(np.bincount(values)).astype(values.dtype)


# -------------------------------------------------------------------------------------- header dissection

def _dissect(p: Path, fmt: str, interfaces: list[Interface], arr: np.ndarray, fr: Framed,
             index0: int = 0) -> Packets:
    """The header fields of the records `fr` framed in `arr` (their data starts at `fr.data_off`)."""
    n = len(fr.data_off)
    data_off, caplen, linktype = fr.data_off, fr.caplen.astype(np.int32), fr.linktype
    present = _present(linktype)
    if n and len(present) == 1 and int(present[0]) == LINKTYPE_ETHERNET:
        et, l3, vlan, vlan2 = _ethernet(window(arr, data_off, _ETH) if fr.eth is None else fr.eth, caplen)
    else:
        et, l3 = np.zeros(n, np.int32), np.zeros(n, np.int32)
        vlan, vlan2 = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
        for lt in present:
            lt = int(lt)
            if lt not in SUPPORTED_LINKTYPES:
                continue
            sel = np.flatnonzero(linktype == lt)
            if lt == LINKTYPE_ETHERNET:
                et[sel], l3[sel], vlan[sel], vlan2[sel] = _ethernet(window(arr, data_off[sel], _ETH), caplen[sel])
                continue
            w = window(arr, data_off[sel], _L2_OTHER)
            if lt == LINKTYPE_LINUX_SLL:
                et[sel], l3[sel] = w["sll"], 16
            elif lt == LINKTYPE_LINUX_SLL2:
                et[sel], l3[sel] = w["sll2"], 20
            elif lt in (LINKTYPE_RAW, LINKTYPE_IPV4):
                et[sel], l3[sel] = np.where((w["ver"] >> 4) == 4, ETHERTYPE_IPV4, 0), 0
            else:  # NULL / LOOP: a 4-byte address family, AF_INET == 2 (host byte order for NULL)
                et[sel], l3[sel] = np.where((w["fam_le"] == 2) | (w["fam_be"] == 2), ETHERTYPE_IPV4, 0), 4

    ip = window(arr, data_off + l3, _IP_L4)  # the IPv4 header, and the TCP/UDP one right after it
    vihl = ip["vihl"]
    ihl = _IHL[vihl]
    ipv4 = (et == ETHERTYPE_IPV4) & _V4[vihl] & (caplen >= l3 + 20)
    tot = ip["tot"].astype(np.int32)
    frag = _FRAG[ip["frag"]]
    proto = ip["proto"]
    l4off = l3 + ihl * ipv4
    # bytes of transport header really there: captured, and inside the IP datagram (not Ethernet padding);
    # total length 0 is what TSO-offloaded packets captured on the sender show: trust the capture then
    avail = np.minimum(caplen - l4off, np.where(tot == 0, caplen, tot - ihl))
    first = ipv4 & (frag != FRAG_LATER) & (caplen >= l4off)
    is_tcp = first & (proto == 6) & (avail >= 20)
    is_udp = first & (proto == 17) & (avail >= 8)
    l4 = is_tcp | is_udp
    opts = l4 & (ihl > 20)  # IP options: the transport header is further on
    sport, dport, flags = ip["sport"].astype(np.uint16), ip["dport"].astype(np.uint16), ip["flags"].copy()
    if opts.any():
        at = np.flatnonzero(opts)
        w4 = window(arr, data_off[at] + l4off[at], _L4)
        sport[at], dport[at], flags[at] = w4["sport"], w4["dport"], w4["flags"]
    sport[~l4] = 0
    dport[~l4] = 0
    flags[~is_tcp] = 0
    frag[~ipv4] = FRAG_NONE
    return Packets(
        path=str(p), format=fmt, interfaces=interfaces, ts_ns=fr.ts_ns.astype(np.int64, copy=False),
        caplen=caplen.astype(np.uint32), wirelen=fr.wirelen.astype(np.uint32), iface=fr.iface,
        vlan=vlan, vlan_inner=vlan2, ipv4=ipv4, src=_where(ipv4, ip["src"], np.uint32),
        dst=_where(ipv4, ip["dst"], np.uint32), proto=_where(ipv4, ip["proto"], np.uint8),
        ttl=_where(ipv4, ip["ttl"], np.uint8), frag=frag, l4=l4, sport=sport, dport=dport,
        tcp_flags=flags, index=np.arange(index0, index0 + n, dtype=np.int64))


def _where(mask: np.ndarray, field: np.ndarray, dtype) -> np.ndarray:
    """The field (native byte order) where the mask is set, else 0."""
    out = field.astype(dtype)
    out[~mask] = 0
    return out


def _ethernet(w: np.ndarray, caplen: np.ndarray) -> tuple:
    """(ethertype, offset of the network header, outer VLAN id, inner VLAN id) of Ethernet frames."""
    e = w["e1"].astype(np.int32)
    t1 = _TAGGED[e] & (caplen >= 18)
    if not t1.any():  # untagged: the common case, no further work
        n = len(e)
        return e, np.full(n, 14, np.int32), np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    v1 = np.where(t1, (w["v1"] & 0x0FFF).astype(np.int32), -1)
    e = np.where(t1, w["e2"], e)
    t2 = t1 & _TAGGED[e] & (caplen >= 22)
    v2 = np.where(t2, (w["v2"] & 0x0FFF).astype(np.int32), -1)
    e = np.where(t2, w["e3"], e)
    return e, np.where(t2, 22, np.where(t1, 18, 14)).astype(np.int32), v1.astype(np.int32, copy=False), v2.astype(np.int32, copy=False)


@dataclass
class Framed:
    """One framing round over a buffer holding the file's bytes [base, base + have): the records complete in it
    (where their data starts in the buffer, and their header fields), where the next round starts (`consumed`,
    a buffer offset), how many bytes from there it needs at least (`need`: the buffer grows for a larger
    record), and whether the reading is over (end of file, or damage: the framer says which)."""

    data_off: np.ndarray  # int64
    caplen: np.ndarray  # int64
    wirelen: np.ndarray  # int64
    ts_ns: np.ndarray  # int64
    iface: np.ndarray  # uint16
    linktype: np.ndarray  # uint16
    consumed: int
    need: int
    done: bool
    eth: np.ndarray | None = None  # the records' Ethernet fields (`ethernet_fields`), if the framer read them


NO_RECORDS = np.zeros(0, np.int64)

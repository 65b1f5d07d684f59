"""Connection attempts on the wire, from parsed packets: every TCP SYN without ACK (flagged when it repeats
an earlier SYN of the same src, sport, dst, dport: a retransmission) and every UDP datagram (flagged when it
is the first to its destination, which is what counts as a UDP attempt), plus per-source timeline summaries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .pcap import Packets

PROTO_TCP, PROTO_UDP = 6, 17
PROTO_NUMBERS = {"tcp": PROTO_TCP, "udp": PROTO_UDP}
PROTO_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp"}

# what counts as a UDP attempt: the first datagram per (src, dst, dport) [default], per (src, sport, dst,
# dport), every datagram, or none at all
UDP_MODES = ("first_per_destination", "first_per_flow", "every", "none")


def ip_to_int(addr: str) -> int:
    return int(ipaddress.IPv4Address(addr))


def int_to_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(int(value)))


@dataclass
class Attempts:
    """TCP SYN-without-ACK packets and UDP datagrams seen on the wire, in capture order (NumPy columns).

    `repeat`: TCP — the same (src, sport, dst, dport) sent a SYN before (a retransmission); UDP — an earlier
    datagram had the same key under `udp_mode`. `attempt`: the row counts as a connection attempt (every SYN,
    including retransmissions; a UDP datagram according to `udp_mode`). Rows that are not attempts stay in
    the table because the cross-checks compare every datagram with what the throttle says it let through.
    """

    packets: int  # packet records in the capture (all of them, not only these rows)
    udp_mode: str
    index: np.ndarray  # int64 packet index in the capture (-1 for synthetic rows)
    ts: np.ndarray  # float64 seconds since the epoch
    src: np.ndarray  # uint32
    dst: np.ndarray  # uint32
    sport: np.ndarray  # uint16
    dport: np.ndarray  # uint16
    proto: np.ndarray  # uint8: 6 or 17
    repeat: np.ndarray  # bool
    attempt: np.ndarray  # bool
    vlan: np.ndarray  # int32, -1 untagged

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def totals(self) -> dict[str, int]:
        tcp = self.proto == PROTO_TCP
        udp = ~tcp
        return {
            "packets": self.packets,
            "syn_attempts": int(tcp.sum()),
            "syn_retransmissions": int((tcp & self.repeat).sum()),
            "udp_attempts": int((udp & self.attempt).sum()),
            "udp_datagrams": int(udp.sum()),
        }

    def select(self, mask: np.ndarray) -> Attempts:
        return Attempts(self.packets, self.udp_mode, *(getattr(self, c)[mask] for c in _COLUMNS))


_COLUMNS = ("index", "ts", "src", "dst", "sport", "dport", "proto", "repeat", "attempt", "vlan")


def extract_attempts(pk: Packets, *, udp: str = "first_per_destination") -> Attempts:
    """The attempt table of a capture. Non-first IP fragments never count (they carry no transport header)."""
    sel = np.flatnonzero(pk.syn | pk.udp)
    return build_attempts(pk.ts[sel] if len(sel) else np.zeros(0), pk.src[sel], pk.dst[sel], pk.sport[sel],
                          pk.dport[sel], pk.proto[sel], udp=udp, packets=len(pk), index=pk.index[sel],
                          vlan=pk.vlan[sel])


def build_attempts(ts, src, dst, sport, dport, proto, *, udp: str = "first_per_destination",
                   packets: int | None = None, index=None, vlan=None) -> Attempts:
    """Attempt table from columns (capture order); address columns may be uint32 or dotted strings,
    proto 6/17 or "tcp"/"udp". Used by `extract_attempts` and by tests that build synthetic timelines.
    """
    if udp not in UDP_MODES:
        raise ValueError(f"udp mode {udp!r}: expected one of {', '.join(UDP_MODES)}")
    ts = np.asarray(ts, dtype=np.float64)
    n = len(ts)
    src, dst = _ips(src), _ips(dst)
    sport = np.asarray(sport, dtype=np.uint16).reshape(n)
    dport = np.asarray(dport, dtype=np.uint16).reshape(n)
    proto = np.array([PROTO_NUMBERS.get(p, p) if isinstance(p, str) else p for p in proto], dtype=np.uint8) \
        if n and not isinstance(proto, np.ndarray) else np.asarray(proto, dtype=np.uint8).reshape(n)
    tcp = proto == PROTO_TCP
    k1 = (src.astype(np.uint64) << np.uint64(32)) | dst.astype(np.uint64)
    flow = (sport.astype(np.uint64) << np.uint64(16)) | dport.astype(np.uint64)
    if udp == "first_per_destination":
        k2 = np.where(tcp, flow, dport.astype(np.uint64))
    else:
        k2 = flow
    k2 = k2 | (proto.astype(np.uint64) << np.uint64(32))  # TCP and UDP keys never collide
    repeat = _repeats(k1, k2)
    if udp == "every":
        attempt = np.ones(n, bool)
    elif udp == "none":
        attempt = tcp.copy()
    else:
        attempt = tcp | ~repeat
    return Attempts(
        packets=n if packets is None else packets, udp_mode=udp,
        index=np.full(n, -1, np.int64) if index is None else np.asarray(index, np.int64),
        ts=ts, src=src, dst=dst, sport=sport, dport=dport, proto=proto, repeat=repeat, attempt=attempt,
        vlan=np.full(n, -1, np.int32) if vlan is None else np.asarray(vlan, np.int32))


def _ips(col) -> np.ndarray:
    if isinstance(col, np.ndarray) and col.dtype.kind in "ui":
        return np.asarray(col, dtype=np.uint32)
    return np.array([ip_to_int(a) if isinstance(a, str) else int(a) for a in col], dtype=np.uint32)


def _repeats(k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """True for every row whose (k1, k2) key appeared in an earlier row.

    One `np.sort` (SIMD-fast, unlike an argsort) of 64-bit words that hold a hash of the key in their high bits
    and the row number in their low ones: each hash's rows come out together, in capture order. A hash shared
    by different keys (a collision) has its rows settled exactly, by a lexicographic sort of just those.
    """
    n = len(k1)
    if n == 0:
        return np.zeros(0, bool)
    b = np.uint64(max(1, (n - 1).bit_length()))
    hh = _key_hash(k1, k2)  # then, in place (these are the large temporaries): hash bits, row bits, sorted
    hh >>= b
    hh <<= b
    hh |= np.arange(n, dtype=np.uint64)
    hh.sort()
    row = (hh & ((np.uint64(1) << b) - np.uint64(1))).astype(np.int64)
    hh >>= b
    pos = np.flatnonzero(hh[1:] == hh[:-1])  # row[pos + 1] follows an earlier row of the same hash
    first, later = row[pos], row[pos + 1]
    out = np.zeros(n, bool)
    out[later] = True
    clash = (k1[first] != k1[later]) | (k2[first] != k2[later])
    for v in _distinct(hh[pos[clash]]):
        rows = row[np.searchsorted(hh, v, "left"):np.searchsorted(hh, v, "right")]
        out[rows] = _repeats_exact(k1[rows], k2[rows])
    return out


def _key_hash(k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (k1 * np.uint64(0x9E3779B97F4A7C15)) ^ (k2 * np.uint64(0xC2B2AE3D27D4EB4F))


def _repeats_exact(k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    n = len(k1)
    order = np.lexsort((np.arange(n), k2, k1))
    s1, s2 = k1[order], k2[order]
    out = np.empty(n, bool)
    out[order[0]] = False
    out[order[1:]] = (s1[1:] == s1[:-1]) & (s2[1:] == s2[:-1])
    return out


def _positions(uniq: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Where each value is in the sorted distinct `uniq`: a lookup table when they span a small range (a lab's
    addresses: one /15), else a binary search."""
    lo, span = int(uniq[0]), int(uniq[-1]) - int(uniq[0]) + 1
    if span > 1 << 20:
        return np.searchsorted(uniq, values)
    table = np.zeros(span, np.int64)
    table[uniq.astype(np.int64) - lo] = np.arange(len(uniq))
    return table[values - np.uint32(lo)]


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values by `np.sort` (np.unique hashes, which is slow for large integer columns)."""
    s = np.sort(values)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s


# ------------------------------------------------------------------------------------ per-source summaries

@dataclass
class SourceTimeline:
    """One source's attempts on the wire, summarised; `histogram` counts attempts per bin of the capture's span."""

    src: str
    syn_attempts: int
    syn_retransmissions: int
    udp_attempts: int
    udp_datagrams: int
    distinct_destinations: int
    first_ts: float | None
    last_ts: float | None
    new_attempt_rate: float | None  # new attempts (not retransmissions) per second, first to last
    histogram: list[int]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def source_timelines(att: Attempts, *, bins: int = 24, span: tuple[float, float] | None = None,
                     sources: Sequence[str] | None = None) -> list[SourceTimeline]:
    """Per-source summary of the attempt table, sorted by address (only `sources` when given)."""
    a = att
    if sources is not None:
        a = a.select(np.isin(a.src, _ips(list(sources))))
    if len(a) == 0:
        return []
    known = np.isfinite(a.ts)
    lo, hi = span if span else ((float(a.ts[known].min()), float(a.ts[known].max())) if known.any() else (0.0, 0.0))
    return timelines(source_partials(a, lo, hi, bins))


@dataclass
class SourcePartials:
    """Per-source sums of an attempt table that add up across tables of disjoint (src, dst) pairs: the
    timelines of a capture from its rows partitioned by (src, dst) (see stream.py), one part at a time."""

    src: np.ndarray  # uint32, sorted distinct
    counts: np.ndarray  # (m, 8) int64: rows per (tcp, repeat, attempt)
    ndst: np.ndarray  # (m,) distinct destinations of attempts
    first: np.ndarray  # (m,) float64 first / last known timestamp (±inf: none)
    last: np.ndarray
    new_first: np.ndarray  # (m,) first / last new attempt (not a repeat)
    new_last: np.ndarray
    n_new: np.ndarray  # (m,) new attempts with a known timestamp
    hist: np.ndarray  # (m, bins) attempts per bin of [lo, hi]


def source_partials(a: Attempts, lo: float, hi: float, bins: int) -> SourcePartials:
    """The per-source sums of `a`, its histogram over [lo, hi] in `bins` bins."""
    uniq = _distinct(a.src)
    if len(uniq) == 0:
        z, f = np.zeros(0, np.int64), np.zeros(0)
        return SourcePartials(uniq, np.zeros((0, 8), np.int64), z, f, f, f, f, z, np.zeros((0, bins), np.int64))
    inv = _positions(uniq, a.src)
    m = len(uniq)
    tcp = a.proto == PROTO_TCP
    # one count per (source, tcp, repeat, attempt): every per-source count is a sum of these
    c = np.bincount((inv << 3) | (tcp << 2) | (a.repeat << 1) | a.attempt, minlength=m * 8).reshape(m, 8)
    pairs = _distinct((a.src[a.attempt].astype(np.uint64) << np.uint64(32)) | a.dst[a.attempt].astype(np.uint64))
    psrc = (pairs >> np.uint64(32)).astype(np.uint32)  # sorted
    ndst = np.searchsorted(psrc, uniq, "right") - np.searchsorted(psrc, uniq, "left")
    known = np.isfinite(a.ts)
    first, last = np.full(m, np.inf), np.full(m, -np.inf)
    np.minimum.at(first, inv[known], a.ts[known])
    np.maximum.at(last, inv[known], a.ts[known])
    new = a.attempt & ~a.repeat & known
    new_first, new_last = np.full(m, np.inf), np.full(m, -np.inf)
    np.minimum.at(new_first, inv[new], a.ts[new])
    np.maximum.at(new_last, inv[new], a.ts[new])
    n_new = np.bincount(inv[new], minlength=m)
    width = (hi - lo) / bins if hi > lo else 1.0
    h = a.attempt & known
    b = np.clip(((a.ts[h] - lo) / width).astype(np.int64), 0, bins - 1)
    hist = np.bincount(inv[h] * bins + b, minlength=m * bins).reshape(m, bins)
    return SourcePartials(uniq, c, ndst, first, last, new_first, new_last, n_new, hist)


def merge_partials(parts: Sequence[SourcePartials], bins: int) -> SourcePartials:
    """One SourcePartials of several made from disjoint sets of (src, dst) pairs (sums, minima, maxima)."""
    parts = [p for p in parts if len(p.src)]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return source_partials(build_attempts([], [], [], [], [], []), 0.0, 0.0, bins)
    src = np.concatenate([p.src for p in parts])
    order = np.argsort(src, kind="stable")
    s = src[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])[order]

    add, lo, hi = np.add.reduceat, np.minimum.reduceat, np.maximum.reduceat
    return SourcePartials(s[starts], add(cat("counts"), starts), add(cat("ndst"), starts), lo(cat("first"), starts),
                          hi(cat("last"), starts), lo(cat("new_first"), starts), hi(cat("new_last"), starts),
                          add(cat("n_new"), starts), add(cat("hist"), starts))


def timelines(p: SourcePartials) -> list[SourceTimeline]:
    """The per-source timelines of summed partials, sorted by address."""
    c = p.counts
    syn, syn_re = c[:, 4:].sum(axis=1), c[:, 6:].sum(axis=1)
    udp_att, udp_all = c[:, 1] + c[:, 3], c[:, :4].sum(axis=1)
    out = []
    for j in range(len(p.src)):
        dur = p.new_last[j] - p.new_first[j]
        out.append(SourceTimeline(
            src=int_to_ip(p.src[j]), syn_attempts=int(syn[j]), syn_retransmissions=int(syn_re[j]),
            udp_attempts=int(udp_att[j]), udp_datagrams=int(udp_all[j]), distinct_destinations=int(p.ndst[j]),
            first_ts=float(p.first[j]) if np.isfinite(p.first[j]) else None,
            last_ts=float(p.last[j]) if np.isfinite(p.last[j]) else None,
            new_attempt_rate=float((p.n_new[j] - 1) / dur) if p.n_new[j] > 1 and dur > 0 else None,
            histogram=[int(x) for x in p.hist[j]]))
    return out

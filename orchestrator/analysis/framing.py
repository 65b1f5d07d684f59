"""Framing classic pcap records in a buffer: where each record starts, walking `16 + caplen` from the start.

The walk is sequential by nature, and a Python step per record costs more than everything NumPy then does with
the record. So a large buffer is walked in lockstep: it is cut into segments, a record start is guessed near
each segment's beginning (a position whose 16 bytes look like a record header, and so does the header they
point to), and all the segments' chains are walked at once, one NumPy step per record *of a segment*. Then
the chains are joined: the chain from the buffer's start is the truth; where it lands exactly on the next
chain's start, or on any position that chain visited (the walk is a function of the position: from there the
two coincide), the next chain is true from there on; where it lands nowhere the next chain went (a wrong
guess), it is walked on in Python until it meets the following one. A wrong guess costs time, never a record.

`frame(...)` gives what the plain loop gives: the record offsets up to and including the first bad one (a
captured length over the maximum, or a record running past the buffer), and the offset where the walk
stopped (where fewer than 12 header bytes are left).
"""

from __future__ import annotations

import struct

import numpy as np

LOCKSTEP_MIN = 256 << 10  # buffers smaller than this are walked by the plain loop
SEGMENT = 2048  # bytes per lockstep chain
WINDOW = 256  # bytes searched for a record start at each segment's beginning
SAME_DAY = 86_400  # a guessed header's timestamp is within this of the buffer's first record
REACHED, BAD, SHORT = 0, 1, 2  # how a chain stopped: at the next chain's start, at a bad record, header cut


def frame(arr: np.ndarray, have: int, endian: str, maxcap: int, frac_limit: int) -> tuple[np.ndarray, int]:
    """(offsets of the records from buffer offset 0, through the first bad one; offset where the walk stopped).
    `arr` holds `have` bytes of records, then at least 16 bytes of padding."""
    unpack = struct.Struct(endian + "8xI").unpack_from
    mv = arr.data[:have]
    if have < LOCKSTEP_MIN:
        offs, end, _kind = _walk(mv, unpack, 0, have, have, maxcap)
        return np.array(offs, dtype=np.int64), end
    u32 = np.ndarray(shape=(arr.size - 3,), dtype=endian + "u4", buffer=arr, strides=(1,))  # at every byte
    starts = _guess_starts(arr, u32, have, endian, maxcap, frac_limit)
    pos, bounds, stop, kind = _lockstep(u32, starts, have, maxcap)
    joined = (kind[:-1] == REACHED) & (stop[:-1] == starts[1:])
    if joined.all():  # every guess was right: the chains are the walk
        return pos, int(stop[-1])
    return _join(mv, unpack, pos, bounds, starts, stop, kind, have, maxcap)


def _walk(mv: memoryview, unpack, p: int, limit: int, have: int, maxcap: int) -> tuple[list[int], int, int]:
    """The plain loop from p until a record start at or past `limit`: (offsets, where it stopped, how)."""
    out: list[int] = []
    app = out.append
    while p < limit:
        if p + 12 > have:
            return out, p, SHORT
        (cap,) = unpack(mv, p)
        app(p)
        if cap > maxcap or p + 16 + cap > have:
            return out, p, BAD
        p += 16 + cap
    return out, p, REACHED


def _guess_starts(arr: np.ndarray, u32: np.ndarray, have: int, endian: str, maxcap: int,
                  frac_limit: int) -> np.ndarray:
    """Buffer offset 0, then a plausible record start near the beginning of each later segment (none where no
    position of the window looks like one)."""
    k = (have - WINDOW - 32) // SEGMENT
    if k < 2:
        return np.zeros(1, np.int64)
    ref = int(u32[0])
    lo, hi = max(0, ref - SAME_DAY), min(2**32 - 1, ref + SAME_DAY)
    # the top byte of the timestamp's seconds rules out nearly every position (one uint8 comparison each);
    # the whole header is checked on what is left
    top = np.lib.stride_tricks.as_strided(arr[SEGMENT + (3 if endian == "<" else 0):], shape=(k - 1, WINDOW),
                                          strides=(SEGMENT, 1))
    near = top == np.uint8(lo >> 24)
    if hi >> 24 != lo >> 24:
        near |= top == np.uint8(hi >> 24)
    flat = np.flatnonzero(near)  # (a 2-d nonzero is several times slower)
    rows = flat // WINDOW
    cand = SEGMENT * (rows + 1) + flat % WINDOW
    ok = _plausible(u32, cand, lo, hi, maxcap, frac_limit)
    rows, cand = rows[ok], cand[ok]
    first = np.ones(len(rows), bool)  # the first plausible position of each window
    first[1:] = rows[1:] != rows[:-1]
    cand = cand[first]
    nxt = cand + 16 + u32[cand + 8].astype(np.int64)  # the header it points to must look like one too
    inside = nxt + 16 <= have
    good = ~inside
    good[inside] = _plausible(u32, nxt[inside], lo, hi, maxcap, frac_limit)
    return np.concatenate(([0], cand[good]))


def _plausible(u32: np.ndarray, at: np.ndarray, lo: int, hi: int, maxcap: int, frac_limit: int) -> np.ndarray:
    """Do the 16 bytes at these offsets look like a record header?"""
    cap, sec = u32[at + 8], u32[at]
    return (u32[at + 4] < frac_limit) & (cap <= u32[at + 12]) & (cap <= maxcap) & (sec >= lo) & (sec <= hi)


def _lockstep(u32: np.ndarray, starts: np.ndarray, have: int,
              maxcap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walk every chain from its start until the next chain's start (the last: the buffer's end), all at once.
    Returns the visited positions chain after chain (chain j's are pos[bounds[j]:bounds[j + 1]]), and per chain
    where and how it stopped. Each step only moves on; bad records are found afterwards, on every position."""
    k = len(starts)
    p, end = starts.copy(), np.concatenate((starts[1:], [have]))
    parts = []
    while True:
        parts.append(p)
        nxt = p + 16 + u32[p + 8]  # where fewer than 12 header bytes are left this reads padding: see below
        halt = nxt >= end
        if halt.any():
            go = ~halt
            if not go.any():
                break
            p, end = nxt[go], end[go]
        else:
            p = nxt
    # chain j only visits [starts[j], starts[j + 1]): sorting the positions puts them chain after chain
    pos = np.sort(np.concatenate(parts))
    cap = u32[pos + 8].astype(np.int64)
    bounds = np.searchsorted(pos, np.concatenate((starts, [have])))
    last = bounds[1:] - 1
    stop, kind = pos[last] + 16 + cap[last], np.full(k, REACHED, np.int8)
    # a record is bad past the maximum captured length or the buffer's end; a header is cut when fewer than
    # 12 of its bytes are left. A chain stops at its first bad record (kept) or cut header (dropped).
    cut = pos + 12 > have
    bad = np.flatnonzero(cut | (cap > maxcap) | (pos + 16 + cap > have))
    if len(bad):
        keep = np.ones(len(pos), bool)
        chains = np.searchsorted(bounds, bad, "right") - 1
        for i, j in zip(bad.tolist(), chains.tolist(), strict=True):
            if kind[j] != REACHED:
                continue  # after the chain's first bad record: already dropped
            kind[j], stop[j] = (SHORT if cut[i] else BAD), pos[i]
            keep[i + (0 if cut[i] else 1):bounds[j + 1]] = False
        pos = pos[keep]
        bounds = np.searchsorted(pos, np.concatenate((starts, [have])))
    return pos, bounds, stop, kind


def _join(mv: memoryview, unpack, pos: np.ndarray, bounds: np.ndarray, starts: np.ndarray, stop: np.ndarray,
          kind: np.ndarray, have: int, maxcap: int) -> tuple[np.ndarray, int]:
    """Follow the true walk through the chains (see the module's docstring)."""
    k = len(starts)
    parts: list[np.ndarray] = []
    p, j = 0, 0
    while True:
        while j + 1 < k and starts[j + 1] <= p:
            j += 1
        visited = pos[bounds[j]:bounds[j + 1]]
        i = int(np.searchsorted(visited, p))
        if i < len(visited) and visited[i] == p:
            parts.append(visited[i:])
            p, how = int(stop[j]), int(kind[j])
        else:
            limit = int(starts[j + 1]) if j + 1 < k else have
            seq, p, how = _walk(mv, unpack, p, limit, have, maxcap)
            parts.append(np.array(seq, dtype=np.int64))
        if how != REACHED or j + 1 == k:
            return np.concatenate(parts), p

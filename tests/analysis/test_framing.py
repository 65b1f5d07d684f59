"""Lockstep framing against the plain loop: the same record offsets and stop, whatever the guesses got wrong —
payloads full of fake record headers, records longer than a segment, damage and cut records anywhere."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.analysis import framing

SEC = 1_764_050_000
MAXCAP = 262_144


def _buffer(seed: int, e: str = "<") -> tuple[np.ndarray, int, dict]:
    """Records of random lengths (some longer than a segment), payloads that are random bytes, zeros or copies
    of real record headers (plausible at every offset: the guesses go wrong), maybe damaged, maybe cut short."""
    rng = np.random.default_rng(seed)
    out = bytearray()
    fake = struct.pack(e + "IIII", SEC, 5, 60, 60)
    for _ in range(int(rng.integers(50, 1500))):
        r = rng.random()
        cap = int(rng.integers(0, 80)) if r < 0.6 else int(rng.integers(80, 600)) if r < 0.95 \
            else int(rng.integers(2500, 9000))
        kind = rng.integers(0, 3)
        if kind == 0:
            payload = rng.integers(0, 256, cap, dtype=np.uint8).tobytes()
        elif kind == 1:
            payload = bytes(cap)
        else:
            payload = (fake * (cap // 16 + 1))[int(rng.integers(0, 16)):][:cap]
        out += struct.pack(e + "IIII", SEC + int(rng.integers(0, 60)), int(rng.integers(0, 1_000_000)), cap,
                           cap + int(rng.integers(0, 3))) + payload
    case = {"damage": None}
    if rng.random() < 0.4:  # a captured length past the maximum, or one that misframes the rest
        at, off = int(rng.integers(0, len(out) - 16)), 0
        offs = []
        while off + 16 <= len(out):
            offs.append(off)
            off += 16 + struct.unpack_from(e + "I", out, off + 8)[0]
        hit = offs[int(rng.integers(0, len(offs)))]
        struct.pack_into(e + "I", out, hit + 8, MAXCAP + 1 if rng.random() < 0.5 else int(rng.integers(0, 40)))
        case["damage"] = (at, hit)
    have = len(out) - (int(rng.integers(1, 30)) if rng.random() < 0.5 else 0)  # cut inside the last record
    arr = np.zeros(len(out) + 160, np.uint8)
    arr[:len(out)] = np.frombuffer(bytes(out), np.uint8)
    return arr, have, case


def _both(monkeypatch, arr, have, e: str = "<"):
    monkeypatch.setattr(framing, "LOCKSTEP_MIN", 1 << 62)
    plain = framing.frame(arr, have, e, MAXCAP, 1_000_000)
    monkeypatch.setattr(framing, "LOCKSTEP_MIN", 0)
    lock = framing.frame(arr, have, e, MAXCAP, 1_000_000)
    return plain, lock


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), endian=st.sampled_from("<>"))
def test_lockstep_frames_what_the_plain_loop_frames(seed, endian):
    arr, have, _case = _buffer(seed, endian)
    mp = pytest.MonkeyPatch()
    try:
        (po, pe), (lo, le) = _both(mp, arr, have, endian)
    finally:
        mp.undo()
    assert lo.tolist() == po.tolist() and le == pe


def test_wrong_guesses_are_walked_through(monkeypatch):
    """Every payload is made of fake headers: most guesses are wrong, and nothing is lost."""
    recs = b"".join(struct.pack("<IIII", SEC, i, 200, 200) + struct.pack("<IIII", SEC, 1, 0, 0) * 12 + bytes(8)
                    for i in range(600))
    arr = np.zeros(len(recs) + 160, np.uint8)
    arr[:len(recs)] = np.frombuffer(recs, np.uint8)
    starts = framing._guess_starts(arr, np.ndarray((arr.size - 3,), "<u4", arr, strides=(1,)), len(recs), "<",
                                   MAXCAP, 1_000_000)
    assert (starts[1:] % 216 != 0).mean() > 0.5  # most guesses land inside a payload (a chain of fakes)
    (po, pe), (lo, le) = _both(monkeypatch, arr, len(recs))
    assert lo.tolist() == po.tolist() == list(range(0, len(recs), 216)) and le == pe == len(recs)

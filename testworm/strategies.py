"""Target strategies: pure, deterministic generators of IPv4 targets (ints) drawn only from a target set.

Every generator takes the target set (already checked to lie inside the allow-list), a seed and, where the
strategy needs it, this host's own address; none does I/O, and none materialises the range, so a /8 costs
no more than a /24. What each claims (and tests/testworm/test_strategies.py checks):

- sequential        every target once, in address order from a start address, wrapping round; then exhausted.
- random            every target once, in a seeded pseudo-random order (a keyed Feistel permutation of the
                    index range with cycle-walking); then exhausted. Uniform over orders for the tests we run.
- local-preference  with replacement, for ever: with weight w16 a uniform target in this host's /16, w8 in its
                    /8, wall anywhere in the targets (Nimda, Code Red II); this host's own address excluded.
                    A class with no targets in it falls through to the next broader one.
- hit-list          the given addresses, in the given order; then exhausted.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence

from .addrs import AddressSet, prefix_of
from .errors import UsageError

STRATEGIES = ("sequential", "random", "local-preference", "hit-list")
START_KEYWORDS = ("first", "self", "random", "blaster")


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from `seed` and `parts` (stable across Python versions and platforms)."""
    text = "|".join(["testworm", str(seed), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


class Rng:
    """Seeded integer randomness that does not depend on Python's version-specific helpers (randrange etc.)."""

    def __init__(self, seed: int):
        self._r = random.Random(derive_seed(seed, "rng"))

    def below(self, n: int) -> int:
        """Uniform integer in [0, n), by rejection sampling on getrandbits (unbiased)."""
        if n <= 0:
            raise ValueError("below(0)")
        k = n.bit_length()
        while True:
            v = self._r.getrandbits(k)
            if v < n:
                return v

    def unit(self) -> float:
        return self._r.random()


class Permutation:
    """A keyed pseudo-random permutation of range(n): a 6-round balanced Feistel network on the smallest even
    number of bits that covers n, restricted to [0, n) by cycle-walking. O(1) memory for any n ≤ 2**32."""

    ROUNDS = 6

    def __init__(self, n: int, seed: int):
        if n <= 0:
            raise ValueError("empty permutation")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        bits += bits % 2
        self._half = bits // 2
        self._mask = (1 << self._half) - 1
        self._keys = [derive_seed(seed, "feistel", n, r) & 0xFFFFFFFF for r in range(self.ROUNDS)]

    def _encrypt(self, x: int) -> int:
        half, mask = self._half, self._mask
        left, right = x >> half, x & mask
        for k in self._keys:
            h = ((right ^ k) * 0x45D9F3B) & 0xFFFFFFFF
            h = ((h >> 16) ^ h) * 0x45D9F3B & 0xFFFFFFFF
            h ^= h >> 16
            left, right = right, left ^ (h & mask)
        return (left << half) | right

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        y = self._encrypt(i)
        while y >= self.n:
            y = self._encrypt(y)
        return y

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            yield self[i]


def sequential(targets: AddressSet, start: int | None = None) -> Iterator[int]:
    """Every target once in address order, beginning at the first target ≥ start (wrapping), then stop."""
    n = targets.size
    p = 0 if start is None else targets.rank(start) % n
    for i in range(n):
        yield targets.nth((p + i) % n)


def uniform_random(targets: AddressSet, seed: int) -> Iterator[int]:
    """Every target exactly once, in the order of a seeded permutation, then stop."""
    perm = Permutation(targets.size, seed)
    nth = targets.nth
    for i in range(targets.size):
        yield nth(perm[i])


def _without(s: AddressSet, addr: int | None) -> AddressSet:
    if addr is None or addr not in s:
        return s
    return AddressSet([iv for lo, hi in s.intervals() for iv in ((lo, min(hi, addr)), (max(lo, addr + 1), hi))])


def local_classes(targets: AddressSet, own: int) -> tuple[AddressSet, AddressSet, AddressSet]:
    """(targets in own /16, in own /8, anywhere), each without own address."""
    everywhere = _without(targets, own)
    return (everywhere.within(*prefix_of(own, 16)), everywhere.within(*prefix_of(own, 8)), everywhere)


def local_preference(targets: AddressSet, seed: int, own: int,
                     weights: Sequence[float] = (0.5, 0.25, 0.25)) -> Iterator[int]:
    """For ever (the scan loop bounds it): a class by weight (/16, /8, anywhere), then a uniform target in it."""
    classes = local_classes(targets, own)
    if not classes[2]:
        return
    rng = Rng(seed)
    c16 = weights[0]
    c8 = c16 + weights[1]
    while True:
        u = rng.unit()
        k = 0 if u < c16 else 1 if u < c8 else 2
        while not classes[k]:  # an empty class falls through to the broader one
            k += 1
        s = classes[k]
        yield s.nth(rng.below(s.size))


def hit_list(addrs: Sequence[int]) -> Iterator[int]:
    yield from addrs


def blaster_start(targets: AddressSet, seed: int, own: int, p_local: float = 0.4) -> int:
    """Blaster's start address (msblast.exe, as analysed by eEye and by Bailey et al. 2005): with probability
    0.4 this host's A.B.C.0 with C lowered by 20 when C > 20, else a random A.B.C.0 — here a random target's
    /24 base, so that the start is drawn from the targets and not from the whole Internet."""
    rng = Rng(derive_seed(seed, "blaster-start"))
    if rng.unit() < p_local:
        c = (own >> 8) & 0xFF
        return (own & 0xFFFF0000) | ((c - 20 if c > 20 else c) << 8)
    return targets.nth(rng.below(targets.size)) & 0xFFFFFF00


def resolve_start(start: str | int | None, targets: AddressSet, seed: int, own: int | None) -> int | None:
    """The first address a sequential scan begins at, from a keyword or an explicit address (an int)."""
    if start is None or start == "first":
        return None
    if isinstance(start, int):
        return start
    if start == "random":
        return targets.nth(Rng(derive_seed(seed, "start")).below(targets.size))
    if own is None:
        raise UsageError(f"--start {start} needs this host's own address (--source)")
    if start == "self":
        return own + 1
    if start == "blaster":
        return blaster_start(targets, seed, own)
    raise UsageError(f"unknown --start {start!r} (choose an address or one of {', '.join(START_KEYWORDS)})")


def make_targets(strategy: str, targets: AddressSet, *, seed: int, own: int | None = None,
                 start: str | int | None = None, hits: Sequence[int] = (),
                 weights: Sequence[float] = (0.5, 0.25, 0.25)) -> Iterator[int]:
    """The target generator for a strategy name (UsageError for an unknown one)."""
    if strategy == "sequential":
        return sequential(targets, resolve_start(start, targets, seed, own))
    if strategy == "random":
        return uniform_random(targets, seed)
    if strategy == "local-preference":
        if own is None:
            raise UsageError("local-preference needs this host's own address (--source)")
        return local_preference(targets, seed, own, weights)
    if strategy == "hit-list":
        return hit_list(hits)
    raise UsageError(f"unknown strategy {strategy!r} (choose one of {', '.join(STRATEGIES)})")

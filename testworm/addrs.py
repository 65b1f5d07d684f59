"""IPv4 address sets: strict CIDR parsing and a sorted, merged interval set that answers membership, size,
the k-th address and the rank of an address in O(log n) without ever materialising the addresses.

Addresses are plain ints (0 … 2**32-1) everywhere in the worm; `ip_str`/`ip_int` convert at the edges.
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator

from .errors import UsageError

_PACK = struct.Struct("!I")


def ip_int(text: str) -> int:
    """Dotted quad → int; UsageError for anything else (IPv6 included: the worm scans IPv4 only)."""
    try:
        return int(ipaddress.IPv4Address(text.strip()))
    except (ipaddress.AddressValueError, ValueError, AttributeError):
        raise UsageError(f"not an IPv4 address: {text!r}") from None


def ip_str(addr: int) -> str:
    return socket.inet_ntoa(_PACK.pack(addr))


def parse_cidr(text: str) -> tuple[int, int]:
    """'198.18.8.0/22' → (first, last+1). A bare address is a /32. Host bits set, IPv6, junk → UsageError."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"empty CIDR: {text!r}")
    try:
        net = ipaddress.IPv4Network(text.strip(), strict=True)
    except ValueError as exc:
        raise UsageError(f"malformed CIDR {text!r}: {exc}") from None
    first = int(net.network_address)
    return first, first + net.num_addresses


class AddressSet:
    """A finite set of IPv4 addresses as disjoint half-open intervals [lo, hi), sorted and merged."""

    __slots__ = ("_lo", "_hi", "_cum", "size", "_text")

    def __init__(self, intervals: Iterable[tuple[int, int]], text: Iterable[str] = ()):
        merged: list[list[int]] = []
        for lo, hi in sorted(iv for iv in intervals if iv[1] > iv[0]):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._lo = [lo for lo, _ in merged]
        self._hi = [hi for _, hi in merged]
        self._cum = [0]  # _cum[j] = number of addresses in intervals before j
        for lo, hi in merged:
            self._cum.append(self._cum[-1] + hi - lo)
        self.size = self._cum[-1]
        self._text = list(text)

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str], what: str = "CIDR list") -> AddressSet:
        cidrs = list(cidrs)
        if not cidrs:
            raise UsageError(f"{what} is empty")
        return cls((parse_cidr(c) for c in cidrs), text=[c.strip() for c in cidrs])

    @classmethod
    def from_addresses(cls, addrs: Iterable[int]) -> AddressSet:
        return cls((a, a + 1) for a in addrs)

    def __contains__(self, addr: int) -> bool:
        j = bisect.bisect_right(self._lo, addr) - 1
        return j >= 0 and addr < self._hi[j]

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AddressSet) and self.intervals() == other.intervals()

    def __hash__(self) -> int:
        return hash(tuple(self.intervals()))

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._lo, self._hi, strict=True))

    def cidrs(self) -> list[str]:
        """The CIDR strings this set was parsed from (or a canonical cover when it was computed)."""
        if self._text:
            return list(self._text)
        out: list[str] = []
        for lo, hi in self.intervals():
            out += [str(n) for n in ipaddress.summarize_address_range(
                ipaddress.IPv4Address(lo), ipaddress.IPv4Address(hi - 1))]
        return out

    def nth(self, k: int) -> int:
        """The k-th smallest address (0-based)."""
        if not 0 <= k < self.size:
            raise IndexError(k)
        j = bisect.bisect_right(self._cum, k) - 1
        return self._lo[j] + (k - self._cum[j])

    def rank(self, addr: int) -> int:
        """How many addresses of the set are smaller than `addr` (addr need not be in the set)."""
        j = bisect.bisect_right(self._lo, addr) - 1
        if j < 0:
            return 0
        return self._cum[j] + min(addr, self._hi[j]) - self._lo[j]

    def intersect(self, other: AddressSet) -> AddressSet:
        out, a, b = [], self.intervals(), other.intervals()
        i = j = 0
        while i < len(a) and j < len(b):
            lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if lo < hi:
                out.append((lo, hi))
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        return AddressSet(out)

    def within(self, first: int, last_plus_one: int) -> AddressSet:
        return self.intersect(AddressSet([(first, last_plus_one)]))

    def issubset(self, other: AddressSet) -> bool:
        return self.intersect(other).size == self.size

    def outside(self, other: AddressSet) -> int | None:
        """The first address of self that is not in other, or None when self ⊆ other."""
        for lo, hi in self.intervals():
            a = lo
            while a < hi:
                if a not in other:
                    return a
                j = bisect.bisect_right(other._lo, a) - 1
                a = other._hi[j]
        return None

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.intervals():
            yield from range(lo, hi)

    def __repr__(self) -> str:
        return f"AddressSet({self.cidrs()!r}, size={self.size})"


def prefix_of(addr: int, bits: int) -> tuple[int, int]:
    """The /bits network containing addr, as [first, last+1)."""
    mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF if bits else 0
    first = addr & mask
    return first, first + (1 << (32 - bits))

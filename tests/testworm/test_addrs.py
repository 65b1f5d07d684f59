"""Address sets: strict CIDR parsing, and interval arithmetic checked against brute force."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testworm.addrs import AddressSet, ip_int, ip_str, parse_cidr, prefix_of
from testworm.errors import UsageError


@pytest.mark.parametrize("text, message", [
    ("", "empty CIDR"),
    ("   ", "empty CIDR"),
    ("198.18.0.0/33", "malformed CIDR"),
    ("198.18.0.1/24", "host bits set"),
    ("banana", "malformed CIDR"),
    ("2001:db8::/32", "malformed CIDR"),
    ("198.18.0.256/32", "malformed CIDR"),
])
def test_bad_cidrs_are_refused_with_a_reason(text, message):
    with pytest.raises(UsageError, match=message):
        parse_cidr(text)


def test_cidr_bounds_and_bare_address():
    assert parse_cidr("198.18.8.0/22") == (ip_int("198.18.8.0"), ip_int("198.18.12.0"))
    assert parse_cidr("198.18.8.7") == (ip_int("198.18.8.7"), ip_int("198.18.8.8"))
    assert ip_str(ip_int("198.19.255.255")) == "198.19.255.255"
    with pytest.raises(UsageError, match="not an IPv4 address"):
        ip_int("::1")


def test_empty_list_is_refused():
    with pytest.raises(UsageError, match="allow-list is empty"):
        AddressSet.from_cidrs([], "allow-list")


def test_merge_nth_rank_outside():
    s = AddressSet.from_cidrs(["198.18.0.4/30", "198.18.0.0/30", "198.18.1.0/31"])
    assert s.intervals() == [(ip_int("198.18.0.0"), ip_int("198.18.0.8")), (ip_int("198.18.1.0"), ip_int("198.18.1.2"))]
    assert s.size == 10
    assert [ip_str(s.nth(k)) for k in (0, 7, 8, 9)] == ["198.18.0.0", "198.18.0.7", "198.18.1.0", "198.18.1.1"]
    assert s.rank(ip_int("198.18.0.200")) == 8
    assert s.outside(AddressSet.from_cidrs(["198.18.0.0/24"])) == ip_int("198.18.1.0")
    assert s.outside(AddressSet.from_cidrs(["198.18.0.0/23"])) is None
    assert prefix_of(ip_int("198.18.201.7"), 16) == (ip_int("198.18.0.0"), ip_int("198.19.0.0"))


intervals = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])),
                     max_size=6)


@settings(max_examples=200, deadline=None)
@given(intervals, intervals, st.integers(0, 400))
def test_set_operations_match_brute_force(a, b, probe):
    sa, sb = AddressSet(a), AddressSet(b)
    ba = {x for lo, hi in a for x in range(lo, hi)}
    bb = {x for lo, hi in b for x in range(lo, hi)}
    assert sa.size == len(ba)
    assert list(sa) == sorted(ba)
    assert [sa.nth(k) for k in range(sa.size)] == sorted(ba)
    assert (probe in sa) == (probe in ba)
    assert sa.rank(probe) == len([x for x in ba if x < probe])
    assert set(sa.intersect(sb)) == ba & bb
    assert sa.issubset(sb) == (ba <= bb)
    out = sa.outside(sb)
    assert out == (min(ba - bb) if ba - bb else None)

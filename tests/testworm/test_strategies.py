"""Target strategies: never outside the allow-list, for any seed and allow-list; and each one's
distribution is what it claims (exact checks where the claim is exact, chi-square where it is statistical)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testworm.addrs import AddressSet, ip_int, ip_str
from testworm.errors import UsageError
from testworm.strategies import (
    Permutation,
    blaster_start,
    local_classes,
    make_targets,
    sequential,
    uniform_random,
)

# chi-square critical values at p = 0.001 (a fixed seed makes each test deterministic; the threshold only
# documents how unlikely a failure of a correct implementation would be)
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 7: 24.32, 9: 27.88, 15: 37.70, 31: 61.10, 63: 103.4}


def chi2(observed: list[int], expected: list[float]) -> float:
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


# Any allow-list: 1-4 CIDRs anywhere in IPv4 with prefixes /12 … /32 (the generators are pure; the lab-range
# interlock is tested separately), an own address inside or outside it, and any seed.
cidr = st.tuples(st.integers(0, 2**32 - 1), st.integers(12, 32)).map(
    lambda t: f"{ip_str(t[0] & ((0xFFFFFFFF << (32 - t[1])) & 0xFFFFFFFF))}/{t[1]}")
allow_lists = st.lists(cidr, min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(allow_lists, st.integers(0, 2**63 - 1), st.integers(0, 2**32 - 1),
       st.sampled_from(["sequential", "random", "local-preference", "hit-list"]),
       st.sampled_from([None, "first", "self", "random", "blaster"]))
def test_no_strategy_ever_leaves_the_allow_list(cidrs, seed, own, strategy, start):
    allow = AddressSet.from_cidrs(cidrs)
    hits = [allow.nth(k * 7919 % allow.size) for k in range(5)]
    gen = make_targets(strategy, allow, seed=seed, own=own, start=start, hits=hits)
    produced = list(itertools.islice(gen, 300))
    only_self = strategy == "local-preference" and allow.size == 1 and own in allow  # never scans itself
    assert bool(produced) != only_self, "a non-empty allow-list yields targets"
    assert all(t in allow for t in produced)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**63 - 1))
def test_permutation_is_a_bijection(n, seed):
    assert sorted(Permutation(n, seed)) == list(range(n))


def test_permutation_of_a_slash8_is_lazy_and_stays_in_range():
    p = Permutation(2**24, seed=7)
    first = [p[i] for i in range(2000)]
    assert len(set(first)) == 2000 and all(0 <= x < 2**24 for x in first)


def test_random_without_repeats_covers_everything_once_and_is_seeded():
    s = AddressSet.from_cidrs(["198.18.8.0/22", "198.19.1.0/24"])
    a = list(uniform_random(s, seed=1))
    assert sorted(a) == list(s)
    assert a == list(uniform_random(s, seed=1))
    assert a != list(uniform_random(s, seed=2))
    assert a != sorted(a)


def test_random_order_is_uniform():
    # Where does each address land? For a uniform random order the position of address k is uniform:
    # over many seeds, the first target falls in each of 16 blocks equally often, and so does the 100th.
    s = AddressSet.from_cidrs(["198.18.0.0/24"])
    for position in (0, 99):
        counts = Counter()
        for seed in range(4000):
            gen = uniform_random(s, seed)
            t = next(itertools.islice(gen, position, None))
            counts[(t - s.nth(0)) // 16] += 1
        obs = [counts[b] for b in range(16)]
        assert chi2(obs, [4000 / 16] * 16) < CHI2_999[15], obs
    # and the first 512 of one order over a /16 are spread evenly across 64 blocks
    big = AddressSet.from_cidrs(["198.18.0.0/16"])
    blocks = Counter((t - big.nth(0)) // 1024 for t in itertools.islice(uniform_random(big, 3), 6400))
    assert chi2([blocks[b] for b in range(64)], [100.0] * 64) < CHI2_999[63]


def test_sequential_order_start_and_wrap():
    s = AddressSet.from_cidrs(["198.18.1.0/30", "198.18.0.252/30"])
    names = [ip_str(a) for a in sequential(s, ip_int("198.18.0.254"))]
    assert names == ["198.18.0.254", "198.18.0.255", "198.18.1.0", "198.18.1.1", "198.18.1.2", "198.18.1.3",
                     "198.18.0.252", "198.18.0.253"]
    gen = make_targets("sequential", s, seed=0, own=ip_int("198.18.1.1"), start="self")
    assert ip_str(next(gen)) == "198.18.1.2"
    # a start between the ranges begins at the next target
    assert ip_str(next(sequential(s, ip_int("198.18.0.100")))) == "198.18.0.252"


def test_hit_list_in_order():
    hits = [ip_int(a) for a in ("198.18.0.9", "198.18.0.3", "198.18.0.7")]
    s = AddressSet.from_addresses(hits)
    assert list(make_targets("hit-list", s, seed=0, hits=hits)) == hits


@pytest.mark.parametrize("weights", [(0.5, 0.25, 0.25), (0.375, 0.5, 0.125)])
def test_local_preference_class_frequencies(weights):
    # Targets in three /8s; own address 10.1.2.3. Expected: P(own /16) = w16 + w8·|/16|/|/8| + wall·|/16|/|T|
    targets = AddressSet.from_cidrs(["10.1.0.0/16", "10.2.0.0/16", "10.4.0.0/15", "172.16.0.0/16",
                                     "198.18.0.0/16"])
    own = ip_int("10.1.2.3")
    c16, c8, everywhere = local_classes(targets, own)
    n16, n8, n = c16.size, c8.size, everywhere.size
    w16, w8, wall = weights
    p16 = w16 + w8 * n16 / n8 + wall * n16 / n
    p8 = w8 * (n8 - n16) / n8 + wall * (n8 - n16) / n
    p_out = wall * (n - n8) / n
    assert abs(p16 + p8 + p_out - 1) < 1e-12
    N = 40000
    gen = make_targets("local-preference", targets, seed=11, own=own, weights=weights)
    obs = [0, 0, 0]
    for t in itertools.islice(gen, N):
        assert t != own and t in targets
        obs[0 if t in c16 else 1 if t in c8 else 2] += 1
    assert chi2(obs, [N * p16, N * p8, N * p_out]) < CHI2_999[2], (obs, [N * p16, N * p8, N * p_out])


def test_local_preference_is_uniform_inside_a_class():
    targets = AddressSet.from_cidrs(["198.18.0.0/24"])
    own = ip_int("198.18.0.1")
    gen = make_targets("local-preference", targets, seed=5, own=own)
    counts = Counter((t & 0xFF) // 32 for t in itertools.islice(gen, 8000))
    expected = [8000 * (31 if b == 0 else 32) / 255 for b in range(8)]  # own address excluded from block 0
    assert chi2([counts[b] for b in range(8)], expected) < CHI2_999[7]


def test_local_preference_falls_through_empty_classes():
    targets = AddressSet.from_cidrs(["198.18.5.0/24"])
    gen = make_targets("local-preference", targets, seed=1, own=ip_int("10.0.0.1"))
    assert all(t in targets for t in itertools.islice(gen, 500))
    alone = AddressSet.from_cidrs(["198.18.5.5/32"])
    assert list(make_targets("local-preference", alone, seed=1, own=ip_int("198.18.5.5"))) == []


def test_blaster_start_is_local_40_percent_of_the_time():
    targets = AddressSet.from_cidrs(["198.18.0.0/16"])
    own = ip_int("198.18.77.9")
    local = ip_int("198.18.57.0")  # C = 77 > 20 → 77 - 20 = 57, D = 0
    starts = [blaster_start(targets, seed, own) for seed in range(5000)]
    n_local = sum(s == local for s in starts)
    assert chi2([n_local, 5000 - n_local], [2000, 3000]) < CHI2_999[1]
    assert all(s & 0xFF == 0 for s in starts)
    assert blaster_start(AddressSet.from_cidrs(["198.18.0.0/16"]), 0, ip_int("198.18.7.9"), p_local=1.0) \
        == ip_int("198.18.7.0")  # C ≤ 20 stays


def test_unknown_strategy_and_missing_own_address():
    s = AddressSet.from_cidrs(["198.18.0.0/24"])
    with pytest.raises(UsageError, match="unknown strategy 'zigzag'"):
        make_targets("zigzag", s, seed=0)
    with pytest.raises(UsageError, match="own address"):
        make_targets("local-preference", s, seed=0, own=None)

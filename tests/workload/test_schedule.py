"""The schedule is a pure, seeded function: same seed → same schedule; rates, bursts, popularity, bounds."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from workload.schedule import (
    Conn,
    GenSpec,
    fingerprint,
    generate,
    new_destinations,
    popularity_weights,
    summary,
    to_csv,
)

SERVERS = tuple(f"198.18.201.{i}" for i in range(2, 12))


def spec(**kw) -> GenSpec:
    base = {"servers": SERVERS, "rate": 10.0, "duration_s": 20.0}
    return GenSpec(**{**base, **kw})


def test_same_seed_same_schedule_and_other_seeds_differ():
    a, b = generate(spec(seed=7, burst=3, udp_fraction=0.2)), generate(spec(seed=7, burst=3, udp_fraction=0.2))
    assert a == b and fingerprint(a) == fingerprint(b)
    assert fingerprint(generate(spec(seed=8, burst=3, udp_fraction=0.2))) != fingerprint(a)


def test_schedule_is_stable_across_releases():
    """A recorded fingerprint: a change here silently changes every benign experiment's schedule."""
    s = generate(GenSpec(servers=SERVERS[:3], rate=4.0, duration_s=2.0, burst=2, udp_fraction=0.25, seed=1))
    assert [(round(c.t, 6), c.server, c.protocol) for c in s[:4]] == [
        (0.072146, 2, "tcp"), (0.072146, 0, "tcp"), (0.370602, 1, "tcp"), (0.370602, 0, "udp")]
    assert fingerprint(s) == "43ed0ae70a60412478ee72958b532c71b6e547cc2c48431f3f43d46ba167816e"


def test_periodic_arrivals_are_exact():
    s = generate(spec(arrivals="periodic", rate=4.0, duration_s=2.0, burst=2))
    assert [c.t for c in s] == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.5, 1.5]
    assert [c.page for c in s] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [c.i for c in s] == list(range(8))


def test_poisson_rate_and_exponential_gaps():
    s = generate(spec(rate=50.0, duration_s=200.0, seed=3))
    n = len(s)
    assert abs(n - 10_000) < 4 * math.sqrt(10_000)             # Poisson count: within 4 sigma
    gaps = [b.t - a.t for a, b in zip(s, s[1:], strict=False)]
    assert abs(sum(gaps) / len(gaps) - 0.02) < 0.001
    assert abs(sum(g > 0.02 for g in gaps) / len(gaps) - math.exp(-1)) < 0.02  # P(gap > mean) = 1/e
    assert all(0 <= c.t < 200.0 for c in s) and [c.t for c in s] == sorted(c.t for c in s)


def test_bursts_open_their_connections_at_the_same_instant():
    s = generate(spec(burst=4, rate=20.0, seed=5))
    pages = Counter(c.page for c in s)
    assert set(pages.values()) == {4}
    for p in pages:
        assert len({c.t for c in s if c.page == p}) == 1
    assert abs(len(s) - 400) < 4 * math.sqrt(100) * 4  # 100 ± 40 pages of 4: the mean connection rate is `rate`


def test_zipf_weights_and_frequencies():
    assert popularity_weights(3, "zipf", 1.0) == pytest.approx([6 / 11, 3 / 11, 2 / 11])
    assert popularity_weights(4, "uniform") == [0.25] * 4
    assert popularity_weights(3, "zipf", 0.0) == pytest.approx([1 / 3] * 3)
    s = generate(spec(rate=100.0, duration_s=100.0, seed=11))
    w = popularity_weights(len(SERVERS), "zipf", 1.0)
    got = Counter(c.server for c in s)
    chi2 = sum((got[k] - len(s) * w[k]) ** 2 / (len(s) * w[k]) for k in range(len(SERVERS)))
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001
    assert all(c.addr == SERVERS[c.server] for c in s)


def test_uniform_popularity_and_udp_share():
    s = generate(spec(rate=100.0, duration_s=50.0, popularity="uniform", udp_fraction=0.3, seed=2))
    got = Counter(c.server for c in s)
    chi2 = sum((got[k] - len(s) / 10) ** 2 / (len(s) / 10) for k in range(10))
    assert chi2 < 27.9
    udp = [c for c in s if c.protocol == "udp"]
    assert abs(len(udp) / len(s) - 0.3) < 0.03
    assert {c.port for c in udp} == {5353} and {c.port for c in s if c.protocol == "tcp"} == {8080}


def test_max_connections_bounds_the_schedule():
    s = generate(spec(rate=1000.0, duration_s=100.0, max_connections=123, burst=5))
    assert len(s) == 123 and s[-1].i == 122


def test_summary_and_csv():
    s = generate(spec(arrivals="periodic", rate=2.0, duration_s=2.0))
    new = new_destinations(s, 5)
    assert summary(s, 2.0) == {"connections": 4, "pages": 4, "servers_used": len({c.server for c in s}),
                               "per_protocol": {"tcp": 4, "udp": 0}, "span_s": 2.0, "rate_per_s": 2.0,
                               "working_set": 5, "new_destinations": new, "new_destinations_per_s": new / 2.0}
    lines = to_csv(s).splitlines()
    assert lines[0] == "time,destination,protocol,port" and lines[2] == f"0.5,{s[1].server},tcp,8080"


def test_new_destinations_against_an_lru_working_set():
    def seq(servers):
        return [Conn(i, float(i), i, k, f"198.18.201.{k + 2}", "tcp", 80) for i, k in enumerate(servers)]
    assert new_destinations(seq([0, 1, 0, 1, 2, 0]), 2) == 4      # 0, 1 new; 0, 1 hits; 2 new (evicts 0); 0 new
    assert new_destinations(seq([0, 1, 0, 1, 2, 0]), 3) == 3
    assert new_destinations(seq([0, 1, 2, 3] * 3), 3) == 12       # a cycle one longer than the set: all misses
    assert new_destinations(seq([]), 5) == 0
    z = generate(spec(rate=50.0, duration_s=50.0, seed=9))
    u = generate(spec(rate=50.0, duration_s=50.0, seed=9, popularity="uniform"))
    assert new_destinations(z, 5) < new_destinations(u, 5) < len(u)  # Zipf concentrates on few servers


STALE = ("198.18.201.50", "198.18.201.51", "198.18.201.52")


def test_without_a_miss_the_schedule_is_the_one_it_was():
    """`miss` 0 draws nothing for it: stale addresses given or not, the schedule (and its print) is unchanged."""
    base = generate(spec(seed=3, burst=2, udp_fraction=0.2))
    assert generate(spec(seed=3, burst=2, udp_fraction=0.2, stale=STALE, miss=0.0)) == base
    assert not any(c.miss for c in base)


def test_a_miss_goes_only_to_a_stale_address_seeded_at_about_its_share():
    a = generate(spec(seed=5, rate=50.0, duration_s=40.0, stale=STALE, miss=0.2))
    assert a == generate(spec(seed=5, rate=50.0, duration_s=40.0, stale=STALE, miss=0.2))   # seeded
    assert fingerprint(a) != fingerprint(generate(spec(seed=6, rate=50.0, duration_s=40.0, stale=STALE, miss=0.2)))
    missed = [c for c in a if c.miss]
    assert {c.addr for c in missed} == set(STALE) and {c.addr for c in a if not c.miss} <= set(SERVERS)
    assert all(c.server == len(SERVERS) + STALE.index(c.addr) for c in missed)
    assert abs(len(missed) / len(a) - 0.2) < 0.03, len(missed) / len(a)      # 2000 connections: 3 sd ≈ 0.027
    assert summary(a)["misses"] == len(missed)
    assert all(c.miss for c in generate(spec(seed=5, stale=STALE, miss=1.0)))

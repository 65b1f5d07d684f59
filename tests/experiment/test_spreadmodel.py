"""The spread model: seeded, exact where it can be checked by hand, the throttle's own model for carriers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.experiment.spreadmodel import SpreadParams, predict_spread, share_outside, throttled_out

THR = (("working_set_size", 5), ("delay_queue_limit", 100), ("release_period_s", 1.0), ("policy", "packets"))


def test_seeded_same_seed_same_band_other_seed_another():
    p = SpreadParams(hosts=16, range_size=1024, rate=20, max_attempts=20000, lifetime_s=600)
    a, b, c = (predict_spread(p, replicates=50, seed=s) for s in (3, 3, 4))
    assert a.figures == b.figures and a.band == b.band
    assert a.figures != c.figures


def test_two_hosts_the_mean_time_is_half_the_scan():
    # the other host's place in the initial one's scan is uniform over the range's 100 places but its own:
    # mean 49.5 attempts at 10/s, plus the scanner's start
    p = SpreadParams(hosts=2, range_size=100, rate=10, start_delay_s=0.5, max_attempts=1000, lifetime_s=100)
    pred = predict_spread(p, replicates=4000, seed=1)
    assert pred.figures["t_all_s"]["reached"] == 1.0
    assert pred.figures["t_all_s"]["mean"] == pytest.approx(0.5 + 4.95, rel=0.03)
    assert pred.figures["t_all_s"]["p95"] == pytest.approx(0.5 + 9.5, abs=0.2)


def test_bounds_cut_the_scan_short():
    # 20 attempts of 100 places: the other host is reached in 20 % of replicates
    p = SpreadParams(hosts=2, range_size=100, rate=10, max_attempts=20, lifetime_s=100)
    assert predict_spread(p, replicates=4000).figures["t_all_s"]["reached"] == pytest.approx(0.2, abs=0.025)
    p = SpreadParams(hosts=2, range_size=100, rate=10, max_attempts=1000, lifetime_s=3.0)   # 30 attempts
    assert predict_spread(p, replicates=4000).figures["t_all_s"]["reached"] == pytest.approx(0.3, abs=0.025)


def test_the_generation_bound_stops_the_chain():
    p = SpreadParams(hosts=30, range_size=64, rate=50, max_generations=0, max_attempts=1000, lifetime_s=100)
    assert predict_spread(p, replicates=50).figures["infected_final"]["p95"] == 1.0
    p1 = SpreadParams(hosts=30, range_size=64, rate=50, max_generations=1, max_attempts=1000, lifetime_s=100)
    f = predict_spread(p1, replicates=50).figures["infected_final"]
    assert f["p5"] == f["p95"] == 30.0     # the initial host's own scan reaches them all


def test_a_throttled_host_gets_out_its_working_set_and_a_few_releases_then_is_blocked():
    out = np.asarray(throttled_out(20.0, THR, 400, 3.0, 600.0))
    left = np.flatnonzero(np.isfinite(out))
    # five new destinations pass at once (a fresh working set); one queued SYN is released a second, but the
    # worm's connect gives up after 3 s: a SYN released later infects no one; blocked at ~5 s (queue 100)
    assert list(left[:5]) == [0, 1, 2, 3, 4] and list(out[:5]) == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert 7 <= len(left) <= 9
    assert all(out[i] - i / 20 < 3.0 for i in left)


def test_throttle_everywhere_stops_the_spread_in_most_replicates_half_is_in_between():
    base = dict(hosts=16, range_size=1024, rate=20, throttle=THR, max_attempts=20000, lifetime_s=600)
    none, half, full = (predict_spread(SpreadParams(carriers=c, **base), replicates=300, seed=2)
                        for c in (0, 8, 16))
    assert none.figures["t_all_s"]["reached"] == 1.0
    assert full.figures["t_first_s"]["reached"] < 0.25          # 15 of 1024 in ~8 attempts: ~11 %
    assert full.figures["infected_final"]["p50"] == 1.0
    assert 0.3 < half.figures["t_all_s"]["reached"] < 0.8
    assert half.figures["t_50_s"]["p50"] > none.figures["t_50_s"]["p50"]


def test_the_band_and_inside():
    p = SpreadParams(hosts=16, range_size=1024, rate=20, max_attempts=20000, lifetime_s=600)
    pred = predict_spread(p, replicates=100)
    f = pred.figures["t_all_s"]
    assert f["p5"] < f["p50"] < f["p95"]
    assert pred.inside("t_all_s", f["p50"]) and not pred.inside("t_all_s", f["p95"] + 1)
    assert not pred.inside("t_all_s", None)             # all fell in every replicate: never falling is outside
    assert pred.band["p5"][0] == 1 and pred.band["p95"][-1] == 16
    assert all(a <= b for a, b in zip(pred.band["p5"], pred.band["p95"], strict=True))


def test_gateway_throttles_only_what_crosses_it():
    assert share_outside("198.18.16.0/24", "198.18.16.0/22") == 0.75
    assert share_outside("198.18.32.0/24", "198.18.16.0/22") == 1.0
    subnets = tuple(i % 4 for i in range(16))
    base = dict(hosts=16, range_size=1024, rate=20, throttle=THR, max_attempts=20000, lifetime_s=600,
                subnets=subnets, cross_share=(0.75,) * 16)
    gw = predict_spread(SpreadParams(gateway=True, **base), replicates=200, seed=5)
    none = predict_spread(SpreadParams(**base), replicates=200, seed=5)
    # each subnet's own hosts still fall to each other; the spread across subnets is held at the gateway
    assert none.figures["infected_final"]["p5"] == 16.0
    assert gw.figures["infected_final"]["p5"] == 4.0        # the initial host's subnet: never through the gateway
    assert gw.figures["t_all_s"]["reached"] < 0.1


def test_refuses_a_spread_it_cannot_model():
    with pytest.raises(ValueError, match="at least as large"):
        predict_spread(SpreadParams(hosts=20, range_size=10, rate=1))
    assert math.isfinite(predict_spread(SpreadParams(hosts=2, range_size=4, rate=1), replicates=5)
                         .figures["t_all_s"]["p50"])

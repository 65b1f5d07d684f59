"""Ties at the release tick: the set of outcomes from two runs (ties early, ties late) and the alternatives of the
late run is exactly the set that every ordering of the ties gives — checked by exhaustive enumeration on random
small schedules (hypothesis), and by hand on the 2/s case that provokes them."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttle.core import ConfigError, Request, Throttle, ThrottleConfig
from throttle.model import Arrival, Ties, WormSchedule, replay
from throttle.orderings import orderings

SRC = "198.18.8.2"
W = 0.01          # tie window of the random schedules
BEFORE = 1e-6


def enumerate_outcomes(cfg: ThrottleConfig, arrivals: list[Arrival], w: float) -> set[tuple[float | None, int]]:
    """Every ordering, by brute force on copies of the core: at each arrival within `w` of its source's pending
    tick, both the arrival first (decided just before the tick) and the release first (decided at the tick).
    (blocked_at or None, attempts out before the block — or in all, the queue drained, when never blocked)."""
    found: set[tuple[float | None, int]] = set()

    def out_of(events):
        ids = set()
        for e in events:
            if e.event == "blocked":
                return e.t, len(ids)
            if e.event in ("passed", "released"):
                ids.add(e.ref.attempt)
        return None, len(ids)

    def go(core: Throttle, now: float, events: list, i: int) -> None:
        if any(e.event == "blocked" for e in events) or i == len(arrivals):
            found.add(out_of(events + core.advance(max(now, 1e9))))
            return
        a = arrivals[i]
        req = Request(a.src, a.dst, a.sport, a.dport, a.proto, ref=a)
        now = max(now, a.t - w)
        events = events + core.advance(now)
        tick = (core.status().get(a.src) or {}).get("next_release")
        if tick is not None and tick <= a.t + w:
            first = copy.deepcopy(core)
            t1 = max(now, min(a.t, tick - BEFORE))
            go(first, t1, events + first.submit(req, t1).events, i + 1)
            t2 = max(now, tick)
            go(core, t2, events + core.submit(req, t2).events, i + 1)
        else:
            t = max(now, a.t)
            go(core, t, events + core.submit(req, t).events, i + 1)

    go(Throttle(cfg, clock=lambda: 0.0), -math.inf, [], 0)
    return found


def _same(a, b) -> bool:
    return a[1] == b[1] and ((a[0] is None and b[0] is None)
                             or (a[0] is not None and b[0] is not None and abs(a[0] - b[0]) <= W + 1e-9))


@st.composite
def schedules(draw):
    ws = draw(st.integers(1, 3))
    cfg = ThrottleConfig(working_set_size=ws, release_period_s=1.0, delay_queue_limit=draw(st.integers(0, 4)),
                         policy=draw(st.sampled_from(["packets", "connections"])),
                         initial_working_set=tuple(f"k{i}" for i in range(draw(st.integers(0, ws)))))
    n = draw(st.integers(1, 12))
    repeats = draw(st.booleans())     # destinations drawn again (complex ties) or every one new
    arrivals = []
    for i in range(n):
        t = draw(st.integers(0, 10)) * 0.5 + draw(st.sampled_from([-0.004, 0.0, 0.003, 0.02]))
        dst = f"d{draw(st.integers(0, 3))}" if repeats else f"n{i}"
        arrivals.append((max(t, 0.0), dst, draw(st.sampled_from([1, 2]))))
    arrivals.sort()
    return cfg, [Arrival(t, SRC, dst, sport, 8080, "tcp", i) for i, (t, dst, sport) in enumerate(arrivals)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_the_set_is_exactly_what_every_ordering_gives(sc):
    cfg, arrivals = sc
    got = orderings(arrivals, cfg, src=SRC, window_s=W)
    if not got.incomplete:
        brute = enumerate_outcomes(cfg, arrivals, W)
        mine = {(o.blocked_at, o.out_before_block) for o in got.outcomes}
        assert all(any(_same(b, m) for m in mine) for b in brute), (brute, mine)     # nothing reachable missed
        assert all(any(_same(m, b) for b in brute) for m in mine), (brute, mine)     # nothing unreachable
    # the extremes come with the fewest and the most attempts out
    assert got.earliest.out_before_block == min(o.out_before_block for o in got.outcomes)
    assert got.latest.out_before_block == max(o.out_before_block for o in got.outcomes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_scans_of_new_addresses_need_no_branching(sc):
    """Without a destination drawn twice no tie is complex: early and late runs alone give the extremes."""
    cfg, arrivals = sc
    fresh = [Arrival(a.t, a.src, f"new{i}", a.sport, a.dport, a.proto, i) for i, a in enumerate(arrivals)]
    got = orderings(fresh, cfg, src=SRC, window_s=W)
    assert got.complex_ties == 0 and got.runs == 3 and not got.incomplete
    early = replay(fresh, cfg, ties=Ties(W, "arrival")).sources[SRC]
    late = replay(fresh, cfg, ties=Ties(W, "release")).sources[SRC]
    assert _same((got.earliest.blocked_at, got.earliest.out_before_block), (early.blocked_at, early.out_before_block))
    assert _same((got.latest.blocked_at, got.latest.out_before_block), (late.blocked_at, late.out_before_block))


def two_per_second(n: int, offsets: dict[int, float] | None = None) -> list[Arrival]:
    """A UDP scan at 2/s of new addresses, attempt i at i/2 s (plus offsets[i])."""
    offsets = offsets or {}
    return [Arrival(i / 2 + offsets.get(i, 0.0), SRC, f"198.18.9.{i}", 53411, 8080, "udp", i) for i in range(n)]


FULL10 = ThrottleConfig(delay_queue_limit=10, initial_working_set=tuple(f"198.18.10.{254 - i}" for i in range(5)))


def test_at_two_per_second_every_other_arrival_is_a_tie_and_the_last_one_decides():
    """The queue grows one entry a second; at the tick 9 s the arrival finds 10 entries: decided first it blocks
    (9.0 s, 8 out), decided after the release it is queued and the next one blocks (9.5 s, 9 out)."""
    late_arrivals = two_per_second(40, {i: 20e-6 for i in range(2, 40, 2)})      # each tie 20 µs after its tick
    early_arrivals = two_per_second(40, {i: -20e-6 for i in range(2, 40, 2)})    # or 20 µs before it
    for arrivals, strict in ((late_arrivals, (9.5, 9)), (early_arrivals, (9.0, 8))):
        got = orderings(arrivals, FULL10, src=SRC, window_s=0.0002)
        t0 = arrivals[0].t
        assert [(round(o.blocked_at - t0, 3), o.out_before_block) for o in got.outcomes] == [(9.0, 8), (9.5, 9)]
        so = got.strict_outcome
        assert (round(so.blocked_at - t0, 3), so.out_before_block) == strict
        assert got.ties == 9 and got.decisive == 1 and got.complex_ties == 0
    exact = orderings(late_arrivals, FULL10, src=SRC, window_s=0.0)   # no window: the strict prediction alone
    assert [(round(o.blocked_at, 3), o.out_before_block) for o in exact.outcomes] == [(9.5, 9)] and exact.ties == 0
    narrow = orderings(late_arrivals, FULL10, src=SRC, window_s=10e-6)   # narrower than the 20 µs: no tie
    assert len(narrow.outcomes) == 1 and narrow.ties == 0


def test_the_worms_schedule_is_followed_past_the_end_of_its_log():
    """Logged up to 9.25 s (the runner stopped the worm after the real block at 9.0 s): the late ordering's block
    at 9.5 s comes from the schedule's next attempt."""
    logged = two_per_second(19, {i: 20e-6 for i in range(0, 19, 2)})           # attempts 0 … 18, up to 9.0 s
    more = WormSchedule(src=SRC, protocol="udp", cut=9.25, origin=0.0, rate=2.0, first=19, max_attempts=1000,
                        end=60.0, targets=lambda: (f"198.18.9.{i}" for i in range(19, 256)), sport=53411,
                        dport=8080, lateness=20e-6)
    cut_short = orderings(logged, FULL10, src=SRC, window_s=0.0002)
    assert [(o.blocked_at is not None, o.out_before_block) for o in cut_short.outcomes] == [(True, 8), (False, 19)]
    got = orderings(logged, FULL10, src=SRC, window_s=0.0002, more=more)
    assert [(round(o.blocked_at, 3), o.out_before_block) for o in got.outcomes] == [(9.0, 8), (9.5, 9)]
    assert got.latest.out_at_cut == 9 and got.earliest.out_at_cut is None      # the 9.5 s block is after the cut
    capped = WormSchedule(**{**more.__dict__, "max_attempts": 19})              # the worm's own bound ends it
    assert orderings(logged, FULL10, src=SRC, window_s=0.0002, more=capped).latest.blocked_at is None
    short = WormSchedule(**{**more.__dict__, "end": 9.4})                        # so does its lifetime
    assert orderings(logged, FULL10, src=SRC, window_s=0.0002, more=short).latest.blocked_at is None


def test_tcp_after_the_log_is_retransmitted_until_answered():
    """An attempt after the log is retransmitted on the sender's schedule while open: at the gateway each
    retransmission is a queue entry; once a packet of it is let out and answered, no more come."""
    cfg = ThrottleConfig(working_set_size=1, delay_queue_limit=3, initial_working_set=("k",))
    logged = [Arrival(0.0, SRC, "a0", 40000, 8080, "tcp", 0)]
    kw = dict(src=SRC, protocol="tcp", cut=0.1, origin=0.0, rate=0.5, first=1, max_attempts=2, end=60.0,
              targets=lambda: iter(["a1"]), dport=8080, offsets=(0.4, 0.8, 1.6), connect_timeout_s=3.0)
    answered = replay(logged, cfg, more=WormSchedule(**kw, answered=True)).sources[SRC]
    silent = replay(logged, cfg, more=WormSchedule(**kw, answered=False)).sources[SRC]
    # a0 queued at 0, released at 1.0; a1 at 2.0 (due at 1/0.5 s), retransmitted at 2.4 and 2.8 (queued: three
    # entries, all released at the tick 3.0); answered then, or retransmitted once more at 3.6 (passes: a1 is
    # in the working set now); the timeout (3 s) comes before the fourth
    assert answered.arrivals_before_block == 4 and answered.counts == {"queued": 4, "released": 4}
    assert silent.arrivals_before_block == 5 and silent.counts == {"queued": 4, "released": 4, "passed": 1}
    assert answered.blocked_at is None and silent.blocked_at is None
    assert replay(logged, cfg, placement="host", more=WormSchedule(**kw, answered=False)).sources[SRC] \
        .suppressed_retransmits == 2          # in the host, the two while a1 was held are never sent


@pytest.mark.parametrize("kw, msg", [({"window_s": -1.0}, "finite number of seconds >= 0"),
                                     ({"window_s": math.nan}, "finite number"),
                                     ({"window_s": 0.1, "prefer": "never"}, "unknown tie order 'never'")])
def test_a_bad_tie_rule_is_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        Ties(**kw)

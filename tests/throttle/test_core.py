"""The paper's semantics, step by step, against a fake clock."""

from __future__ import annotations

import pytest

from throttle.core import ConfigError, Request, Throttle, ThrottleConfig

A = "198.18.0.1"
B = "198.18.0.2"


def dst(i: int) -> str:
    return f"198.18.8.{i}"


def sub(th: Throttle, t: float, d: str, src: str = A, sport: int | None = None, proto: str = "tcp"):
    return th.submit(Request(src, d, sport, 80, proto, ref=(src, d, sport, t)), t)


def kinds(events):
    return [(e.event, e.dst, e.queue_len, e.reason) for e in events]


def test_five_pass_sixth_waits_exactly_one_period():
    th = Throttle(ThrottleConfig())
    for i in range(5):
        d = sub(th, 10.0 + i * 0.01, dst(i))
        assert d.verdict == "pass"
        assert kinds(d.events) == [("passed", dst(i), 0, "room")]
    d = sub(th, 10.1, dst(5))
    assert d.verdict == "queue"
    assert kinds(d.events) == [("queued", dst(5), 1, "entry")]
    assert th.next_due() == pytest.approx(11.1)
    assert th.advance(11.099) == []
    ev = th.advance(11.1)
    assert kinds(ev) == [("released", dst(5), 0, "head")]
    assert ev[0].t == pytest.approx(11.1) and ev[0].ref[1] == dst(5)
    # the released destination entered the working set, evicting the least recently used (dst 0)
    assert th.status()[A]["working_set"] == [dst(i) for i in range(1, 6)]
    assert th.next_due() is None


def test_hit_passes_and_refreshes_recency():
    th = Throttle(ThrottleConfig())
    for i in range(5):
        sub(th, 0.0, dst(i))
    d = sub(th, 0.5, dst(0))
    assert kinds(d.events) == [("passed", dst(0), 0, "hit")]
    sub(th, 0.6, dst(9))
    th.advance(1.6)
    # dst 0 was refreshed, so dst 1 is the one evicted
    assert th.status()[A]["working_set"] == [dst(2), dst(3), dst(4), dst(0), dst(9)]
    # a hit passes at once even while the queue is non-empty
    sub(th, 1.7, dst(20))
    assert sub(th, 1.8, dst(9)).verdict == "pass"


def test_queued_destination_duplicates_leave_with_it():
    th = Throttle(ThrottleConfig())
    for i in range(5):
        sub(th, 0.0, dst(i))
    sub(th, 0.1, dst(6), sport=1000)
    sub(th, 0.2, dst(7), sport=1001)
    d = sub(th, 0.3, dst(6), sport=1002)     # another connection to the queued destination
    assert kinds(d.events) == [("queued", dst(6), 3, "entry")]
    ev = th.advance(1.1)
    assert kinds(ev) == [("released", dst(6), 2, "head"), ("released", dst(6), 1, "same-destination")]
    assert [e.sport for e in ev] == [1000, 1002]
    assert th.next_due() == pytest.approx(2.1)        # then one per period while non-empty
    assert kinds(th.advance(2.1)) == [("released", dst(7), 0, "head")]
    assert th.next_due() is None


def test_timer_stops_when_empty_and_rearms_on_next_entry():
    th = Throttle(ThrottleConfig(release_period_s=0.5))
    for i in range(5):
        sub(th, 0.0, dst(i))
    sub(th, 0.1, dst(10))
    assert [e.t for e in th.advance(0.6)] == [pytest.approx(0.6)]
    sub(th, 0.875, dst(11))                    # not on the old 0.1 + k*0.5 grid
    assert th.next_due() == 1.375
    assert th.advance(1.374) == []
    assert [e.dst for e in th.advance(1.375)] == [dst(11)]


def test_releases_catch_up_on_a_late_call_with_due_times():
    th = Throttle(ThrottleConfig())
    for i in range(5):
        sub(th, 0.0, dst(i))
    for i in range(3):
        sub(th, 0.25, dst(10 + i))
    d = sub(th, 3.5, dst(4))                   # releases due at 1.25, 2.25, 3.25 come first
    assert [(e.event, e.t) for e in d.events] == [("released", 1.25), ("released", 2.25), ("released", 3.25),
                                                   ("passed", 3.5)]
    assert d.events[-1].reason == "hit"


def test_the_101st_entry_blocks_and_nothing_leaves_afterwards():
    th = Throttle(ThrottleConfig())
    for i in range(5):
        sub(th, 0.0, dst(i))
    for i in range(100):
        d = sub(th, 0.001 * (i + 1), f"198.18.9.{i}")
        assert d.verdict == "queue" and d.events[-1].queue_len == i + 1
    d = sub(th, 0.2, "198.18.10.1")
    assert d.verdict == "drop"
    assert d.events[0].event == "blocked" and d.events[0].queue_len == 100 and d.events[0].dst == "198.18.10.1"
    drops = d.events[1:]
    assert len(drops) == 100 and {e.event for e in drops} == {"dropped"} and {e.reason for e in drops} == {"flushed"}
    assert [e.queue_len for e in drops] == list(range(99, -1, -1))
    assert [e.dst for e in drops] == [f"198.18.9.{i}" for i in range(100)]
    assert th.is_blocked(A) and th.status()[A]["blocked_at"] == 0.2
    # nothing queued ever leaves, and every further request is dropped, working-set hits included
    assert th.next_due() is None and th.advance(100.0) == []
    for d_ in (dst(0), "198.18.11.1"):
        d = sub(th, 100.0, d_)
        assert d.verdict == "drop" and kinds(d.events) == [("dropped", d_, 0, "blocked")]


def test_reset_unblocks_and_restores_the_initial_state():
    cfg = ThrottleConfig(delay_queue_limit=2, initial_working_set=(dst(0), dst(1)))
    th = Throttle(cfg)
    for i in range(2, 5):
        assert sub(th, 0.0, dst(i)).verdict == "pass"
    sub(th, 0.1, dst(10))
    sub(th, 0.1, dst(11))
    assert sub(th, 0.1, dst(12)).verdict == "drop" and th.is_blocked(A)
    ev = th.reset(now=1.0)
    assert kinds(ev) == [("reset", None, 0, None)] and ev[0].src is None
    assert not th.is_blocked(A)
    assert th.status() == {}
    d = sub(th, 1.1, dst(20))
    assert d.verdict == "pass" and d.events[0].reason == "room"
    assert th.status()[A]["working_set"] == [dst(0), dst(1), dst(20)]


def test_reset_drops_what_is_queued_and_can_target_one_source():
    th = Throttle(ThrottleConfig(working_set_size=1))
    sub(th, 0.0, dst(0), src=A)
    sub(th, 0.0, dst(1), src=A)
    sub(th, 0.0, dst(0), src=B)
    sub(th, 0.0, dst(1), src=B)
    ev = th.reset(A, now=0.5)
    assert [(e.event, e.src, e.reason) for e in ev] == [("dropped", A, "reset"), ("reset", A, None)]
    assert th.queue_len(A) == 0 and th.queue_len(B) == 1
    assert [(e.event, e.src) for e in th.advance(1.0)] == [("released", B)]


def test_sources_are_independent():
    th = Throttle(ThrottleConfig(working_set_size=1, delay_queue_limit=1))
    sub(th, 0.0, dst(0), src=A)
    sub(th, 0.0, dst(1), src=A)
    assert sub(th, 0.0, dst(2), src=A).verdict == "drop"
    assert sub(th, 0.0, dst(0), src=B).verdict == "pass"
    assert sub(th, 0.0, dst(1), src=B).verdict == "queue"
    st = th.status()
    assert st[A]["blocked"] and not st[B]["blocked"] and st[B]["queue_len"] == 1


def test_packets_policy_counts_every_retransmission():
    th = Throttle(ThrottleConfig(policy="packets", release_period_s=5.0))
    for i in range(5):
        sub(th, 0.0, dst(i))
    for t in (0.1, 1.0, 2.0):
        d = sub(th, t, dst(9), sport=4000)
    assert d.events[-1].queue_len == 3 and d.events[-1].reason == "entry"


def test_connections_policy_joins_retransmissions_to_their_entry():
    th = Throttle(ThrottleConfig(policy="connections", release_period_s=5.0))
    for i in range(5):
        sub(th, 0.0, dst(i))
    sub(th, 0.1, dst(9), sport=4000)
    d = sub(th, 1.1, dst(9), sport=4000)
    assert d.verdict == "queue" and kinds(d.events) == [("queued", dst(9), 1, "joined")]
    d = sub(th, 1.2, dst(9), sport=4001)      # another connection to the same destination: a new entry
    assert kinds(d.events) == [("queued", dst(9), 2, "entry")]
    assert th.status()[A]["queued_packets"] == 3
    ev = th.advance(5.1)
    assert [(e.event, e.sport, e.queue_len) for e in ev] == [("released", 4000, 1), ("released", 4000, 1),
                                                              ("released", 4001, 0)]
    # after the release the destination is in the working set: a late retransmission passes
    assert sub(th, 6.0, dst(9), sport=4000).events[-1].reason == "hit"


def test_connections_policy_block_drops_every_packet_of_the_entries():
    th = Throttle(ThrottleConfig(policy="connections", working_set_size=1, delay_queue_limit=1))
    sub(th, 0.0, dst(0))
    sub(th, 0.1, dst(1), sport=7)
    sub(th, 0.2, dst(1), sport=7)              # joins: the queue still holds one entry
    assert th.queue_len(A) == 1
    d = sub(th, 0.3, dst(2), sport=8)
    assert [(e.event, e.sport, e.queue_len) for e in d.events] == [("blocked", 8, 1), ("dropped", 7, 0),
                                                                   ("dropped", 7, 0)]


def test_full_initial_working_set_queues_the_first_new_destination():
    cfg = ThrottleConfig(initial_working_set=tuple(dst(i) for i in range(5)))
    assert cfg.initial_state == "full"
    th = Throttle(cfg)
    assert sub(th, 0.0, dst(3)).verdict == "pass"
    assert sub(th, 0.0, dst(50)).verdict == "queue"
    assert ThrottleConfig().initial_state == "fresh"
    assert ThrottleConfig(initial_working_set=(dst(1),)).initial_state == "partial"


def test_limit_zero_blocks_on_the_first_entry():
    th = Throttle(ThrottleConfig(working_set_size=1, delay_queue_limit=0))
    sub(th, 0.0, dst(0))
    d = sub(th, 0.0, dst(1))
    assert kinds(d.events) == [("blocked", dst(1), 0, "limit")]


def test_free_running_clock_releases_on_the_grid():
    th = Throttle(ThrottleConfig(release_clock="free", clock_origin_s=100.0, working_set_size=1))
    sub(th, 100.0, dst(0))
    sub(th, 100.3, dst(1))
    assert th.next_due() == pytest.approx(101.0)
    sub(th, 100.4, dst(2))
    assert [e.t for e in th.advance(103.5)] == [pytest.approx(101.0), pytest.approx(102.0)]
    sub(th, 104.0, dst(3))                      # exactly on a tick: the next tick takes it
    assert th.next_due() == pytest.approx(105.0)
    assert ThrottleConfig(release_clock="free").to_dict()["release_clock"] == "free"


def test_events_carry_the_packet_fields():
    th = Throttle(ThrottleConfig())
    e = th.submit(Request(A, dst(1), 40000, 8080, "udp", ref="pkt"), 5.0).events[0]
    assert (e.event, e.t, e.src, e.dst, e.sport, e.dport, e.proto, e.queue_len, e.ref) == \
        ("passed", 5.0, A, dst(1), 40000, 8080, "udp", 0, "pkt")
    assert e.to_dict() == {"event": "passed", "t": 5.0, "src": A, "dst": dst(1), "sport": 40000, "dport": 8080,
                           "proto": "udp", "queue_len": 0, "reason": "room"}


def test_injected_clock_and_time_order():
    now = [7.0]
    th = Throttle(ThrottleConfig(), clock=lambda: now[0])
    assert th.submit(Request(A, dst(1))).events[0].t == 7.0
    with pytest.raises(ValueError, match="backwards"):
        th.submit(Request(A, dst(2)), 6.0)


def test_drop_all_for_shutdown():
    th = Throttle(ThrottleConfig(working_set_size=1))
    sub(th, 0.0, dst(0))
    sub(th, 0.0, dst(1))
    ev = th.drop_all(0.5)
    assert kinds(ev) == [("dropped", dst(1), 0, "shutdown")] and th.next_due() is None


@pytest.mark.parametrize("kw, msg", [
    ({"working_set_size": 0}, "working_set_size must be >= 1"),
    ({"working_set_size": 2.5}, "working_set_size must be an integer"),
    ({"working_set_size": True}, "working_set_size must be an integer"),
    ({"release_period_s": 0}, "release_period_s must be a finite number > 0"),
    ({"release_period_s": -1.0}, "release_period_s must be a finite number > 0"),
    ({"release_period_s": float("nan")}, "release_period_s must be a finite number > 0"),
    ({"delay_queue_limit": -1}, "delay_queue_limit must be >= 0"),
    ({"policy": "bytes"}, "unknown policy 'bytes'; known: packets, connections"),
    ({"release_clock": "cron"}, "unknown release_clock"),
    ({"initial_working_set": ("a", "a")}, "twice"),
    ({"initial_working_set": tuple("abcdef")}, "more than working_set_size=5"),
])
def test_invalid_parameters_are_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
        ThrottleConfig(**kw)


def test_config_dict_names_the_state():
    d = ThrottleConfig(initial_working_set=(dst(1),) * 1).to_dict()
    assert d == {"policy": "packets", "working_set_size": 5, "delay_queue_limit": 100, "release_period_s": 1.0,
                 "release_clock": "armed", "initial_working_set": [dst(1)], "initial_state": "partial"}


def test_a_clone_goes_its_own_way():
    """The model's what-if runs: a clone decides on from the same state, and neither changes the other."""
    c = Throttle(ThrottleConfig(working_set_size=1, delay_queue_limit=2, policy="connections"))
    sub(c, 0.0, "a", sport=1)
    sub(c, 0.1, "b", sport=2)                   # queued, armed: release at 1.1
    sub(c, 0.2, "c", sport=3)
    k = c.clone()
    assert k.status() == c.status() and k.counts == c.counts
    assert [e.event for e in sub(k, 0.3, "d", sport=4).events] == ["blocked", "dropped", "dropped"]
    assert c.status()[A]["queue_len"] == 2 and not c.is_blocked(A) and k.is_blocked(A)
    assert sub(c, 0.4, "b", sport=2).verdict == "queue"           # joins its entry in the original only
    assert [(e.event, e.dst, e.t) for e in c.advance(1.1)] == [("released", "b", 1.1), ("released", "b", 1.1)]
    assert k.advance(5.0) == [] and k.counts["blocked"] == 1 and c.counts["blocked"] == 0

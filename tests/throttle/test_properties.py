"""Properties (hypothesis): the rate bound before a block, model = core = an independent naive reference on any
arrival sequence, and what each retransmission policy counts."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttle.core import Request, Throttle, ThrottleConfig
from throttle.model import Arrival, replay

SRCS = ["198.18.0.1", "198.18.0.2"]


@st.composite
def scenarios(draw):
    cfg = ThrottleConfig(
        working_set_size=draw(st.integers(1, 4)),
        release_period_s=draw(st.sampled_from([0.25, 0.5, 1.0])),
        delay_queue_limit=draw(st.integers(0, 12)),
        policy=draw(st.sampled_from(["packets", "connections"])),
        initial_working_set=tuple(f"d{i}" for i in range(draw(st.integers(0, 1)))),
    )
    n = draw(st.integers(1, 60))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.01, 0.05, 0.25, 0.5, 1.0, 2.5]), min_size=n, max_size=n))
    t = 0.0
    arrivals = []
    for gap in gaps:
        t += gap
        arrivals.append(Arrival(t, draw(st.sampled_from(SRCS)), f"d{draw(st.integers(0, 9))}",
                                draw(st.sampled_from([None, 1, 2, 3])), 80, "tcp"))
    return cfg, arrivals


class Naive:
    """An independent, deliberately simple implementation of the semantics in docs/throttle.md."""

    def __init__(self, cfg: ThrottleConfig):
        self.cfg = cfg
        self.s: dict[str, dict] = {}
        self.out: list[tuple] = []

    def src(self, name):
        if name not in self.s:
            self.s[name] = {"ws": list(self.cfg.initial_working_set), "q": [], "blocked": False, "next": None}
        return self.s[name]

    def tick_until(self, now):
        while True:
            due = [(v["next"], k) for k, v in self.s.items() if v["next"] is not None and v["next"] <= now]
            if not due:
                return
            t, name = min(due)
            s = self.s[name]
            d = s["q"][0]["dst"]
            leaving = [e for e in s["q"] if e["dst"] == d]
            s["q"] = [e for e in s["q"] if e["dst"] != d]
            if d in s["ws"]:
                s["ws"].remove(d)
            s["ws"].append(d)
            s["ws"] = s["ws"][-self.cfg.working_set_size:]
            for e in leaving:
                for a in e["pkts"]:
                    self.out.append(("released", name, a.dst, a.sport))
            s["next"] = s["next"] + self.cfg.release_period_s if s["q"] else None

    def submit(self, a: Arrival):
        self.tick_until(a.t)
        s = self.src(a.src)
        if s["blocked"]:
            self.out.append(("dropped", a.src, a.dst, a.sport))
            return
        if a.dst in s["ws"]:
            s["ws"].remove(a.dst)
            s["ws"].append(a.dst)
            self.out.append(("passed", a.src, a.dst, a.sport))
            return
        if self.cfg.policy == "connections" and a.sport is not None:
            for e in s["q"]:
                if (e["dst"], e["sport"]) == (a.dst, a.sport):
                    e["pkts"].append(a)
                    self.out.append(("queued", a.src, a.dst, a.sport))
                    return
        if len(s["ws"]) < self.cfg.working_set_size:
            s["ws"].append(a.dst)
            self.out.append(("passed", a.src, a.dst, a.sport))
            return
        if len(s["q"]) >= self.cfg.delay_queue_limit:
            s["blocked"] = True
            self.out.append(("blocked", a.src, a.dst, a.sport))
            for e in s["q"]:
                for p in e["pkts"]:
                    self.out.append(("dropped", a.src, p.dst, p.sport))
            s["q"] = []
            s["next"] = None
            return
        s["q"].append({"dst": a.dst, "sport": a.sport, "pkts": [a]})
        self.out.append(("queued", a.src, a.dst, a.sport))
        if len(s["q"]) == 1:
            s["next"] = a.t + self.cfg.release_period_s


def key(e):
    return (e.event, e.src, e.dst, e.sport)


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(scenarios())
def test_core_model_and_naive_reference_agree(sc):
    cfg, arrivals = sc
    end = arrivals[-1].t + (cfg.delay_queue_limit + 2) * cfg.release_period_s   # every queue drained

    naive = Naive(cfg)
    for a in arrivals:
        naive.submit(a)
    naive.tick_until(end)

    # the core driven the way the daemon drives it: a clock stepping in small increments, advance() on
    # every step, submit() when a packet comes
    core = Throttle(cfg, clock=lambda: 0.0)
    stepped = []
    t, i, step = 0.0, 0, 0.013
    while i < len(arrivals) or t < end:
        while i < len(arrivals) and arrivals[i].t <= t:
            a = arrivals[i]
            stepped += core.submit(Request(a.src, a.dst, a.sport, a.dport, a.proto), a.t).events
            i += 1
        stepped += core.advance(t)
        t = round(t + step, 6)
    stepped += core.advance(end)

    rep = replay(arrivals, cfg, until=end)
    assert [key(e) for e in rep.events] == naive.out
    assert [key(e) for e in stepped] == naive.out
    # the model's release times are the due times, whatever the driving
    assert [e.t for e in rep.events if e.event == "released"] == \
           [e.t for e in stepped if e.event == "released"]


@FAST
@given(scenarios())
def test_before_a_block_at_most_working_set_plus_one_per_period_new_destinations_leave(sc):
    cfg, arrivals = sc
    rep = replay(arrivals, cfg)
    room = cfg.working_set_size - len(cfg.initial_working_set)
    for src, sr in rep.sources.items():
        new_out = set()
        for e in rep.events:
            if e.src != src:
                continue
            if e.event == "blocked":
                break
            if (e.event, e.reason) in (("passed", "room"), ("released", "head")):
                new_out.add((e.event, e.t, e.dst))      # an entry's packets leave as one destination
                bound = room + math.floor((e.t - sr.first_arrival) / cfg.release_period_s + 1e-9)
                assert len(new_out) <= bound, (src, e)


@FAST
@given(scenarios())
def test_each_policy_counts_what_it_claims(sc):
    cfg, arrivals = sc
    rep = replay(arrivals, cfg)
    queued: dict[str, list] = {s: [] for s in SRCS}
    final = {}
    for e in rep.events:
        pk = (e.ref.t, e.ref.src, e.ref.dst, e.ref.sport, id(e.ref))
        q = queued[e.src]
        if e.event == "queued":
            q.append(pk)
        elif e.event in ("released", "dropped") and pk in q:
            q.remove(pk)
        if e.event != "queued":
            assert pk not in final, "a packet got two verdicts"
            final[pk] = e.event
        if cfg.policy == "packets":
            expect = len(q)
        else:
            # an entry is one connection (dst, sport): it leaves whole, with all its packets
            entries = {(p[2], p[3]) if p[3] is not None else p for p in q}
            if e.event != "queued" and e.sport is not None:
                entries.discard((e.dst, e.sport))
            expect = len(entries)
        assert e.queue_len == (expect if e.event != "blocked" else cfg.delay_queue_limit), e
    # every packet got exactly one verdict, and the replay drained every queue
    assert len(final) == len(arrivals)


@FAST
@given(scenarios())
def test_packets_policy_never_blocks_later_than_connections(sc):
    cfg, arrivals = sc
    by_pkt = replay(arrivals, ThrottleConfig(**{**cfg.__dict__, "policy": "packets"}))
    by_conn = replay(arrivals, ThrottleConfig(**{**cfg.__dict__, "policy": "connections"}))
    for src, sr in by_conn.sources.items():
        if sr.blocked_at is not None:
            assert by_pkt.sources[src].blocked_at is not None
            assert by_pkt.sources[src].blocked_at <= sr.blocked_at

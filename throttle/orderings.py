"""What the throttle's timing allows: the set of outcomes (block, attempts out) that the orderings of ties give.

An arrival that falls within the daemon's decision jitter of a release tick of its source (a *tie*: at 2/s
every other arrival does, within tens of microseconds) may be decided before or after that release. The
model's exact clock puts each one way; the daemon either way. With n ties there are 2ⁿ orderings, and this
module finds the whole set without enumerating them:

- A tie whose arrival's destination is not in the working set (every tie of a scan of new addresses) leaves
  the same state in both orders — the same entries queued and released, the same working set, the release
  clock in the same phase (decided after the release, the arrival is decided at the tick itself) — except
  that the arrival decided first sees the queue longer by the entries the tick releases, so it alone may
  block where the other order queues it. Until a block, every ordering walks through the same states; the
  block comes at the first arrival whose queue, in its tie's order, reaches the limit. Deciding every tie
  arrival-first gives the earliest block, release-first the latest, and each tick of the release-first run
  at which its tied arrivals (one, or the first few: arrivals keep their order), decided first, would have
  blocked is one more reachable outcome (`Tie.alternative`, found on a clone of the core) — those are all.
  Attempts out only grow along the walk: the fewest go with the earliest block, the most with the latest.
- A *complex* tie (its destination is in the working set: the release may evict it, or the two orders leave
  it and the released destination in a different LRU order) can change what follows, so both of its orders
  are followed, depth first, each run still resolving the simple ties early or late — up to `leaves` runs
  per extreme. Past that, or when a complex arrival is the second or later of the arrivals tied to one tick
  in the release-first run (no run of it can decide it first), the set is `incomplete`: what was found is
  reachable, but more may be.

tests/throttle/test_orderings.py checks this against exhaustive enumeration of every ordering on random
small schedules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .core import ThrottleConfig
from .model import Arrival, Replay, Ties, WormSchedule, replay

LEAVES = 64      # runs per extreme when complex ties branch


@dataclass(frozen=True)
class Outcome:
    """One reachable outcome for a source: its block (None: not blocked) and what was out by then; with the
    worm's schedule continued past its log, `out_at_cut`: attempts out by the time the log ends, when the
    block comes later (all a trial that was stopped there can have seen)."""

    blocked_at: float | None
    out_before_block: int
    packets_out_before_block: int
    out_at_cut: int | None = None

    @property
    def key(self) -> tuple[float, int]:
        return (math.inf if self.blocked_at is None else self.blocked_at, self.out_before_block)


@dataclass
class OrderingSet:
    """The strict prediction (exact clock) and every outcome the orderings of ties allow, for one source."""

    src: str
    window_s: float
    strict: Replay
    outcomes: list[Outcome]               # distinct, earliest first; the strict one among them
    ties: int                             # arrivals of the strict run within the window of a tick
    decisive: int                         # reachable outcomes other than the latest: ties that decide the block
    complex_ties: int
    incomplete: bool = False
    runs: int = 0
    cut: float | None = None              # where the worm's log ended, when its schedule was continued

    @property
    def earliest(self) -> Outcome:
        return self.outcomes[0]

    @property
    def latest(self) -> Outcome:
        return self.outcomes[-1]

    @property
    def strict_outcome(self) -> Outcome:
        return _outcome(self.strict, self.src, self.cut)


def _out_at(rp: Replay, src: str, cut: float | None, blocked_at: float | None) -> int | None:
    """Attempts of `src` out (passed or released) by `cut`, when the source is not blocked by then."""
    if cut is None or (blocked_at is not None and blocked_at <= cut):
        return None
    ids = set()
    for e in rp.events:
        if e.src == src and e.t <= cut and e.event in ("passed", "released"):
            ident = e.ref.identity() if isinstance(e.ref, Arrival) else None
            ids.add(ident if ident is not None else id(e))
    return len(ids)


def _outcome(rp: Replay, src: str, cut: float | None = None) -> Outcome:
    sr = rp.sources.get(src)
    if sr is None:
        return Outcome(None, 0, 0)
    return Outcome(sr.blocked_at, sr.out_before_block, sr.packets_out_before_block,
                   _out_at(rp, src, cut, sr.blocked_at))


def _branches(run, prefer: str, leaves: int) -> tuple[list[Replay], bool]:
    """Every run of one extreme: the complex ties' orders followed depth first (each leaf once)."""
    done: list[Replay] = []
    stack: list[tuple[int, ...]] = [()]
    while stack and len(done) < leaves:
        choices = stack.pop()
        rp = run(prefer, choices)
        done.append(rp)
        for j in range(rp.complex_ties - 1, len(choices) - 1, -1):
            stack.append(choices + (0,) * (j - len(choices)) + (1,))
    return done, bool(stack) or any(rp.unexplored for rp in done)


def orderings(arrivals: Iterable[Arrival], config: ThrottleConfig | None = None, *, src: str, window_s: float,
              placement: str = "gateway", more: WormSchedule | None = None, leaves: int = LEAVES) -> OrderingSet:
    """The strict replay of `arrivals` (and `more`, the worm's schedule after them) and the set of outcomes
    for `src` that every ordering of its ties within `window_s` allows."""
    arrivals = list(arrivals)

    def run(prefer: str, choices: tuple[int, ...] = ()) -> Replay:
        return replay(arrivals, config, placement=placement, ties=Ties(window_s, prefer, choices), more=more)

    strict = run("exact")
    early, incomplete_e = _branches(run, "arrival", leaves) if window_s > 0 else ([], False)
    late, incomplete_l = _branches(run, "release", leaves) if window_s > 0 else ([], False)
    cut = more.cut if more is not None else None
    found = [_outcome(rp, src, cut) for rp in (strict, *early, *late)]
    for rp in late:
        found += [Outcome(t.alternative["blocked_at"], t.alternative["out_before_block"],
                          t.alternative["packets_out_before_block"],
                          _out_at(rp, src, cut, t.alternative["blocked_at"]))
                  for t in rp.ties if t.src == src and t.alternative]
    outcomes: list[Outcome] = []
    for o in sorted(found, key=lambda o: (*o.key, o.packets_out_before_block)):
        p = outcomes[-1] if outcomes else None     # one outcome: the same block within the window, as many out
        if p is None or p.out_before_block != o.out_before_block or (p.blocked_at is None) != (o.blocked_at is None) \
                or (o.blocked_at is not None and p.blocked_at is not None and o.blocked_at - p.blocked_at > window_s):
            outcomes.append(o)
    return OrderingSet(src, window_s, strict, outcomes, sum(1 for t in strict.ties if t.src == src),
                       len(outcomes) - 1, max((rp.complex_ties for rp in (*early, *late)), default=0),
                       incomplete_e or incomplete_l, 1 + len(early) + len(late), cut)

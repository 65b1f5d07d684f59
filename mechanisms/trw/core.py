"""Threshold Random Walk (Jung, Paxson, Berger & Balakrishnan, IEEE S&P 2004): pure, no I/O.

Per source, a sequential hypothesis test over the outcomes of its *first contacts* (the first connection
attempt to each destination it has not tried before). H1 "scanner" makes a first contact succeed with
probability theta1, H0 "benign" with theta0. Each outcome multiplies the likelihood ratio
Λ = P(Y | H1) / P(Y | H0) by theta1/theta0 (success) or (1 − theta1)/(1 − theta0) (failure); the walk is kept
as ln Λ. Λ ≥ β/α: the source is a scanner and is blocked (every later new connection is dropped until a reset).
Λ ≤ (1 − β)/(1 − α): the source is declared benign and its walk restarts at Λ = 1 (the paper stops testing a
benign host; restarting keeps a host that turns into a scanner later in view).

Outcomes: `established` (SYN-ACK) is a success; `reset` (RST), `unreachable` (ICMP destination unreachable)
and `timeout` (no answer within `timeout_s` of the first SYN) are failures. Repeated SYNs to a destination
already tried (retransmissions, or new connections to a known host) pass and are not observations.

The daemon and the model drive this one class, so measured and predicted differ only by what each saw.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

SUCCESS = "established"
FAILURES = ("reset", "unreachable", "timeout")
OUTCOMES = (SUCCESS, *FAILURES)


class TrwError(Exception):
    """Base of TRW's own errors: the message is meant for a user, no traceback needed."""


class ConfigError(TrwError, ValueError):
    """An invalid TRW parameter."""


def _prob(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1:
        raise ConfigError(f"{name} must be a number strictly between 0 and 1, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class TrwConfig:
    theta0: float = 0.8         # P(first contact succeeds | benign)
    theta1: float = 0.2         # P(first contact succeeds | scanner)
    alpha: float = 0.01         # target false-positive probability
    beta: float = 0.99          # target detection probability
    timeout_s: float = 3.0      # an unanswered first contact is a failure this long after its first SYN

    def __post_init__(self) -> None:
        for k in ("theta0", "theta1", "alpha", "beta"):
            object.__setattr__(self, k, _prob(k, getattr(self, k)))
        if self.theta1 >= self.theta0:
            raise ConfigError(f"theta1 must be below theta0 (a scanner fails more often), got theta0 "
                              f"{self.theta0:g}, theta1 {self.theta1:g}")
        if self.alpha >= self.beta:
            raise ConfigError(f"alpha must be below beta, got alpha {self.alpha:g}, beta {self.beta:g}")
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ConfigError(f"timeout_s must be a finite number > 0, got {t!r}")

    @property
    def upper(self) -> float:
        """ln η1 = ln(β/α): at or above it, block."""
        return math.log(self.beta / self.alpha)

    @property
    def lower(self) -> float:
        """ln η0 = ln((1 − β)/(1 − α)): at or below it, benign (restart)."""
        return math.log((1 - self.beta) / (1 - self.alpha))

    @property
    def step_failure(self) -> float:
        return math.log((1 - self.theta1) / (1 - self.theta0))

    @property
    def step_success(self) -> float:
        return math.log(self.theta1 / self.theta0)

    def failures_to_block(self) -> int:
        """Consecutive failures from Λ = 1 that block: ⌈ln(β/α) / ln((1−θ1)/(1−θ0))⌉ (4 with the defaults)."""
        return max(1, math.ceil(self.upper / self.step_failure - 1e-12))

    def to_dict(self) -> dict[str, Any]:
        return {"theta0": self.theta0, "theta1": self.theta1, "alpha": self.alpha, "beta": self.beta,
                "timeout_s": self.timeout_s, "upper": self.upper, "lower": self.lower,
                "failures_to_block": self.failures_to_block()}


@dataclass(slots=True)
class Event:
    """One decision. event: `passed` (reason `first-contact` | `known` | `pending`), `dropped` (reason
    `blocked`), `outcome` (reason = the outcome; `llr` = ln Λ after it), `blocked`, `benign`, `reset`."""

    event: str
    t: float
    src: str | None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None
    proto: str | None = "tcp"
    reason: str | None = None
    llr: float = 0.0
    ref: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "t": self.t, "src": self.src, "dst": self.dst, "sport": self.sport,
                "dport": self.dport, "proto": self.proto, "reason": self.reason, "llr": self.llr}


@dataclass
class Decision:
    verdict: str            # pass | drop
    events: list[Event]


class _Source:
    __slots__ = ("llr", "tried", "pending", "blocked", "blocked_at", "failures", "successes")

    def __init__(self) -> None:
        self.llr = 0.0
        self.tried: set[str] = set()
        self.pending: dict[str, tuple[float, int | None, int | None]] = {}   # dst -> (deadline, sport, dport)
        self.blocked = False
        self.blocked_at: float | None = None
        self.failures = 0
        self.successes = 0


class Trw:
    """TRW for any number of sources. Times must not go backwards; every call first times out the first
    contacts whose deadline passed (`advance`)."""

    def __init__(self, config: TrwConfig | None = None):
        self.config = config or TrwConfig()
        self._sources: dict[str, _Source] = {}
        self._heap: list[tuple[float, str, str]] = []
        self._now = -math.inf
        self.counts: dict[str, int] = {k: 0 for k in ("passed", "dropped", "outcome", "blocked", "benign",
                                                       "reset")}

    def _time(self, now: float) -> float:
        if now < self._now - 1e-9:
            raise ValueError(f"time went backwards: {now} < {self._now}")
        self._now = max(now, self._now)
        return self._now

    def _src(self, src: str) -> _Source:
        s = self._sources.get(src)
        if s is None:
            s = self._sources[src] = _Source()
        return s

    def _emit(self, out: list[Event], e: Event) -> None:
        self.counts[e.event] += 1
        out.append(e)

    def next_due(self) -> float | None:
        """The earliest first-contact deadline still pending, or None."""
        h = self._heap
        while h:
            t, src, dst = h[0]
            s = self._sources.get(src)
            if s is not None and not s.blocked and s.pending.get(dst, (None,))[0] == t:
                return t
            heapq.heappop(h)
        return None

    def advance(self, now: float) -> list[Event]:
        """Time out every first contact whose deadline is at or before `now` (in deadline order)."""
        now = self._time(now)
        out: list[Event] = []
        h = self._heap
        while h and h[0][0] <= now:
            t, src, dst = heapq.heappop(h)
            s = self._sources.get(src)
            if s is None or s.blocked or s.pending.get(dst, (None,))[0] != t:
                continue
            _, sport, dport = s.pending.pop(dst)
            self._observe(out, src, s, dst, sport, dport, "timeout", t)
        return out

    def syn(self, src: str, dst: str, sport: int | None = None, dport: int | None = None, now: float = 0.0,
            ref: Any = None) -> Decision:
        """A connection-opening SYN from `src` to `dst`: pass, or drop when `src` is blocked."""
        out = self.advance(now)
        now = self._now
        s = self._src(src)
        if s.blocked:
            self._emit(out, Event("dropped", now, src, dst, sport, dport, reason="blocked", llr=s.llr, ref=ref))
            return Decision("drop", out)
        if dst in s.pending:
            reason = "pending"
        elif dst in s.tried:
            reason = "known"
        else:
            reason = "first-contact"
            s.tried.add(dst)
            deadline = now + self.config.timeout_s
            s.pending[dst] = (deadline, sport, dport)
            heapq.heappush(self._heap, (deadline, src, dst))
        self._emit(out, Event("passed", now, src, dst, sport, dport, reason=reason, llr=s.llr, ref=ref))
        return Decision("pass", out)

    def answer(self, src: str, dst: str, outcome: str, now: float, sport: int | None = None,
               dport: int | None = None) -> list[Event]:
        """An answer to `src`'s connection to `dst` (`established`, `reset` or `unreachable`). Only the first
        answer to a pending first contact is an observation; any other answer is ignored (no event)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; known: {', '.join(OUTCOMES)}")
        out = self.advance(now)
        s = self._sources.get(src)
        if s is None or s.blocked or dst not in s.pending:
            return out
        _, sp, dp = s.pending.pop(dst)
        self._observe(out, src, s, dst, sp if sport is None else sport, dp if dport is None else dport,
                      outcome, self._now)
        return out

    def _observe(self, out: list[Event], src: str, s: _Source, dst: str, sport: int | None, dport: int | None,
                 outcome: str, t: float) -> None:
        c = self.config
        if outcome == SUCCESS:
            s.llr += c.step_success
            s.successes += 1
        else:
            s.llr += c.step_failure
            s.failures += 1
        self._emit(out, Event("outcome", t, src, dst, sport, dport, reason=outcome, llr=s.llr))
        if s.llr >= c.upper - 1e-12:
            s.blocked, s.blocked_at = True, t
            s.pending.clear()
            self._emit(out, Event("blocked", t, src, dst, sport, dport, reason="threshold", llr=s.llr))
        elif s.llr <= c.lower + 1e-12:
            self._emit(out, Event("benign", t, src, dst, sport, dport, reason="threshold", llr=s.llr))
            s.llr = 0.0

    def reset(self, src: str | None = None, now: float = 0.0) -> list[Event]:
        """Forget one source (or all): unblocked, walk at Λ = 1, nothing tried."""
        now = self._time(now)
        if src is None:
            self._sources.clear()
            self._heap.clear()
        else:
            self._sources.pop(src, None)
        out: list[Event] = []
        self._emit(out, Event("reset", now, src))
        return out

    def blocked(self, src: str) -> bool:
        s = self._sources.get(src)
        return bool(s and s.blocked)

    def status(self) -> dict[str, dict[str, Any]]:
        return {src: {"llr": s.llr, "blocked": s.blocked, "blocked_at": s.blocked_at, "failures": s.failures,
                      "successes": s.successes, "tried": len(s.tried), "pending": len(s.pending)}
                for src, s in self._sources.items()}

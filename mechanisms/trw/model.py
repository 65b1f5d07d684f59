"""TRW's model: the worm's own attempt log (outcome and time of each attempt) replayed through the same core.

Each logged attempt is a SYN at its `t_mono`; its outcome is an answer at `t_done_mono` — `connected` an
`established`, `refused` a `reset`, `unreachable` an `unreachable` — and a `timeout` is no answer (the core
times the first contact out `timeout_s` after its SYN, as the daemon does). Nothing is taken from the daemon's
log, so the daemon and the model can disagree. Pure: stdlib and the worm-log reader of `throttle.model`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from throttle.model import WormLog, read_worm_log

from .core import ConfigError, Trw, TrwConfig

ANSWER_OF = {"connected": "established", "refused": "reset", "unreachable": "unreachable"}


@dataclass
class SourcePrediction:
    first_attempt: float                 # t_mono of the source's first attempt
    blocked_at: float | None = None      # when the outcome that crossed β/α came in (None: never blocked)
    block_attempt: int | None = None     # index (0-based, in the source's attempts) whose outcome blocked
    out_before_block: int = 0            # attempts whose SYN left before the block (all, when never blocked)
    sent: list[float] = field(default_factory=list)   # t_mono of every SYN that passed, in order
    attempts: int = 0                    # attempts in the log
    failures: int = 0
    successes: int = 0
    walk: list[tuple[float, float]] = field(default_factory=list)   # (t, ln Λ) after every observation

    @property
    def stop_s(self) -> float | None:
        return None if self.blocked_at is None else self.blocked_at - self.first_attempt

    @property
    def last_out_s(self) -> float | None:
        """The last SYN out before the block, after the first attempt (what the wire's contained_s measures)."""
        return None if self.blocked_at is None or not self.sent else self.sent[-1] - self.first_attempt

    def to_dict(self) -> dict[str, Any]:
        return {"first_attempt": self.first_attempt, "blocked_at": self.blocked_at, "stop_s": self.stop_s,
                "last_out_s": self.last_out_s,
                "block_attempt": self.block_attempt, "out_before_block": self.out_before_block,
                "attempts": self.attempts, "failures": self.failures, "successes": self.successes}


@dataclass
class Replay:
    sources: dict[str, SourcePrediction]
    events: list


def replay_attempts(attempts: Iterable[Mapping[str, Any]], config: TrwConfig | None = None, *,
                    early_answers: bool = False) -> Replay:
    """Replay attempt records (`t_mono`, `src`, `dst`, optional `t_done_mono`, `outcome`, `sport`, `dport`).

    `early_answers`: every answer reaches the test as soon as its own SYN has left (at its `t_mono`) instead of
    when the worm logged it (`t_done_mono`) — the other end of the window in which the daemon may see it."""
    cfg = config or TrwConfig()
    core = Trw(cfg)
    heap: list[tuple[float, int, int, str, dict]] = []   # (t, seq, kind: 0 syn, 1 answer, what, attempt)
    per_src: dict[str, int] = {}
    srcs: dict[str, SourcePrediction] = {}
    for seq, a in enumerate(sorted(attempts, key=lambda a: a["t_mono"])):
        a = dict(a)
        src = a["src"]
        a["_n"] = per_src.get(src, 0)
        per_src[src] = a["_n"] + 1
        if src not in srcs:
            srcs[src] = SourcePrediction(first_attempt=float(a["t_mono"]))
        srcs[src].attempts += 1
        heapq.heappush(heap, (float(a["t_mono"]), seq, 0, "syn", a))
        answer = ANSWER_OF.get(a.get("outcome", "timeout"))
        done = a.get("t_done_mono")
        if answer is not None and isinstance(done, (int, float)) and not a.get("aborted"):
            at = float(a["t_mono"]) if early_answers else max(float(done), float(a["t_mono"]))
            heapq.heappush(heap, (at, seq, 1, answer, a))
    by_dst: dict[tuple[str, str], dict] = {}
    events: list = []

    def note(evs: list) -> None:
        for e in evs:
            events.append(e)
            sp = srcs.get(e.src)
            if sp is None:
                continue
            if e.event == "outcome":
                sp.walk.append((e.t, e.llr))
                if e.reason == "established":
                    sp.successes += 1
                else:
                    sp.failures += 1
            elif e.event == "blocked":
                sp.blocked_at = e.t
                a = by_dst.get((e.src, e.dst))
                sp.block_attempt = None if a is None else a["_n"]

    while heap:
        t, _, kind, what, a = heapq.heappop(heap)
        src, dst = a["src"], a["dst"]
        if kind == 0:
            d = core.syn(src, dst, a.get("sport"), a.get("dport"), t)
            if d.verdict == "pass":
                srcs[src].out_before_block += 1
                srcs[src].sent.append(t)
                if (src, dst) not in by_dst:
                    by_dst[(src, dst)] = a
            note(d.events)
        else:
            note(core.answer(src, dst, what, t))
    # time out what is still pending at the end of the log (the daemon would, timeout_s after each SYN)
    due = core.next_due()
    bound = 0
    while due is not None and bound < 1_000_000:
        note(core.advance(due))
        due = core.next_due()
        bound += 1
    return Replay(sources=srcs, events=events)


def replay_worm_log(source: WormLog | Iterable[str | Mapping[str, Any]],
                    config: TrwConfig | None = None, *, early_answers: bool = False) -> Replay:
    """The worm log (a WormLog, or lines/dicts as read from `worm.jsonl`) through the test."""
    wl = source if isinstance(source, WormLog) else read_worm_log(source)
    return replay_attempts(wl.attempts, config, early_answers=early_answers)


def tie_outcomes(late: SourcePrediction, early: SourcePrediction | None) -> dict[str, Any]:
    """The outcomes the answer-time window allows, between the logged order (`late`: every answer when the
    worm logged it — the most attempts out, since the daemon sees an answer before the worm's socket does)
    and `early` (every answer at its own SYN — the fewest). Each allowed count n of attempts out comes with
    the time of the n-th SYN (the wire's last one): the range is [out_lo, out_hi], never anything else."""
    cands: list[dict[str, Any]] = []
    if late.blocked_at is not None and early is not None and early.blocked_at is not None:
        lo, hi = sorted((early.out_before_block, late.out_before_block))
        sent = late.sent if len(late.sent) >= len(early.sent) else early.sent
        cands = [{"blocked": True, "out_before_block": n, "last_out_s": sent[n - 1] - late.first_attempt}
                 for n in range(max(lo, 1), hi + 1) if n <= len(sent)]
        if lo == 0:
            cands.insert(0, {"blocked": True, "out_before_block": 0, "last_out_s": 0.0})
    else:
        for sp in (late, early):
            if sp is None:
                continue
            c = {"blocked": sp.blocked_at is not None,
                 "out_before_block": sp.out_before_block if sp.blocked_at is not None else sp.attempts,
                 "last_out_s": sp.last_out_s}
            if c not in cands:
                cands.append(c)
    outs = [c["out_before_block"] for c in cands]
    return {"out_lo": min(outs), "out_hi": max(outs), "ties": max(outs) - min(outs), "outcomes": cands}


@dataclass(frozen=True)
class Prediction:
    stop_s: float | None
    out_before_block: int
    block_attempt: int | None
    attempts: int


def predict_constant_rate(rate: float, *, answer: str = "reset", rtt_s: float = 0.0,
                          config: TrwConfig | None = None, max_attempts: int = 10_000) -> Prediction:
    """A worm at `rate` new destinations per second whose every first contact is answered `answer`
    (`reset`, `unreachable`, `established`) after `rtt_s`, or never (`timeout`)."""
    if not (isinstance(rate, (int, float)) and 0 < rate < 1e6):
        raise ConfigError(f"rate must be a number in (0, 1e6), got {rate!r}")
    if answer not in ("reset", "unreachable", "established", "timeout"):
        raise ConfigError(f"unknown answer {answer!r}; known: reset, unreachable, established, timeout")
    if not 0 <= rtt_s < 60:
        raise ConfigError(f"rtt_s must be in [0, 60), got {rtt_s!r}")
    outcome = {"reset": "refused", "unreachable": "unreachable", "established": "connected",
               "timeout": "timeout"}[answer]
    atts = [{"t_mono": i / rate, "src": "198.18.0.2", "dst": f"198.19.{i // 256 % 256}.{i % 256}",
             "sport": 40000 + i % 20000, "dport": 8080, "outcome": outcome, "t_done_mono": i / rate + rtt_s}
            for i in range(max_attempts)]
    sp = replay_attempts(atts, config).sources["198.18.0.2"]
    return Prediction(sp.stop_s, sp.out_before_block if sp.blocked_at is not None else sp.attempts,
                      sp.block_attempt, sp.attempts)


def predict(worm_log: Iterable[str | Mapping[str, Any]], params: Mapping[str, Any], *,
            placement: str = "host") -> dict[str, dict[str, Any]]:
    """The registry's model shape: per source blocked, stop_s (the block), last_out_s (the last SYN out before
    it), out_before_block, wire_rate (None), the attempt whose outcome blocked (`block_attempt`, 0-based) — all
    for the logged order — and `ties`: the outcomes the answer-time window allows (`tie_outcomes`)."""
    wl = read_worm_log(worm_log)
    cfg = TrwConfig(**params)
    rep = replay_worm_log(wl, cfg)
    early = replay_worm_log(wl, cfg, early_answers=True).sources
    return {src: {"blocked": sp.blocked_at is not None, "stop_s": sp.stop_s, "last_out_s": sp.last_out_s,
                  "out_before_block": sp.out_before_block, "wire_rate": None, "block_attempt": sp.block_attempt,
                  "ties": tie_outcomes(sp, early.get(src))} for src, sp in rep.sources.items()}

"""Which trials go where: a sweep's trials packed longest first onto K lab instances (`--parallel`) or N
machines (`--shard I/N`), by the model's expected wall time of each trial (runner.estimate_s). Pure.

Packing is the longest-processing-time rule: trials in order of expected time, longest first (ties by plan
index), each onto the bin with the least expected work so far (ties: the lowest bin). It depends only on the
plan and the estimates, so every machine given the same experiment file, code and overrides computes the
same shards; a trial keeps its plan index — and so its seed (seed + index) — whichever shard runs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from orchestrator.errors import UsageError
from orchestrator.experiment.record import TrialSpec

T = TypeVar("T")

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
MAX_SHARDS = 1000


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` (1 ≤ I ≤ N) → (I, N); anything else is a usage error that says what is wanted."""
    m = _SHARD.fullmatch(text or "")
    if not m:
        raise UsageError(f"--shard takes I/N (this machine's share I of N, e.g. 2/4), not {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if not 1 <= n <= MAX_SHARDS:
        raise UsageError(f"--shard {text}: the shard count N must be 1 to {MAX_SHARDS}")
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text}: I must be 1 to {n} (shards are numbered from 1)")
    return i, n


def longest_first(items: Sequence[T], weight: Callable[[T], float]) -> list[T]:
    """The items by expected time, longest first; equal ones keep their order (a stable sort)."""
    return sorted(items, key=lambda x: -weight(x))


def pack(items: Sequence[T], weight: Callable[[T], float], bins: int) -> list[list[T]]:
    """`items` on `bins` bins, longest first onto the least loaded bin (LPT). Each bin lists its items
    longest first, the order they would run in."""
    if bins < 1:
        raise ValueError("pack needs at least one bin")
    out: list[list[T]] = [[] for _ in range(bins)]
    load = [0.0] * bins
    for x in longest_first(items, weight):
        b = min(range(bins), key=lambda k: (load[k], k))
        out[b].append(x)
        load[b] += weight(x)
    return out


def makespan(items: Sequence[T], weight: Callable[[T], float], bins: int) -> float:
    """The expected wall time of `items` packed on `bins` bins: the most loaded bin's sum."""
    return max((sum(weight(x) for x in b) for b in pack(items, weight, bins)), default=0.0)


def shard_of(plan: Sequence[TrialSpec], weight: Callable[[TrialSpec], float], shard: tuple[int, int]) -> list[TrialSpec]:
    """Shard I of N of a plan: its trials in plan order (so its trials.jsonl reads like the whole run's)."""
    i, n = shard
    mine = {t.index for t in pack(plan, weight, n)[i - 1]}
    return [t for t in plan if t.index in mine]

"""The spread model (issue 16): a seeded Monte Carlo of the test worm's epidemic over the same parameters as a
trial — scan rate, scan range size, vulnerable hosts, which carry the mechanism — giving the expected curve
and its 5–95 % band. Pure: no I/O.

What it assumes (docs/spread.md says where it is exact and where it approximates):
- each infected host scans the range in its own uniformly random order, every address once (the worm's
  `random` strategy is a seeded permutation: without replacement, its own address excluded) — exact in law;
- its k-th attempt leaves at k / rate after its scanner starts (`start_delay_s` after the trigger it took),
  within its max_attempts and lifetime; a vulnerable host reached by an attempt that leaves is infected at
  once (the answer and the trigger's round trip are folded into start_delay_s) — an approximation;
- a host carrying the williamson throttle: its attempts leave when throttle.model's constant-rate simulation
  says (from a fresh working set, the worm's connect timeout: a SYN released after its attempt timed out
  infects no one), and none after it is blocked — the throttle's own model, exact for a constant rate;
- `gateway`: a host's attempts to other subnets pass the gateway's per-source throttle as a stream of
  rate × (the share of the range outside its subnet); a target's place in that stream is its place in the
  scan times that share — an approximation (the real stream is a random thinning);
- the generation bound: a host infected at the bound infects no one (earliest infections first: a later
  infection of lower generation is not explored — immaterial while the bound exceeds the spread's depth).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from orchestrator.analysis.infections import epidemic

QUANTILES = (5, 50, 95)
FIGURES = ("t_first_s", "t_50_s", "t_90_s", "t_all_s")


@dataclass(frozen=True)
class SpreadParams:
    hosts: int                         # vulnerable hosts (the initial one is index `initial`)
    range_size: int                    # addresses in the scan range
    rate: float                        # each infected host's attempts per second
    carriers: int = 0                  # hosts carrying the mechanism in the host (a uniform draw per replicate)
    gateway: bool = False              # the mechanism on the gateway instead
    subnets: tuple[int, ...] = ()      # each host's subnet (gateway; default: all on one)
    cross_share: tuple[float, ...] = ()    # each host's share of the range outside its own subnet (gateway)
    throttle: tuple[tuple[str, Any], ...] = ()   # williamson's parameters (ThrottleConfig keys)
    initial: int = 0
    max_attempts: int = 5000
    lifetime_s: float = 120.0
    connect_timeout_s: float = 3.0
    max_generations: int = 15
    start_delay_s: float = 0.15
    horizon_s: float = 600.0


@dataclass
class SpreadPrediction:
    params: SpreadParams
    replicates: int
    seed: int
    figures: dict[str, dict[str, float | None]]     # figure → {p5, p50, p95, mean, reached}
    grid: list[float] = field(default_factory=list)
    band: dict[str, list[float]] = field(default_factory=dict)    # p5, p50, p95, mean of infected on grid

    def inside(self, figure: str, value: float | None) -> bool:
        """Does a trial's figure (None: never reached) lie inside the model's 5–95 % band?"""
        f = self.figures[figure]
        v = math.inf if value is None else value
        lo = math.inf if f["p5"] is None else f["p5"]
        hi = math.inf if f["p95"] is None else f["p95"]
        return lo <= v <= hi

    def to_dict(self, curve: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"replicates": self.replicates, "seed": self.seed, "figures": self.figures,
                             "params": {k: v for k, v in self.params.__dict__.items() if k not in ("subnets",
                                                                                                   "cross_share")}}
        if curve:
            d |= {"grid": self.grid, "band": self.band}
        return d


def unthrottled_out(p: SpreadParams) -> np.ndarray:
    """When each attempt of an unthrottled scanner leaves (seconds after its start), up to its bounds."""
    n = min(p.max_attempts, p.range_size, math.ceil(p.lifetime_s * p.rate))
    return np.arange(n, dtype=float) / p.rate


@lru_cache(maxsize=64)
def throttled_out(rate: float, throttle: tuple[tuple[str, Any], ...], n: int, connect_timeout_s: float,
                  horizon_s: float) -> tuple[float, ...]:
    """When each of the first n attempts of a throttled scanner leaves while still open (inf: never), from
    williamson's own constant-rate model (a fresh working set, the throttle in the host)."""
    from throttle.core import ThrottleConfig
    from throttle.model import predict_constant_rate

    out = [math.inf] * n

    def seen(i: int, t: float) -> None:
        if i < n and t < out[i]:
            out[i] = t
    predict_constant_rate(rate, protocol="tcp", config=ThrottleConfig(**dict(throttle)), initial_working_set=0,
                          placement="host", connect_timeout_s=connect_timeout_s, horizon_s=horizon_s,
                          max_attempts=n, on_out=seen)
    return tuple(out)


class _Spread:
    """One replicate's machinery: when host i's attempt at scan position k reaches host j."""

    def __init__(self, p: SpreadParams):
        self.p = p
        self.free = unthrottled_out(p)
        self.held: np.ndarray | None = None
        self.cross: dict[int, np.ndarray] = {}
        if p.carriers:
            self.held = np.asarray(throttled_out(p.rate, p.throttle, len(self.free), p.connect_timeout_s,
                                                 p.horizon_s))
        if p.gateway:
            for share in set(p.cross_share):
                if share > 0:
                    m = max(1, math.ceil(len(self.free) * share))
                    self.cross[_key(share)] = np.asarray(throttled_out(p.rate * share, p.throttle, m,
                                                                       p.connect_timeout_s, p.horizon_s))

    def delays(self, i: int, targets: np.ndarray, pos: np.ndarray, carried: np.ndarray) -> np.ndarray:
        """Seconds from host i's infection to each target's, by its position in i's scan (inf: never)."""
        p = self.p
        table = self.held if carried[i] and self.held is not None else self.free
        out = np.full(len(pos), math.inf)
        ok = pos < len(table)
        out[ok] = table[pos[ok]]
        if p.gateway and p.cross_share:
            share = p.cross_share[i]
            away = np.asarray([p.subnets[j] != p.subnets[i] for j in targets], dtype=bool)
            if share > 0 and away.any():
                stream = self.cross[_key(share)]
                idx = np.floor(pos[away] * share).astype(int)
                got = np.full(len(idx), math.inf)
                inside = idx < len(stream)
                got[inside] = stream[idx[inside]]
                out[away] = np.maximum(out[away], got)
        return out + p.start_delay_s


def _key(share: float) -> int:
    return round(share * 1e6)


def one_spread(p: SpreadParams, rng: np.random.Generator) -> np.ndarray:
    """One replicate: each host's infection time (inf: never), the initial host's 0."""
    sim = _Spread(p)
    return _run(p, sim, rng)


def _run(p: SpreadParams, sim: _Spread, rng: np.random.Generator) -> np.ndarray:
    v = p.hosts
    carried = np.zeros(v, dtype=bool)
    if p.carriers:
        carried[rng.choice(v, size=min(p.carriers, v), replace=False)] = True
    times = np.full(v, math.inf)
    best = np.full(v, math.inf)
    best[p.initial] = 0.0
    heap: list[tuple[float, int, int]] = [(0.0, p.initial, 0)]
    while heap:
        t, j, g = heapq.heappop(heap)
        if math.isfinite(times[j]) or t > p.horizon_s:
            continue
        times[j] = t
        if g >= p.max_generations:
            continue
        targets = np.flatnonzero(~np.isfinite(times))
        if not targets.size:
            break
        # the places of every other vulnerable host in j's scan order (its own address holds one more)
        pos_all = rng.choice(p.range_size, size=v, replace=False)[: v - 1]
        order = np.delete(np.arange(v), j)
        pos = pos_all[np.searchsorted(order, targets)]
        cand = t + sim.delays(j, targets, pos, carried)
        better = cand < best[targets]
        for k, c in zip(targets[better], cand[better], strict=True):
            best[k] = c
            heapq.heappush(heap, (float(c), int(k), g + 1))
    return times


def predict_spread(p: SpreadParams, *, replicates: int = 200, seed: int = 1, grid_points: int = 121) -> SpreadPrediction:
    """The model's figures over `replicates` seeded replicates: each figure's 5/50/95 % quantiles (None where
    fewer replicates reach it than the quantile needs), its mean where reached, the share of replicates that
    reach it; and the curve of infected hosts on a time grid with its band."""
    if p.hosts < 2 or p.range_size < p.hosts:
        raise ValueError(f"a spread needs ≥ 2 vulnerable hosts inside a range at least as large ({p.hosts}, "
                         f"{p.range_size})")
    rng = np.random.default_rng(seed)
    sim = _Spread(p)
    runs = [_run(p, sim, rng) for _ in range(replicates)]
    per = [epidemic(list(r), p.hosts) for r in runs]
    figures: dict[str, dict[str, float | None]] = {}
    for key in (*FIGURES, "infected_final"):
        vals = np.asarray([math.inf if d[key] is None else d[key] for d in per], dtype=float)
        figures[key] = _quantiles(vals)
    finite = np.concatenate([r[np.isfinite(r)] for r in runs])
    end = float(finite.max()) if finite.size else 1.0
    grid = list(np.round(np.linspace(0.0, max(end, 1e-3) * 1.05, grid_points), 4))
    curves = np.asarray([np.searchsorted(np.sort(r[np.isfinite(r)]), grid, side="right") for r in runs])
    band = {f"p{q}": [float(x) for x in np.percentile(curves, q, axis=0)] for q in QUANTILES}
    band["mean"] = [round(float(x), 3) for x in curves.mean(axis=0)]
    return SpreadPrediction(p, replicates, seed, figures, [float(g) for g in grid], band)


def _quantiles(vals: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in QUANTILES:
        x = float(np.percentile(vals, q, method="inverted_cdf"))
        out[f"p{q}"] = round(x, 4) if math.isfinite(x) else None
    fin = vals[np.isfinite(vals)]
    out["mean"] = round(float(fin.mean()), 4) if fin.size else None
    out["reached"] = round(float(fin.size) / len(vals), 4)
    return out


def share_outside(host_subnet: str, scan: str) -> float:
    """The share of the scan range outside a host's own subnet (what crosses the gateway)."""
    import ipaddress

    s, h = ipaddress.IPv4Network(scan), ipaddress.IPv4Network(host_subnet)
    inside = s.num_addresses if s.subnet_of(h) else (h.num_addresses if h.subnet_of(s) else 0)
    return 1.0 - inside / s.num_addresses


def figures_row(pred: SpreadPrediction, keys: Sequence[str] = FIGURES) -> dict[str, float | None]:
    """The model's median figures, as a table shows them beside a trial's."""
    return {f"model_{k}": pred.figures[k]["p50"] for k in keys}

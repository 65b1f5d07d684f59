"""What the paper published, beside every row of a run it covers, and the statistics a paper needs (95 %
confidence intervals of the mean over the repeats). Pure: no I/O, no plotting.

Twycross & Williamson 2003, §4.2.1 and Table 1 (as the excerpt in shared/reference states them): the throttle
stopped Nimda (~200 connections/s) in 0.25 s with one packet out; "under 5 seconds" any application scanning
at 20 connections/s or more; at most 5 packets out for the test worm at 20/s. The UDP (SQL Slammer) figures
are in the paper's Table 1 but not in the excerpt, so no UDP row is given one.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

# two-sided 95 % Student t critical values by degrees of freedom (1 … 30); 1.96 beyond
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
        2.042]


@dataclass(frozen=True)
class PaperFigure:
    stop: str                    # as the paper says it: "< 5 s", "0.25 s"
    stop_bound_s: float          # the figure as a number (an upper bound for "< 5 s")
    upper_bound: bool
    out: str | None = None       # attempts out, where the paper gives them
    out_max: int | None = None
    source: str = ""


NIMDA = PaperFigure("0.25 s", 0.25, False, "1 packet", 1,
                    "Nimda (W32/Nimda-D) at ~200 connections/s; 100 queue entries in 0.25 s imply ~400 attempts/s "
                    "on the wire (retransmissions counted)")
TEST_WORM_20 = PaperFigure("< 5 s", 5.0, True, "≤ 5 packets", 5, "the paper's test worm at 20 connections/s")
TEST_WORM_FAST = PaperFigure("< 5 s", 5.0, True, None, None,
                             "the paper: under 5 s for anything scanning at 20 connections/s or more")


def paper_for(profile: str | None, protocol: str, rate: float) -> PaperFigure | None:
    """The paper's figure for a row of the run, where the paper covers it (TCP; the test worm at ≥ 20/s)."""
    if protocol != "tcp":
        return None
    if profile == "nimda-like":
        return NIMDA
    if profile is None and abs(rate - 20) < 1e-9:
        return TEST_WORM_20
    if profile is None and rate >= 20:
        return TEST_WORM_FAST
    return None


def paper_cell(fig: PaperFigure | None) -> str:
    if fig is None:
        return ""
    return fig.stop + (f", {fig.out}" if fig.out else "")


def within_paper(fig: PaperFigure, stop_s: float | None, out: float | None) -> bool | None:
    """Whether a measured row keeps to the paper's figure (None when it measured no stopping time)."""
    if stop_s is None:
        return None
    ok = stop_s < fig.stop_bound_s if fig.upper_bound else abs(stop_s - fig.stop_bound_s) <= 0.1 * fig.stop_bound_s
    if fig.out_max is not None and out is not None:
        ok = ok and out <= fig.out_max
    return ok


def ci95(values: list[float]) -> tuple[float, float] | None:
    """The 95 % confidence interval of the mean (Student t), or None with fewer than two values."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if len(xs) < 2:
        return None
    m = statistics.fmean(xs)
    half = (_T95[len(xs) - 2] if len(xs) - 1 <= len(_T95) else 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))
    return m - half, m + half


def row_values(trials: list[dict[str, Any]], protocol: str, rate: float, key: str) -> list[float]:
    """A measured figure of every trial of one row that measured something (ok or timeout)."""
    return [t["measured"][key] for t in trials
            if t["protocol"] == protocol and abs(float(t["rate"]) - rate) < 1e-9
            and t.get("status") in ("ok", "timeout") and (t.get("measured") or {}).get(key) is not None]

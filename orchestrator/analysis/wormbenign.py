"""Benign traffic beside the worm (issue 17), pure: the host's benign connections split at the worm's first
attempt (before: the host's normal-use cost; after: the cost during the attack), and the williamson model of
the two together — the benign schedule and the worm's attempts from one source through one throttle core
(throttle.model.replay), since they share its working set and its delay queue — predicting the worm's block
and every benign connection's delay in the same replay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.analysis import benign as ab
from throttle.core import ThrottleConfig
from throttle.model import Arrival, arrivals_from_worm_log, read_worm_log, replay, schedule_after_log

KEYS = ("working_set_size", "release_period_s", "delay_queue_limit", "policy")
BENIGN, WORM = "benign", "worm"


def split(rows: Sequence[dict], first_worm_wall: float | None) -> tuple[list[dict], list[dict]]:
    """The connections scheduled before the worm's first attempt, and those from it on (all before: no worm)."""
    if first_worm_wall is None:
        return list(rows), []
    before = [r for r in rows if r.get("due_wall") is not None and r["due_wall"] < first_worm_wall]
    ids = {id(r) for r in before}
    return before, [r for r in rows if id(r) not in ids]


def _tagged(arrivals: Iterable[Arrival], tag: str) -> list[Arrival]:
    return [dataclasses.replace(a, attempt=(tag, a.attempt)) for a in arrivals]


def combined_model(conns: Sequence[dict], worm_lines: Iterable[str | Mapping[str, Any]], params: Mapping[str, Any],
                   *, src: str, placement: str = "host", retransmit: str = "linux",
                   protocol: str = "tcp", targets=None) -> dict[str, Any]:
    """The williamson model of the benign schedule and the worm's logged attempts together (the worm followed
    past its log at its own rate until it is blocked, as the stopping-speed model does). Returns the worm's
    figures (`stop_s` from its first attempt, `out_before_block`: its attempts with a packet out before the
    block, `blocked`) and the benign connections' (`per_conn`, as analysis.benign.williamson_model has them).
    `targets`: the worm's own target generator past its log (agreement.worm_targets; default: new ones)."""
    cfg = ThrottleConfig(**{k: params[k] for k in KEYS if k in params})
    wl = read_worm_log(worm_lines)
    worm = [a for a in arrivals_from_worm_log(wl, retransmit if protocol == "tcp" else "none") if a.src == src]
    ben_att = ab._attempts(conns)
    ben = arrivals_from_worm_log(ben_att, retransmit)
    arrivals = sorted(_tagged(ben, BENIGN) + _tagged(worm, WORM), key=lambda a: (a.t, a.retransmit))
    out: dict[str, Any] = {"stop_s": None, "blocked": False, "out_before_block": 0, "per_conn": {},
                           "worm_arrivals": len(worm), "benign_arrivals": len(ben)}
    if not arrivals:
        return out
    more = schedule_after_log(wl, src=src, retransmit=retransmit, answered=True, targets=targets) if worm else None
    rep = replay(arrivals, cfg, placement=placement, more=more)
    t_worm = worm[0].t if worm else None
    due = {a["i"]: a["t_mono"] for a in ben_att}
    worm_out: set[Any] = set()
    per: dict[int, dict[str, Any]] = {i: {"wire_s": None, "fate": "held", "queued_behind": None} for i in due}
    for e in rep.events:
        a = e.ref
        if e.event == "blocked" and not out["blocked"]:
            out["blocked"] = True
            out["stop_s"] = None if t_worm is None else e.t - t_worm
            out["out_before_block"] = len(worm_out)
        if a is None:
            continue
        tag = a.attempt[0] if isinstance(a.attempt, tuple) and len(a.attempt) == 2 else WORM
        if tag == WORM:
            if e.event in ab.PASSED and not out["blocked"]:
                worm_out.add(a.attempt)
            continue
        p = per.get(a.attempt[1])
        if p is None or p["fate"] in ab.PASSED or p["fate"] == "dropped":
            continue
        if e.event == "queued" and p["queued_behind"] is None:
            p["queued_behind"] = e.queue_len - 1
        elif e.event in ab.PASSED:
            p["fate"], p["wire_s"] = e.event, e.t - due[a.attempt[1]]
        elif e.event in ("dropped", "blocked"):
            p["fate"] = "dropped"
    if not out["blocked"]:
        out["out_before_block"] = len(worm_out)
    out["per_conn"] = per
    return out


def figures(before: Sequence[dict], after: Sequence[dict], rate: float | None) -> dict[str, Any]:
    """The benign columns of a worm trial: the normal-use delays (before the worm), the p99 during the attack,
    the connections not ok over the whole session."""
    b = ab.summary(before, scheduled=None, blocks=[], period_s=None)
    a = ab.summary(after, scheduled=None, blocks=[], period_s=None)
    return {"benign_rate": rate, "benign_connections": len(before) + len(after), "benign_before": len(before),
            "benign_after": len(after), "benign_p50_s": b["delay_p50_s"], "benign_p99_s": b["delay_p99_s"],
            "benign_p99_attack_s": a["delay_p99_s"], "benign_dropped": b["dropped"] + a["dropped"]}


def model_figures(model: Mapping[str, Any], before: Sequence[dict], after: Sequence[dict]) -> dict[str, Any]:
    """The model's p99 over the same two groups of connections."""
    per = model["per_conn"]

    def p99(rows: Sequence[dict]) -> float | None:
        return ab.distribution_of({"per_conn": {r["i"]: per[r["i"]] for r in rows if r["i"] in per}})["p99"]
    return {"benign_p99_s_model": p99(before), "benign_p99_attack_s_model": p99(after)}


# ---- summary.csv columns of a run with benign traffic beside the worm (over trials.jsonl records)

COLUMNS = ["setting", "benign_rate", "benign_connections", "benign_p50_s", "benign_p99_s", "benign_p99_s_model",
           "benign_p99_attack_s", "benign_dropped", "benign_agree"]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def row_figures(done: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A summary row's benign columns: delays averaged over repeats, counts summed, agreement all-or-nothing."""
    m = [t.get("measured") or {} for t in done]
    mo = [t.get("model") or {} for t in done]

    def col(src, key):
        return [float(x[key]) for x in src if x.get(key) is not None]
    ag = [((t.get("agreement") or {}).get("benign") or {}).get("ok") for t in done]
    ag = [a for a in ag if a is not None]
    return {"benign_rate": _mean(col(m, "benign_rate")),
            "benign_connections": int(sum(col(m, "benign_connections"))) if m else None,
            "benign_p50_s": _mean(col(m, "benign_p50_s")), "benign_p99_s": _mean(col(m, "benign_p99_s")),
            "benign_p99_s_model": _mean(col(mo, "benign_p99_s_model")),
            "benign_p99_attack_s": _mean(col(m, "benign_p99_attack_s")),
            "benign_dropped": int(sum(col(m, "benign_dropped"))) if m else None,
            "benign_agree": all(ag) if ag else None}

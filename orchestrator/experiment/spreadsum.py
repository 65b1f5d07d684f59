"""summary.csv for spread runs: one row per (mechanism, deploy, rate), means over repeats with their spread
and the model's median t_50_s beside them. Pure."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

FIGURES = ("infected_final", "t_first_s", "t_50_s", "t_90_s", "t_all_s")
SPREAD_COLUMNS = ("mechanism", "deploy", "rate", "hosts", "infected_final", "t_first_s", "t_50_s", "t_90_s", "t_all_s",
                  "model_t_50_s", "agrees", "repeats", *(f"{k}_{s}" for k in FIGURES for s in ("sd", "min", "max")),
                  "model_t_50_p5", "model_t_50_p95", "model_t_all_s", "reached_all", "confirmed_on_wire",
                  "infections", "ok", "errors")


def is_spread(trials: list[dict[str, Any]]) -> bool:
    return any("deploy" in t for t in trials)


def summarise_spread(trials: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only trials that measured something (ok, timeout) give figures; a figure a trial never reached (the
    spread stopped first) is left out of its mean and counted by `reached_all` for t_all_s."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for t in trials:
        groups.setdefault((t.get("mechanism") or "", str(t.get("deploy")), float(t["rate"])), []).append(t)
    rows = []
    for (mech, deploy, rate), ts in groups.items():
        done = [t for t in ts if t.get("status") in ("ok", "timeout")]
        m = [t.get("measured") or {} for t in done]
        model = next((t.get("model") for t in done if t.get("model")), None) or {}
        row: dict[str, Any] = {"mechanism": mech or None, "protocol": "tcp", "deploy": deploy, "rate": rate,
                               "hosts": next((t.get("hosts") for t in ts if t.get("hosts")), None),
                               "repeats": len(ts), "ok": sum(1 for t in ts if t.get("status") == "ok"),
                               "errors": sum(1 for t in ts if t.get("status") == "error")}
        for k in FIGURES:
            xs = [float(x[k]) for x in m if x.get(k) is not None]
            row[k] = statistics.fmean(xs) if xs else None
            row[f"{k}_sd"] = statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)
            row[f"{k}_min"], row[f"{k}_max"] = (min(xs), max(xs)) if xs else (None, None)
        t50, tall = model.get("t_50_s") or {}, model.get("t_all_s") or {}
        row |= {"model_t_50_s": t50.get("p50"), "model_t_50_p5": t50.get("p5"), "model_t_50_p95": t50.get("p95"),
                "model_t_all_s": tall.get("p50"),
                "reached_all": sum(1 for x in m if x.get("t_all_s") is not None),
                "confirmed_on_wire": sum(int(x.get("confirmed_on_wire") or 0) for x in m),
                "infections": sum(int(x.get("infected_final") or 0) for x in m)}
        verdicts = [(t.get("agreement") or {}).get("ok") for t in done]
        row["agrees"] = f"{sum(1 for v in verdicts if v)}/{len(verdicts)}" if done else "0/0"
        row["agree"] = bool(done) and all(verdicts)
        rows.append(row)
    return rows

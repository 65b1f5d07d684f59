"""The trade-off of a benign sweep (issue 17): for each setting of the reference throttle, what it cost the
benign traffic (measured on the wire: p99 delay, false blocks) beside how fast it stops a worm — the worm's
side from the williamson model (throttle.model.predict_constant_rate), not from a worm trial: a worm scanning
new destinations at WORM_RATE per second, from the paper's full working set (filled with the host's normal
destinations) and from an empty one (where the working set lets the worm's first destinations out at once).

`points(trials, rows)` is pure; `plot(points, path)` draws the picture a reader chooses a setting from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

WORM_RATE = 20.0          # the worm's new destinations per second on the worm's side of the plot
WORM_HORIZON_S = 600.0
KEYS = ("working_set_size", "release_period_s", "delay_queue_limit", "policy")


def worm_side(params: Mapping[str, Any], placement: str, *, rate: float = WORM_RATE) -> dict[str, Any]:
    """The model's stopping speed of a TCP worm under these parameters: full and fresh working set."""
    from throttle.core import ThrottleConfig
    from throttle.model import predict_constant_rate

    cfg = ThrottleConfig(**{k: params[k] for k in KEYS if k in params})
    out: dict[str, Any] = {"worm_rate": rate}
    for state, initial in (("full", int(params["working_set_size"])), ("fresh", 0)):
        p = predict_constant_rate(rate, protocol="tcp", config=cfg, initial_working_set=initial,
                                  placement=placement, horizon_s=WORM_HORIZON_S)
        out[f"worm_stop_s_{state}"], out[f"worm_out_{state}"] = p.stop_s, p.out_before_block
    return out


def points(trials: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], *,
           worm_rate: float = WORM_RATE) -> list[dict[str, Any]]:
    """One point per williamson setting and benign rate: the summary row's cost beside the model's worm."""
    params: dict[str, tuple[dict[str, Any], str]] = {}
    for t in trials:
        if t.get("mechanism") == "williamson" and t.get("params"):
            params.setdefault(t.get("setting") or "", (dict(t["params"]), t.get("placement") or "host"))
    cache: dict[str, dict[str, Any]] = {}
    out = []
    for r in rows:
        s = r.get("setting") or ""
        if r.get("mechanism") != "williamson" or s not in params:
            continue
        if s not in cache:
            cache[s] = worm_side(*params[s], rate=worm_rate)
        p = params[s][0]
        out.append({"setting": s, "working_set_size": p.get("working_set_size"),
                    "release_period_s": p.get("release_period_s"), "delay_queue_limit": p.get("delay_queue_limit"),
                    "protocol": r.get("protocol"), "benign_rate": r.get("benign_rate"),
                    "delay_p99_s": r.get("delay_p99_s"), "model_p99_s": r.get("model_p99_s"),
                    "false_blocks": r.get("false_blocks"), "dropped": r.get("dropped"), "agree": r.get("agree")}
                   | cache[s])
    return out


def settings_swept(pts: Sequence[Mapping[str, Any]]) -> bool:
    """More than one setting: a trade-off to draw."""
    return len({p["setting"] for p in pts}) > 1


def order(p: Mapping[str, Any]) -> tuple:
    return (p["benign_rate"], *(float(p[k]) if isinstance(p.get(k), int | float) else 0.0
                                for k in ("working_set_size", "release_period_s", "delay_queue_limit")))


def table(pts: Sequence[Mapping[str, Any]], fmt: Callable[[Any], str]) -> tuple[list[str], list[list[str]]]:
    """The trade-off's rows (`fmt`: the report's own number format)."""
    head = ["working set", "release (s)", "queue", "benign rate (/s)", "benign p99 (s)", "model p99 (s)",
            "false blocks", "not ok", "worm out (full)", "worm stop s (full)", "worm out (fresh)",
            "worm stop s (fresh)"]
    body = [[fmt(p["working_set_size"]), fmt(p["release_period_s"]), fmt(p["delay_queue_limit"]),
             fmt(p["benign_rate"]), fmt(p["delay_p99_s"]), fmt(p["model_p99_s"]), fmt(p["false_blocks"]),
             fmt(p["dropped"]), fmt(p["worm_out_full"]), fmt(p["worm_stop_s_full"]), fmt(p["worm_out_fresh"]),
             fmt(p["worm_stop_s_fresh"])] for p in sorted(pts, key=order)]
    return head, body


def plot(pts: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Benign p99 delay (measured) across, the worm's attempts out before the block (model, fresh working set)
    up: one line per benign rate through the settings, each point labelled with its working set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.6))
    for k, rate in enumerate(sorted({p["benign_rate"] for p in pts})):
        line = sorted((p for p in pts if p["benign_rate"] == rate and p.get("delay_p99_s") is not None), key=order)
        if not line:
            continue
        xs, ys = [p["delay_p99_s"] for p in line], [p["worm_out_fresh"] for p in line]
        ax.plot(xs, ys, "o-", color=f"C{k}", label=f"benign {rate:g}/s")
        for p, x, y in zip(line, xs, ys, strict=True):
            fb = f", {p['false_blocks']} false block(s)" if p.get("false_blocks") else ""
            ax.annotate(f"ws {p['working_set_size']}{fb}", (x, y), textcoords="offset points", xytext=(5, 4),
                        fontsize=7, color=f"C{k}")
    ax.set_xlabel("benign p99 delay to the wire (s, measured)")
    ax.set_ylabel(f"worm's connections out before the block\n(model, {WORM_RATE:g}/s, empty working set)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

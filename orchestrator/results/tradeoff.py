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
    return _save(fig, ax, path, "benign p99 delay to the wire (s, measured)",
                 f"worm's connections out before the block\n(model, {WORM_RATE:g}/s, empty working set)")


def _save(fig, ax, path: Path, xlabel: str, ylabel: str) -> Path:
    """The two trade-off plots' frame (labels, grid, legend), written to `path` and closed."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- both axes measured: a stopping-speed sweep with benign traffic beside the worm (issue 17)

def measured_points(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One point per setting and scan rate of a stopping-speed run with benign traffic beside the worm: its
    summary row's stopping figures (measured, the model's beside) and benign figures (likewise)."""
    keys = ("mechanism", "setting", "protocol", "rate", "stop_s", "stop_s_model", "out_before_block",
            "out_before_block_model", "benign_rate", "benign_connections", "benign_p50_s", "benign_p99_s",
            "benign_p99_s_model", "benign_p99_attack_s", "benign_dropped", "benign_agree", "agree")
    out = []
    for r in rows:
        if r.get("benign_connections") is None:
            continue
        p = {k: r.get(k) for k in keys}
        words = dict(w.split("=", 1) for w in (r.get("setting") or "").split() if "=" in w)
        p["working_set_size"] = int(words["working_set_size"]) if "working_set_size" in words else None
        out.append(p)
    return sorted(out, key=lambda p: (p["mechanism"] or "", p["rate"], p["working_set_size"] or 0, p["setting"] or ""))


def measured_table(pts: Sequence[Mapping[str, Any]], fmt: Callable[[Any], str]) -> tuple[list[str], list[list[str]]]:
    """The trade-off with both axes measured (`fmt`: the report's own number format)."""
    head = ["mechanism", "setting", "scan rate (/s)", "stop s", "model stop s", "worm out", "model out",
            "benign /s", "benign conns", "benign p50 s", "benign p99 s", "model p99 s", "p99 s during attack",
            "benign not ok", "agrees"]
    body = [[p["mechanism"] or "–", p["setting"] or "–", fmt(p["rate"]), fmt(p["stop_s"]), fmt(p["stop_s_model"]),
             fmt(p["out_before_block"]), fmt(p["out_before_block_model"]), fmt(p["benign_rate"]),
             fmt(p["benign_connections"]), fmt(p["benign_p50_s"]), fmt(p["benign_p99_s"]),
             fmt(p["benign_p99_s_model"]), fmt(p["benign_p99_attack_s"]), fmt(p["benign_dropped"]),
             "–" if p["agree"] is None else "yes" if p["agree"] else "NO"] for p in pts]
    return head, body


def measured_plot(pts: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Benign p99 delay before the worm (measured) across, the worm's attempts out before the block (measured)
    up, the model's beside each as an open marker: one line per scan rate through the settings."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.6))
    for k, rate in enumerate(sorted({p["rate"] for p in pts})):
        line = [p for p in pts if p["rate"] == rate and p.get("benign_p99_s") is not None]
        if not line:
            continue
        ax.plot([p["benign_p99_s"] for p in line], [p["out_before_block"] for p in line], "o-", color=f"C{k}",
                label=f"worm {rate:g}/s (measured)")
        model = [p for p in line if p.get("benign_p99_s_model") is not None and p.get("out_before_block_model") is not None]
        ax.plot([p["benign_p99_s_model"] for p in model], [p["out_before_block_model"] for p in model], "s",
                mfc="none", color=f"C{k}", label=f"worm {rate:g}/s (model)")
        for p in line:
            ax.annotate(f"ws {p['working_set_size']}" if p["working_set_size"] is not None else (p["setting"] or ""),
                        (p["benign_p99_s"], p["out_before_block"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=7, color=f"C{k}")
    return _save(fig, ax, path, "benign p99 delay to the wire before the worm (s, measured)",
                 "worm's connections out before the block\n(measured, benign traffic beside it)")

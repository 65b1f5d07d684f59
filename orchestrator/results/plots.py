"""The run report's plots (plots/*.png): stopping time and attempts out against scan rate with the model's
curve, queue length over time, achieved against configured rate — from a run directory's files alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.experiment.rundir import RunDir


def model_curve(man: dict[str, Any], protocol: str, rates: list[float]) -> list[tuple[float, float | None, int]]:
    """The model's stopping time and attempts out over a grid of rates (for the plot's curve)."""
    from orchestrator.experiment.agreement import throttle_config
    from throttle.model import predict_constant_rate

    e = man["experiment"]
    th = e.get("throttle")
    if not isinstance(th, dict) or e.get("kind") != "stopping-speed":
        return []

    class _T:  # the spec's throttle section as attributes
        pass
    t = _T()
    t.__dict__.update(th)
    cfg = throttle_config(t)
    lo, hi = min(rates), max(rates)
    grid = sorted({*rates, *(lo * (hi / lo) ** (i / 30) for i in range(31))}) if hi > lo else rates
    out = []
    for r in grid:
        p = predict_constant_rate(r, protocol=protocol, config=cfg,
                                  initial_working_set=th["working_set_size"] if e.get("state") == "full" else 0,
                                  placement=th["placement"], horizon_s=float(e.get("timeout_s", 60)),
                                  retransmit=man.get("retransmit", "linux"))
        out.append((r, p.stop_s, p.out_before_block))
    return out


def _queue_series(run: RunDir, t: dict[str, Any]) -> list[tuple[float, int]]:
    """Measured queue length over time for one trial, from its throttle log, relative to the first attempt."""
    f = (t.get("files") or {}).get("throttle_log")
    first = (t.get("measured") or {}).get("first_attempt_wall")
    if not f or first is None or not (run.path / f).exists():
        return []
    pts = []
    for line in (run.path / f).read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if "queue_len" in ev and ev.get("t_wall") is not None and ev.get("event") != "config":
            pts.append((max(ev["t_wall"] - first, 1e-3), ev["queue_len"]))   # log axis: from 1 ms
    return pts


CAPTIONS = {
    "benign-worm-tradeoff": "The trade-off with both axes measured: each setting's benign p99 delay to the wire "
                            "before the worm (across) against the worm's connections out before the block (up), "
                            "in the same trials; open squares: the williamson model of the benign schedule and the "
                            "worm together.",
    "stopping-time": "Time from the worm's first attempt to the throttle's block, against the scan rate, one panel "
                     "per protocol: measured (points: the mean over the repeats, bars: the 95 % confidence interval "
                     "with several repeats, else min–max) beside the throttle's model (line) and the paper's figure "
                     "where it gives one (red: an upper bound, \u25bc).",
    "attempts-out": "The worm's attempts that reached the wire before the block, against the scan rate, one panel "
                    "per protocol: measured on the sniffer (points) beside the model (crosses) and the paper's "
                    "maximum (red \u25bc).",
    "queue-length": "The throttle's delay queue over time in every trial, from its event log (time since the worm's "
                    "first attempt), up to the limit at which it blocks the host (red dotted line).",
    "achieved-rate": "The scan rate the worm achieved (from its own log, and on the wire where measured) against "
                     "the rate it was configured for; the dotted diagonal is equality.",
}
FONT: dict[str, Any] = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
        "xtick.labelsize": 10, "ytick.labelsize": 10}


def plots(run: RunDir, man: dict[str, Any], trials: list[dict[str, Any]], rows: list[dict[str, Any]],
          out_dir: Path | None = None) -> dict[str, Path]:
    """Write plots/*.png (readable at a page's full width: 10 in wide at 110 dpi, 11 pt text) and return them
    by name (CAPTIONS says what each shows)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orchestrator.results.paper import paper_for

    plt.style.use(FONT)             # the same as rcParams.update, typed for a plain dict
    pdir = (out_dir or run.path) / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    protos = sorted({r["protocol"] for r in rows})
    colors = {"tcp": "tab:blue", "udp": "tab:orange"}
    throttled = man["experiment"].get("kind") == "stopping-speed"
    profile = man["experiment"].get("worm", {}).get("profile")

    def save(fig, name):
        path = pdir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out[name] = path

    def panels():
        fig, axes = plt.subplots(1, max(len(protos), 1), figsize=(10, 4.4), squeeze=False, sharey=True)
        return fig, list(axes[0])

    if throttled:
        fig, axes = panels()
        for ax, p in zip(axes, protos, strict=False):
            pr = [r for r in rows if r["protocol"] == p and r["stop_s"] is not None]
            if pr:
                ax.errorbar([r["rate"] for r in pr], [r["stop_s"] for r in pr], yerr=_stop_bars(pr, trials, p),
                            fmt="o", color=colors.get(p), capsize=4, ms=6, label="measured")
            curve = [(r, s) for r, s, _ in model_curve(man, p, [r["rate"] for r in rows if r["protocol"] == p])
                     if s is not None]
            if curve:
                ax.plot(*zip(*curve, strict=True), "-", color=colors.get(p), alpha=0.5, label="model")
            _paper_marks(ax, [paper_for(profile, p, float(r["rate"])) for r in rows if r["protocol"] == p],
                         [r["rate"] for r in rows if r["protocol"] == p], "stop")
            _frame(ax, "scan rate (attempts/s)", "time to stop (s)" if ax is axes[0] else "", p.upper(), loglog=True)
        save(fig, "stopping-time")

        fig, axes = panels()
        for ax, p in zip(axes, protos, strict=False):
            pr = [r for r in rows if r["protocol"] == p and r["out_before_block"] is not None]
            if pr:
                ax.errorbar([r["rate"] for r in pr], [r["out_before_block"] for r in pr],
                            yerr=[r["out_before_block_sd"] or 0 for r in pr], fmt="o", color=colors.get(p),
                            capsize=4, ms=6, label="on the wire")
                ax.plot([r["rate"] for r in pr], [r["out_before_block_model"] for r in pr], "x--",
                        color=colors.get(p), alpha=0.6, ms=8, label="model")
                _paper_marks(ax, [paper_for(profile, p, float(r["rate"])) for r in pr], [r["rate"] for r in pr],
                             "out")
            _frame(ax, "scan rate (attempts/s)", "attempts out before the block" if ax is axes[0] else "",
                   p.upper())
            if not pr:
                ax.text(0.5, 0.5, "not measured here: the capture stands\nin front of the throttle",
                        ha="center", va="center", transform=ax.transAxes)
        save(fig, "attempts-out")

        fig, axes = panels()
        for ax, p in zip(axes, protos, strict=False):
            for t in sorted((t for t in trials if t["protocol"] == p and t.get("status") in ("ok", "timeout")),
                            key=lambda t: t["rate"]):
                pts = _queue_series(run, t)
                if pts:
                    ax.step(*zip(*pts, strict=True), where="post", label=f"{t['rate']:g}/s #{t['repeat']}")
            ax.axhline(man["experiment"]["throttle"]["delay_queue_limit"], color="red", ls=":", lw=1)
            _frame(ax, "time since the first attempt (s)", "delay-queue length" if ax is axes[0] else "", p.upper())
        save(fig, "queue-length")

    fig, ax = plt.subplots(figsize=(10, 4.4))          # every figure 10 in wide: one scale on the page
    for p in protos:
        ts = [t for t in trials if t["protocol"] == p and (t.get("measured") or {}).get("achieved_rate")]
        ax.plot([t["rate"] for t in ts], [t["measured"]["achieved_rate"] for t in ts],
                "o" if p == "tcp" else "^", color=colors.get(p), ms=8 if p == "tcp" else 5, label=f"{p} (worm log)")
        tw = [t for t in ts if t["measured"].get("achieved_rate_wire")]
        if tw:
            ax.plot([t["rate"] for t in tw], [t["measured"]["achieved_rate_wire"] for t in tw], "s",
                    mfc="none", color=colors.get(p), label=f"{p} (capture)")
    rates = [r["rate"] for r in rows] or [1, 10]
    ax.plot([min(rates), max(rates)], [min(rates), max(rates)], "k:", lw=1, label="configured")
    _frame(ax, "configured rate (attempts/s)", "achieved rate (attempts/s)", "Achieved against configured rate",
           loglog=True)
    save(fig, "achieved-rate")
    return out


def _stop_bars(pr: list[dict[str, Any]], trials: list[dict[str, Any]], protocol: str) -> list[list[float]]:
    """Error bars of the measured stopping times: the 95 % CI with several repeats, else min–max."""
    from orchestrator.results.paper import ci95, row_values

    lo, hi = [], []
    for r in pr:
        ci = ci95(row_values(trials, protocol, float(r["rate"]), "stop_s"))
        low, high = ci if ci else (r["stop_s_min"] or r["stop_s"], r["stop_s_max"] or r["stop_s"])
        lo.append(max(r["stop_s"] - low, 0))
        hi.append(max(high - r["stop_s"], 0))
    return [lo, hi]


def _paper_marks(ax, figs: list, rates: list[float], what: str) -> None:
    """The paper's figures on a panel: a red ▼ at the bound (an upper bound: "< 5 s", "≤ 5 packets")."""
    pts = [(r, f.stop_bound_s if what == "stop" else f.out_max) for r, f in zip(rates, figs, strict=True)
           if f is not None and (what == "stop" or f.out_max is not None)]
    if pts:
        ax.plot(*zip(*pts, strict=True), "v", color="red", ms=9, mfc="none", mew=1.5, label="paper (≤)")


def _frame(ax, xlabel: str, ylabel: str, title: str, *, loglog: bool = False) -> None:
    """The frame every plot shares: a log rate axis (both axes log with loglog), labels, grid, legend."""
    ax.set_xscale("log")
    if loglog:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()

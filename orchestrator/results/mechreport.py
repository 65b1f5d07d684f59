"""The report's pages for a run of several mechanisms (`mechanisms:`): Table 1 as one block per mechanism, a
comparison table of the wire figures every mechanism has, and plots with one curve per mechanism (time to
containment and attempts out against scan rate). Pure over the summary rows, but for the plots' files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def mechanisms_of(man: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The run's mechanisms in the order they ran ([] for a run of `throttle:` or `kind:`, one mechanism)."""
    if not (man.get("experiment") or {}).get("mechanisms"):
        return []
    return list(dict.fromkeys(r["mechanism"] for r in rows if r.get("mechanism")))


def williamson_view(man: dict[str, Any], trials: list[dict[str, Any]], rows: list[dict[str, Any]]):
    """The manifest, trials and rows the single-mechanism plots draw (the reference throttle's, with its model's
    parameters in the manifest's `throttle:` place; no throttle plots when it did not run)."""
    exp = dict(man["experiment"])
    w = next((m for m in exp.get("mechanisms") or [] if m.get("name") in ("williamson", "throttle")), None)
    if w is None:
        exp["kind"] = "baseline"
        return man | {"experiment": exp}, trials, rows
    from mechanisms import get
    exp["throttle"] = get("williamson").validate(w.get("params")) | {"placement": w.get("placement", "host")}
    return (man | {"experiment": exp}, [t for t in trials if t.get("mechanism") == "williamson"],
            [r for r in rows if r.get("mechanism") == "williamson"])


def comparison(rows: list[dict[str, Any]], mechs: list[str],
               fmt: Callable[[Any], str]) -> tuple[list[str], list[list[str]]]:
    """One line per mechanism, protocol and rate: contained (in how many repeats), time to containment and
    attempts out on the wire, the rate let out, and whether the mechanism's model (or log, for none) agrees.
    `fmt` writes a figure (the report's own)."""
    head = ["mechanism", "protocol", "scan rate (/s)", "contained", "contained_s", "out before contained",
            "wire rate (/s)", "agrees"]
    body = []
    for m in mechs:
        for r in (r for r in rows if r.get("mechanism") == m):
            done = r["repeats"] - (r.get("errors") or 0)
            spread = f" ± {fmt(r['contained_s_sd'])}" if r.get("contained_s_sd") else ""
            body.append([m, r["protocol"], fmt(r["rate"]), f"{r.get('contained') or 0}/{done}",
                         fmt(r.get("contained_s")) + (spread if r.get("contained_s") is not None else ""),
                         fmt(r.get("out_before_contained")), fmt(r.get("wire_rate")),
                         "yes" if r["agree"] else "NO"])
    return head, body


def plots(pdir: Path, rows: list[dict[str, Any]], mechs: list[str]) -> dict[str, Path]:
    """contained-time.png and contained-out.png: one curve per mechanism (and protocol) against scan rate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pdir.mkdir(exist_ok=True)
    out: dict[str, Path] = {}
    for name, key, ylabel, title in (
            ("contained-time", "contained_s", "time to containment (s)", "Time to containment, per mechanism"),
            ("contained-out", "out_before_contained", "attempts out before containment",
             "Attempts on the wire before containment, per mechanism")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for m in mechs:
            for p in sorted({r["protocol"] for r in rows if r.get("mechanism") == m}):
                pts = [(r["rate"], r[key]) for r in rows
                       if r.get("mechanism") == m and r["protocol"] == p and r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*sorted(pts), strict=True), "o-", label=f"{m} ({p})")
        never = [m for m in mechs if not any(r.get(key) is not None for r in rows if r.get("mechanism") == m)]
        ax.set_xscale("log")
        ax.set_xlabel("scan rate (attempts/s)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if never:
            ax.text(0.02, 0.98, "never contained: " + ", ".join(never), transform=ax.transAxes, va="top",
                    fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        path = pdir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out[name] = path
    return out

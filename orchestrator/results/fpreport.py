"""The false-positive section of a benign run's report (issue 17): per mechanism, setting and benign rate, the
hosts falsely blocked of the hosts run, false blocks per host-hour of benign use, each host's first false block
beside the model's, and the survival plot (the share of hosts not yet blocked against time, measured and
predicted). From summary rows and trial records alone (orchestrator.analysis.falsepos made the figures)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.analysis.falsepos import survival

CAPTION = ("The share of benign hosts not yet falsely blocked against the time since their first scheduled "
           "connection, per mechanism and benign rate: measured from each host's mechanism event log (solid), "
           "predicted by the mechanism's model from each host's own schedule (dashed) where it has one.")


def hosts_of(t: dict[str, Any]) -> list[dict[str, Any]]:
    """A trial's hosts: {host, t_block_s, model_block_s, cause, agree} (a single-host trial's one)."""
    m = t.get("measured") or {}
    if m.get("per_host"):
        return list(m["per_host"])
    if "fp" not in m:
        return []
    fb, model = m.get("false_block") or {}, t.get("model") or {}
    return [{"host": fb.get("src") or "host", "t_block_s": fb.get("t_s"), "cause": fb.get("cause"),
             "model_block_s": model.get("blocked_s") if isinstance(model.get("blocked_s"), (int, float)) else None,
             "agree": (t.get("agreement") or {}).get("ok")}]


def detected(rows: list[dict[str, Any]]) -> bool:
    """Does the run have false-positive figures (rows recorded with the hosts column)?"""
    return any(r.get("hosts") is not None for r in rows)


def table(rows: list[dict[str, Any]], fmt: Callable[[Any], str]) -> tuple[list[str], list[list[str]]]:
    head = ["mechanism", "setting", "benign rate (/s)", "hosts", "falsely blocked", "FP rate",
            "false blocks per host-hour", "first block at (s)", "cause"]
    body = [[r["mechanism"], r.get("setting") or "", fmt(r["benign_rate"]), fmt(r.get("hosts")),
             fmt(r.get("false_block_hosts")), fmt(r.get("fp_rate")), fmt(r.get("fp_per_host_hour")),
             fmt(r.get("false_block_s")), fmt(r.get("false_block_cause"))] for r in rows if r.get("hosts") is not None]
    return head, body


def notes(trials: list[dict[str, Any]], fmt: Callable[[Any], str]) -> list[str]:
    """One line per trial with several hosts: each host's first false block (or none) and the model's."""
    out = []
    for t in trials:
        hs = hosts_of(t)
        if len(hs) < 2:
            continue
        parts = [f"{h['host']} {fmt(h.get('t_block_s')) if h.get('t_block_s') is not None else 'never'}"
                 + (f" (model {fmt(h['model_block_s']) if h.get('model_block_s') is not None else 'never'})"
                    if "model_block_s" in h and (t.get("model") is not None) else "") for h in hs]
        out.append(f"Trial {t['trial']}: first false block per host, s after its first connection — "
                   + ", ".join(parts) + ".")
    return out


def plot(trials: list[dict[str, Any]], span_s: float, path: Path) -> Path | None:
    """The survival plot: one panel per benign rate, a step line per mechanism (measured) and its model's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orchestrator.results.plots import FONT

    groups: dict[float, dict[str, list[dict[str, Any]]]] = {}
    done = [t for t in trials if t.get("status") in ("ok", "timeout") and hosts_of(t)]
    settings: dict[str, set[str]] = {}
    for t in done:
        settings.setdefault(t.get("mechanism") or "–", set()).add(t.get("setting") or "")
    for t in done:      # a mechanism's setting in its label only when the run has several of it
        mech = t.get("mechanism") or "–"
        label = f"{mech} {t.get('setting')}" if len(settings[mech]) > 1 else mech
        groups.setdefault(float(t["rate"]), {}).setdefault(label, []).append(t)
    if not groups:
        return None
    plt.style.use(FONT)
    rates = sorted(groups)
    fig, axes = plt.subplots(1, len(rates), figsize=(10, 4.2), sharey=True, squeeze=False)
    mechs = list(dict.fromkeys(m for g in groups.values() for m in g))
    for ax, rate in zip(axes[0], rates, strict=True):
        for label, ts in groups[rate].items():
            color = f"C{mechs.index(label)}"
            hs = [h for t in ts for h in hosts_of(t)]
            xs, ys = zip(*survival([h.get("t_block_s") for h in hs], span_s), strict=True)
            ax.step(xs, ys, where="post", color=color, label=f"{label} ({len(hs)} hosts)")
            if any(t.get("model") is not None for t in ts):
                mx, my = zip(*survival([h.get("model_block_s") for h in hs], span_s), strict=True)
                ax.step(mx, my, where="post", color=color, ls="--", alpha=0.7, label=f"{label} model")
        ax.set_title(f"{rate:g} benign connections/s")
        ax.set_xlabel("time since the host's first connection (s)")
        ax.set_xlim(0, span_s)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower left")
    axes[0][0].set_ylabel("hosts not yet falsely blocked")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def section(trials: list[dict[str, Any]], rows: list[dict[str, Any]], span_s: float, pdir: Path,
            fmt: Callable[[Any], str]) -> tuple[list[str], list[str], list[list[str]], dict[str, Path]]:
    """(markdown lines, table head, table body, images) of the section; empty when the run has no figures."""
    if not detected(rows):
        return [], [], [], {}
    head, body = table(rows, fmt)
    md = ["## False positives over hosts and time", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    md += ["", "Every host ran no worm: its first block is a false one (from its mechanism's own event log). FP "
               "rate: hosts falsely blocked / hosts; per host-hour: false blocks over the hours of benign use "
               "before each host's block (or its whole session).", ""]
    md += [f"- {n}" for n in notes(trials, fmt)] + [""]
    images = {}
    if (p := plot(trials, span_s, pdir / "benign-survival.png")) is not None:
        images["benign-survival"] = p
    return md, head, body, images

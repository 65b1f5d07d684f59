"""`testbed results compare BASE NEW --report DIR`: a side-by-side report of two runs — compare.md and a
self-contained compare.html with both runs' stopping-time curves on one plot (one panel per protocol), the two
configurations where they differ, and the verdict of the regression check per protocol and rate
(results/regress.py) — from the two run directories alone."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from orchestrator.atomic import atomic_write_text
from orchestrator.experiment.rundir import RunDir, summarise
from orchestrator.results.regress import Comparison


def _f(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) and not float(v).is_integer() else f"{v:g}"


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, base value, new value) wherever two manifests' experiments differ."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append((f"{prefix}{k}", str(va), str(vb)))
    return out


def _plot(base: RunDir, new: RunDir, dest: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orchestrator.results.plots import FONT

    plt.style.use(FONT)             # the same as rcParams.update, typed for a plain dict
    runs = [(base, summarise(base.trials()), "o--", "base"), (new, summarise(new.trials()), "s-", "new")]
    protos = sorted({r["protocol"] for _, rows, _, _ in runs for r in rows})
    fig, axes = plt.subplots(1, max(len(protos), 1), figsize=(10, 4.4), squeeze=False, sharey=True)
    for ax, p in zip(axes[0], protos, strict=False):
        for run, rows, style, who in runs:
            pr = [r for r in rows if r["protocol"] == p and r["stop_s"] is not None]
            if pr:
                ax.plot([r["rate"] for r in pr], [r["stop_s"] for r in pr], style, ms=7, mfc="none" if who == "new"
                        else None, label=f"{who}: {run.path.name}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(p.upper())
        ax.set_xlabel("scan rate (attempts/s)")
        if ax is axes[0][0]:
            ax.set_ylabel("time to stop (s)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    (dest / "plots").mkdir(parents=True, exist_ok=True)
    path = dest / "plots" / "compare-stopping-time.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_compare_report(base: RunDir, new: RunDir, rows: list[Comparison], tolerance: float, dest: Path
                         ) -> tuple[Path, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    png = _plot(base, new, dest)
    caption = (f"Stopping time against scan rate, one panel per protocol: the base run {base.path.name} (circles, "
               f"dashed) and the new run {new.path.name} (squares, solid).")
    diffs = config_differences(base.manifest().get("experiment", {}), new.manifest().get("experiment", {}))
    head = ["protocol", "rate (/s)", "stop s (base)", "stop s (new)", "out (base)", "out (new)",
            "agrees with the model (base → new)", "verdict", "why"]
    body = [[r.protocol, _f(r.rate), _f(r.base.get("stop_s")), _f(r.new.get("stop_s")),
             _f(r.base.get("out_before_block")), _f(r.new.get("out_before_block")),
             f"{'yes' if r.base.get('agree') else 'no'} → {'yes' if r.new.get('agree') else 'no'}"
             if r.base and r.new else "–", r.verdict, "; ".join(r.reasons)] for r in rows]
    regressions = sum(1 for r in rows if r.verdict == "regression")
    title = f"{base.path.name} → {new.path.name}"
    summary = f"{regressions} regression(s) beyond a tolerance of {tolerance:.0%}, {len(rows)} row(s) compared."

    md = [f"# Comparison — {title}", "", f"- **base**: {base.path}", f"- **new**: {new.path}", "", summary, "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    md += ["", "## Configuration differences", ""]
    md += ([f"- `{k}`: {a} → {b}" for k, a, b in diffs] or ["- none: the same experiment"])
    md += ["", "## Stopping time", "", f"![{caption}](plots/{png.name})", "", f"*{caption}*", ""]
    md_path = dest / "compare.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")

    cells = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in body)
    diff_html = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(a)} → {html.escape(b)}</li>"
                        for k, a, b in diffs) or "<li>none: the same experiment</li>"
    img = base64.b64encode(png.read_bytes()).decode()
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Comparison — {html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;font-size:.9em}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
th{{background:#f3f3f3}}td:first-child,td:last-child{{text-align:left}}img{{width:100%}}
figcaption{{font-size:.9em;color:#444}}</style></head><body>
<h1>Comparison — {html.escape(title)}</h1>
<p><b>base</b>: {html.escape(str(base.path))}<br><b>new</b>: {html.escape(str(new.path))}</p><p>{html.escape(summary)}</p>
<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{cells}</table>
<h2>Configuration differences</h2><ul>{diff_html}</ul>
<h2>Stopping time</h2><figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{img}">
<figcaption>{html.escape(caption)}</figcaption></figure></body></html>
"""
    html_path = dest / "compare.html"
    atomic_write_text(html_path, page)
    return md_path, html_path

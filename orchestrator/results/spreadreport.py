"""The report of a spread run (report.md, report.html, plots/): the epidemic curves — infected hosts against
time, one panel per deploy condition: the repeats' mean with their min–max, the model's 5–95 % band and its
median beside it —, the table per mechanism and deploy condition, and the infection tree of one trial (who
infected whom, when), all from the run directory's files alone."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from orchestrator.analysis.infections import curve, read_csv
from orchestrator.atomic import atomic_write_text
from orchestrator.experiment.rundir import RunDir, run_status, summarise

TABLE = (("mechanism", "mechanism"), ("deploy", "deploy"), ("rate", "rate /s"), ("hosts", "hosts"),
         ("infected_final", "infected"), ("t_first_s", "t_first s"), ("t_50_s", "t_50 s"), ("t_90_s", "t_90 s"),
         ("t_all_s", "t_all s"), ("model_t_50_s", "model t_50 s (5–95 %)"), ("reached_all", "all fell"),
         ("confirmed_on_wire", "on the wire"), ("agrees", "agrees"), ("repeats", "repeats"))


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    body = []
    for r in rows:
        cells = []
        for key, _ in TABLE:
            v = r.get(key)
            if key in ("t_first_s", "t_50_s", "t_90_s", "t_all_s", "infected_final") and v is not None:
                cells.append(f"{_fmt(v)} ({_fmt(r.get(f'{key}_min'))}–{_fmt(r.get(f'{key}_max'))})")
            elif key == "model_t_50_s":
                cells.append(f"{_fmt(v)} ({_fmt(r.get('model_t_50_p5'))}–{_fmt(r.get('model_t_50_p95'))})")
            elif key == "reached_all":
                cells.append(f"{v}/{r.get('ok', 0)}")
            elif key == "confirmed_on_wire":
                cells.append(f"{v}/{r.get('infections')}")
            else:
                cells.append(_fmt(v))
        body.append(cells)
    return [h for _, h in TABLE], body


def compact(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The terminal's table (80 columns): means only, the model's band beside t_50."""
    head = ["mech", "deploy", "rate", "infected", "t_first", "t_50", "model t_50", "t_all", "wire", "agrees"]
    body = [[_fmt(r.get("mechanism")), _fmt(r.get("deploy")), _fmt(r.get("rate"), 0),
             f"{_fmt(r.get('infected_final'), 1)}/{_fmt(r.get('hosts'))}", _fmt(r.get("t_first_s"), 1),
             _fmt(r.get("t_50_s"), 1), f"{_fmt(r.get('model_t_50_p5'), 1)}–{_fmt(r.get('model_t_50_p95'), 1)}",
             _fmt(r.get("t_all_s"), 1), f"{r.get('confirmed_on_wire')}/{r.get('infections')}", _fmt(r.get("agrees"))]
            for r in rows]
    return head, body


def models(run: RunDir) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted((run.path / "model").glob("*.json")):
        d = json.loads(p.read_text())
        out[f"{d['mechanism']}|{d['deploy']}|{float(d['rate']):g}"] = d
    return out


def trial_times(run: RunDir, t: dict[str, Any]) -> list[float]:
    f = (t.get("files") or {}).get("infections")
    if not f or not (run.path / f).is_file():
        return []
    return [float(r["infected_at_s"]) for r in read_csv(run.path / f)]


def plot_curves(run: RunDir, trials: list[dict[str, Any]], dest: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    conds = list(dict.fromkeys((t.get("mechanism"), t.get("deploy"), float(t["rate"])) for t in trials
                               if t.get("status") in ("ok", "timeout")))
    if not conds:
        return None
    mods = models(run)
    fig, axes = plt.subplots(1, len(conds), figsize=(4.2 * len(conds), 3.6), squeeze=False, sharey=True)
    for ax, (mech, deploy, rate) in zip(axes[0], conds, strict=True):
        ts = [t for t in trials if (t.get("mechanism"), t.get("deploy"), float(t["rate"])) == (mech, deploy, rate)
              and t.get("status") in ("ok", "timeout")]
        m = mods.get(f"{mech}|{deploy}|{rate:g}")
        runs = [trial_times(run, t) for t in ts]
        end = max([max(r, default=0.0) for r in runs] + ([m["grid"][-1]] if m else []) + [1.0])
        grid = np.linspace(0, end * 1.05, 200)
        if m:
            ax.fill_between(m["grid"], m["band"]["p5"], m["band"]["p95"], color="tab:orange", alpha=0.25,
                            label="model 5–95 %")
            ax.plot(m["grid"], m["band"]["p50"], color="tab:orange", lw=1.2, ls="--", label="model median")
        if runs:
            cs = np.array([curve(r, list(grid)) for r in runs], dtype=np.float64)
            if len(runs) > 1:
                ax.fill_between(grid, cs.min(axis=0), cs.max(axis=0), color="tab:blue", alpha=0.2,
                                label="repeats min–max")
            ax.plot(grid, cs.mean(axis=0), color="tab:blue", lw=1.8, label=f"measured mean of {len(runs)}")
        ax.set_title(f"{mech}, deploy {deploy}, {rate:g}/s", fontsize=9)
        ax.set_xlabel("seconds from the injection")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("infected hosts")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "spread-curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tree(run: RunDir, trials: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """The infection tree of the trial that infected the most hosts (the first such), as indented lines."""
    ok = [t for t in trials if t.get("status") in ("ok", "timeout") and (t.get("files") or {}).get("infections")]
    if not ok:
        return None, []
    t = max(ok, key=lambda x: (x.get("measured") or {}).get("infected_final") or 0)
    rows = read_csv(run.path / t["files"]["infections"])
    kids: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        kids.setdefault(r["by"], []).append(r)
    hosts = {r["host"] for r in rows}
    roots = [r for r in rows if r["by"] not in hosts]
    lines: list[str] = []

    def walk(r: dict[str, Any], depth: int) -> None:
        wire = "on the wire" if r["confirmed_on_wire"] == "True" else "NOT on the wire"
        lines.append(f"{'    ' * depth}- {r['host']} at {float(r['infected_at_s']):.2f} s (generation "
                     f"{r['generation']}, by {r['by']}; {wire})")
        for k in sorted(kids.get(r["host"], []), key=lambda x: float(x["infected_at_s"])):
            walk(k, depth + 1)
    for r in roots:
        walk(r, 0)
    return t["trial"], lines


def build_spread_report(run: RunDir, out_dir: Path | None = None) -> tuple[Path, Path]:
    man, trials = run.manifest(), run.trials()
    rows = summarise(trials)
    e = man["experiment"]
    dest = out_dir or run.path
    dest.mkdir(parents=True, exist_ok=True)
    png = plot_curves(run, trials, dest / "plots") if trials else None
    head, body = table(rows)
    which, lines = tree(run, trials)
    errors = [f"{t['trial']}: {t.get('reason')}" for t in trials if t.get("status") == "error"]
    findings = [f"{t['trial']}: {f.get('detail')}" for t in trials for f in (t.get("findings") or [])]
    md = [f"# Worm spread — {e['experiment']}", "",
          f"- **lab**: {man['lab']['name']} ({man['lab']['provider']})",
          f"- **status**: {run_status(man)} — {len(trials)} of {man.get('planned', '?')} trials",
          f"- **seed**: {man.get('seed')}; **git**: {(man.get('git') or {}).get('commit', '?')}",
          "", "## Epidemic figures per mechanism and deploy condition", "",
          "Mean over the repeats (min–max); the model's median t_50 with its 5–95 % band; a trial agrees when its "
          "t_50 (and t_all where all fell) lies inside the model's band. Times are from the injection.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    if png:
        md += ["", "## Epidemic curves", "", f"![spread curves](plots/{png.name})", "",
               "*Infected hosts against time per deploy condition: the measured mean (blue, with the repeats' "
               "min–max) beside the model's median and 5–95 % band (orange).*"]
    if which:
        md += ["", f"## Infection tree — {which}", ""] + lines
    md += ["", "## Findings and errors", ""] + ([f"- {x}" for x in findings + errors] or ["- none"])
    md_path = dest / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    page = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>Worm spread — {html.escape(e['experiment'])}</title></head><body>",
            f"<h1>Worm spread — {html.escape(e['experiment'])}</h1><table border='1'><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    page += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body]
    page.append("</table>")
    if png:
        import base64
        page.append(f"<img alt='spread curves' src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}'>")
    if which:
        page.append(f"<h2>Infection tree — {html.escape(which)}</h2><pre>{html.escape(chr(10).join(lines))}</pre>")
    page.append("</body></html>")
    html_path = dest / "report.html"
    atomic_write_text(html_path, "\n".join(page) + "\n")
    return md_path, html_path

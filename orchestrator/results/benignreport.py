"""The report of a benign run (`kind: benign`, issue 17): what containment cost the host's benign traffic — one
table per mechanism and setting (delay on the wire p50/p95/p99/max against the benign rate, the model's p99
beside it, drops, false blocks with when and why, agreement connection by connection), and plots: the delay
against the benign rate, and each connection's measured delay against the model's.

`build(run, out_dir)` writes report.md, report.html and plots/ (report.py dispatches a benign run here)."""

from __future__ import annotations

import base64
import csv
import html
import time
from pathlib import Path
from typing import Any

from orchestrator.atomic import atomic_write_text
from orchestrator.experiment.rundir import RunDir, run_status
from orchestrator.results import fpreport, tradeoff

CAPTIONS = {
    "benign-delay": "Each benign connection's delay from its scheduled time to its first SYN on the wire (from "
                    "the capture): p50, p95 and p99 per benign rate, per mechanism and setting (points), with the "
                    "model's p99 (crosses) where the mechanism has a model.",
    "benign-model": "Every benign connection's delay on the wire (measured) against the williamson model's for the "
                    "same schedule; the diagonal is agreement.",
    "benign-tradeoff": "The trade-off of the sweep: each setting's benign p99 delay (measured on the wire) "
                       "across, against the worm's connections out before williamson blocks it (the model, a TCP "
                       "worm at 20 new destinations/s from an empty working set) up; one line per benign rate.",
    "benign-survival": fpreport.CAPTION,
}


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["mechanism", "setting", "protocol", "benign rate (/s)", "connections", "delay p50 (s)", "p95 (s)",
            "p99 (s)", "max (s)", "model p99 (s)", "not ok", "false blocks", "first block at (s)", "cause",
            "agrees (share)"]
    body = [[r["mechanism"], r.get("setting") or "", r["protocol"], fmt(r["benign_rate"]), fmt(r["connections"]),
             fmt(r["delay_p50_s"]), fmt(r["delay_p95_s"]), fmt(r["delay_p99_s"]), fmt(r["delay_max_s"]),
             fmt(r.get("model_p99_s")), fmt(r["dropped"]), fmt(r["false_blocks"]), fmt(r.get("false_block_s")),
             fmt(r.get("false_block_cause")),
             "–" if r.get("agree") is None else f"{fmt(r['agree'])} ({fmt(r.get('agree_share'))})"]
            for r in rows]
    return head, body


def notes(trials: list[dict[str, Any]]) -> list[str]:
    out = []
    for t in trials:
        m, a = t.get("measured") or {}, t.get("agreement") or {}
        if t.get("status") == "error":
            out.append(f"Trial {t['trial']}: error — {t.get('reason')}")
            continue
        fb = m.get("false_block")
        if fb:
            blk: dict[str, Any] = a["block"] if isinstance(a.get("block"), dict) else {}
            out.append(f"Trial {t['trial']}: **false block** of {fb.get('src')} at {fmt(fb.get('t_s'))} s after the "
                       f"first scheduled connection, cause `{fb.get('cause')}` (delay queue {fb.get('queue_len')} "
                       f"entries); the model's block at {fmt(blk.get('model_s'))} s. "
                       f"{(m.get('after_block') or {}).get('scheduled_after', 0)} connection(s) were scheduled "
                       f"after it, {(m.get('after_block') or {}).get('on_wire_after', 0)} reached the wire.")
        eq = m.get("empty_queue_wait") or {}
        if eq.get("n"):
            out.append(f"Trial {t['trial']}: {eq['n']} connection(s) met an empty delay queue; they waited at most "
                       f"{fmt(eq.get('max_s'))} s on the wire, {eq.get('over_one_period', 0)} beyond one release "
                       "period.")
        if a.get("unobserved"):
            out.append(f"Trial {t['trial']}: {a['unobserved']} connection(s) the model releases only after the session "
                       "ended (the generator had given up on them; the capture stops with the trial): not judged.")
        if a.get("connections") and not a.get("ok"):
            out.append(f"Trial {t['trial']}: {a.get('disagree')} of {a.get('connections')} connection(s) disagree "
                       f"with the model (worst {fmt(a.get('worst_error_s'))} s, connection {a.get('worst_conn')}).")
        for f in t.get("findings") or []:
            out.append(f"Trial {t['trial']}: finding — {f.get('finding')}: {f.get('detail')}")
    return out


def plots(run: RunDir, trials: list[dict[str, Any]], rows: list[dict[str, Any]], pdir: Path) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    fig, ax = plt.subplots(figsize=(8, 4.6))
    series = list(dict.fromkeys((r["mechanism"], r.get("setting") or "", r["protocol"]) for r in rows))
    for k, (m, s, p) in enumerate(series):
        rs = sorted((r for r in rows if (r["mechanism"], r.get("setting") or "", r["protocol"]) == (m, s, p)),
                    key=lambda r: r["benign_rate"])
        color = f"C{k}"
        for key, mark, alpha in (("delay_p50_s", "v", 0.5), ("delay_p95_s", "s", 0.7), ("delay_p99_s", "o", 1.0)):
            line = [(r["benign_rate"], r[key]) for r in rs if r.get(key) is not None]
            if line:
                ax.plot(*zip(*line, strict=True), mark + "-", color=color, alpha=alpha,
                        label=f"{m} {s} ({p}) {key[6:9]}")
        mp = [(r["benign_rate"], r["model_p99_s"]) for r in rs if r.get("model_p99_s") is not None]
        if mp:
            ax.plot(*zip(*mp, strict=True), "x", color=color, ms=10, label=f"{m} model p99")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("benign rate (new connections/s)")
    ax.set_ylabel("delay to the wire (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    out["benign-delay"] = _save(fig, pdir / "benign-delay.png", plt)
    pts: list[tuple[float, float, float]] = []
    for t in trials:
        f = (t.get("files") or {}).get("benign_log")
        path = run.path / "trials" / t["trial"] / "benign.csv"
        if f is None or not path.exists():
            continue
        with open(path, newline="") as fh:
            pts += [(float(r["model_wire_s"]), float(r["wire_s"]), t["rate"]) for r in csv.DictReader(fh)
                    if r.get("model_wire_s") and r.get("wire_s")]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 5))
        sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], s=10, cmap="viridis")
        hi = max(max(p[0], p[1]) for p in pts) or 1.0
        ax.plot([0, hi], [0, hi], ":", color="grey")
        fig.colorbar(sc, ax=ax, label="benign rate (/s)")
        ax.set_xlabel("model: delay to the wire (s)")
        ax.set_ylabel("measured: delay to the wire (s)")
        ax.grid(True, alpha=0.3)
        out["benign-model"] = _save(fig, pdir / "benign-model.png", plt)
    return out


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fp_html(head: list[str], body: list[list[str]]) -> str:
    if not head:
        return ""
    return ("<h2>False positives over hosts and time</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in body)
            + "</table><p>Hosts falsely blocked / hosts, and false blocks per host-hour of benign use, from each "
              "host's mechanism event log.</p>")


def build(run: RunDir, out_dir: Path | None = None, extra: tuple = ()) -> tuple[Path, Path]:
    """report.md and report.html of a benign run (`extra`: more (title, markdown lines, images) sections)."""
    man, trials = run.manifest(), run.trials()
    rows = run.summary() if (run.path / "summary.csv").exists() else []
    e = man["experiment"]
    dest = out_dir or run.path
    dest.mkdir(parents=True, exist_ok=True)
    images = plots(run, trials, rows, dest / "plots") if trials else {}
    pts = tradeoff.points(trials, rows)
    if tradeoff.settings_swept(pts):
        images["benign-tradeoff"] = tradeoff.plot(pts, dest / "plots" / "benign-tradeoff.png")
    head, body = table(rows)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(man.get("started", 0)))
    meta = [("experiment", f"{e['experiment']} ({e['kind']})"), ("lab", f"{man['lab']['name']} ({man['lab']['provider']})"),
            ("started", when), ("status", f"{run_status(man)} — {len(trials)} of {man.get('planned', '?')} trials"),
            ("benign workload", ", ".join(f"{k}: {v}" for k, v in (e.get("benign") or {}).items() if v is not None)),
            ("seed", str(man.get("seed"))), ("git", str((man.get("git") or {}).get("commit")))]
    ns = notes(trials)
    span = float((e.get("benign") or {}).get("duration_s") or 0.0)
    fp_md, fp_head, fp_body, fp_images = fpreport.section(trials, rows, span, dest / "plots", fmt)
    images |= fp_images
    md = [f"# The price of containment — {e['experiment']}", ""] + [f"- **{k}**: {v}" for k, v in meta]
    md += ["", "## Benign traffic: delay, drops and false blocks per benign rate", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]
    md += ["", "Delay: from each connection's scheduled time to its first SYN on the wire (the capture), over the "
               "connections that reached it. \"agrees\": every connection's delay within the stopping-time "
               "tolerance of the model's, and the model's block (if any) where the mechanism's came.", ""]
    md += fp_md
    if tradeoff.settings_swept(pts):
        th, tb = tradeoff.table(pts, fmt)
        md += ["## The trade-off: benign cost against the worm's stopping speed", "",
               "| " + " | ".join(th) + " |", "|" + "---|" * len(th)] + ["| " + " | ".join(r) + " |" for r in tb]
        md += ["", f"Benign columns measured on the wire; the worm's from the williamson model (not a worm trial): "
                   f"a TCP worm at {tradeoff.WORM_RATE:g} new destinations/s, from the paper's full working set "
                   "(the host's normal destinations) and from an empty one (its first destinations pass at once).",
               ""]
    md += ["## Notes", ""] + [f"- {n}" for n in ns] + ["", "## Plots", ""]
    md += [f"![{n}](plots/{p.name})\n\n*{CAPTIONS.get(n, n)}*\n" for n, p in images.items()]
    atomic_write_text(dest / "report.md", "\n".join(md) + "\n")
    trade = ""
    if tradeoff.settings_swept(pts):
        th, tb = tradeoff.table(pts, fmt)
        trade = ("<h2>The trade-off: benign cost against the worm's stopping speed</h2><table><tr>"
                 + "".join(f"<th>{html.escape(h)}</th>" for h in th) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in tb)
                 + "</table><p>Benign columns measured on the wire; the worm's from the williamson model.</p>")
    rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in body)
    imgs = "".join(f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(CAPTIONS.get(n, n))}'
                   "</figcaption></figure>" for n, p in images.items())
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>The price of containment — "
            f"{html.escape(e['experiment'])}</title><style>body{{font-family:system-ui,sans-serif;max-width:1100px;"
            "margin:2em auto}}table{{border-collapse:collapse;font-size:.9em}}td,th{{border:1px solid #ccc;"
            "padding:.3em .6em}}img{{width:100%}}</style></head><body>"
            f"<h1>The price of containment — {html.escape(e['experiment'])}</h1><dl>"
            + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in meta) + "</dl>"
            + f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{rows_html}</table>"
            + fp_html(fp_head, fp_body) + trade
            + "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in ns) + "</ul>"
            + f"<h2>Plots</h2>{imgs}</body></html>\n")
    atomic_write_text(dest / "report.html", page)
    return dest / "report.md", dest / "report.html"

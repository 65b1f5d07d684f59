"""The run report: report.md and a self-contained report.html with plots, rebuilt from a run directory alone.

The table is laid out like the paper's Table 1 (worm, scan rate, time to stop, attempts allowed out) with the
model's figures beside the measured ones, the 95 % confidence interval over the repeats, and the paper's
published figure beside every row it covers (results/paper.py); then a comparison with the paper, the
notes, the full configuration and tool versions from the manifest, links to the run's files, and the plots
with captions that say what they show (results/plots.py).
"""

from __future__ import annotations

import base64
import html
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from orchestrator.atomic import atomic_write_text
from orchestrator.experiment.rundir import RunDir, run_status, summarise
from orchestrator.results import mechreport, spreadreport
from orchestrator.results.plots import plots


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3f}" if 0 < abs(v) < 100 and not v.is_integer() else f"{v:.{digits}g}"
    return str(v)


def _content(run: RunDir) -> dict[str, Any]:
    man = run.manifest()
    trials = run.trials()
    rows = summarise(trials)
    e = man["experiment"]
    emulated = bool(man.get("emulated"))
    return {"man": man, "trials": trials, "rows": rows, "e": e, "emulated": emulated}


def tie_summary(trials: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, Any]]:
    """Per (protocol, rate): the span of the model's sets of outcomes over the repeats (earliest and latest
    block, fewest and most attempts out), how many trials had ties that could decide the outcome, and how
    many were decided by one (the measurement matched an ordering other than the strict prediction)."""
    out: dict[tuple[str, float], dict[str, Any]] = {}
    for t in trials:
        o = (t.get("model") or {}).get("orderings")
        if not o or t.get("status") not in ("ok", "timeout"):
            continue
        r = out.setdefault((t["protocol"], float(t["rate"])), {"stops": [], "never": False, "outs": [], "trials": 0,
                                                               "decisive": 0, "decided": 0, "window_s": []})
        r["trials"] += 1
        r["stops"] += [x["stop_s"] for x in o["outcomes"] if x["blocked"]]
        r["never"] |= any(not x["blocked"] for x in o["outcomes"])
        r["outs"] += [o["out_min"], o["out_max"]]
        r["decisive"] += o["decisive"] > 0
        r["decided"] += bool((t.get("agreement") or {}).get("tie_decided"))
        r["window_s"].append(o["window_s"])
    return out


def _span(lo: Any, hi: Any, open_end: bool = False) -> str:
    if lo is None:
        return ""
    high = "no block" if open_end else _fmt(hi)
    return "" if _fmt(lo) == high else f" ({_fmt(lo)}–{high})"


def _table(c: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    from orchestrator.results.paper import ci95, paper_cell, paper_for, row_values

    e = c["e"]
    worm = e["worm"].get("profile") or "test worm"
    ties = tie_summary(c["trials"])
    head = ["worm", "protocol", "scan rate (/s)", "achieved (/s)", "time to stop (s)", "95 % CI (s)",
            "model (s) (ties allow)", "attempts out", "model (ties allow)", "after block", "repeats",
            "agrees with the model", "decided by a tie", "paper"]
    body = []
    for r in c["rows"]:
        fig = paper_for(e["worm"].get("profile"), r["protocol"], float(r["rate"]))
        spread = f" ± {_fmt(r['stop_s_sd'])}" if r["stop_s_sd"] else ""
        ci = ci95(row_values(c["trials"], r["protocol"], float(r["rate"]), "stop_s"))
        tr = ties.get((r["protocol"], float(r["rate"])))
        stop_set = _span(min(tr["stops"]), max(tr["stops"]), tr["never"]) if tr and tr["stops"] else ""
        out_set = _span(min(tr["outs"]), max(tr["outs"])) if tr else ""
        measured = r["repeats"] - (r.get("errors") or 0)
        body.append([worm, r["protocol"], _fmt(r["rate"]), _fmt(r["achieved_rate"]),
                     (_fmt(r["stop_s"]) + spread) if r["stop_s"] is not None
                     else "not stopped" if measured else "no result (error)",
                     f"{_fmt(ci[0])}–{_fmt(ci[1])}" if ci else "–",
                     (_fmt(r["stop_s_model"]) if r["stop_s_model"] is not None
                      else "not stopped" if measured else "–") + stop_set,
                     _fmt(r["out_before_block"]), _fmt(r["out_before_block_model"]) + out_set,
                     _fmt(r["out_after_block"]), f"{r['ok']}/{r['repeats']}", "yes" if r["agree"] else "NO",
                     f"{tr['decided']}/{tr['trials']}" if tr else "–", paper_cell(fig)])
    return head, body


def _paper_section(c: dict[str, Any]) -> list[str]:
    """Each row the paper covers, measured against the paper's figure, and the setting difference that matters."""
    from orchestrator.results.paper import paper_for, within_paper

    e = c["e"]
    th = e.get("throttle") if isinstance(e.get("throttle"), dict) else {}
    placement = th.get("placement")
    out: list[str] = []
    for r in c["rows"]:
        fig = paper_for(e["worm"].get("profile"), r["protocol"], float(r["rate"]))
        if fig is None:
            continue
        ok = within_paper(fig, r["stop_s"], r["out_before_block"])
        got = "no stopping time" if r["stop_s"] is None else f"{_fmt(r['stop_s'])} s" + (
            f", {_fmt(r['out_before_block'])} out" if r["out_before_block"] is not None else "")
        verdict = "within the paper's figure" if ok else "outside the paper's figure" if ok is False else "–"
        out.append(f"{r['protocol'].upper()} at {_fmt(r['rate'])}/s: **{got}** here, the paper: {fig.stop}"
                   + (f", {fig.out}" if fig.out else "") + f" ({fig.source}) — {verdict}.")
    if not out:
        return ["The paper gives no figure for this run's rows (its Table 1 covers TCP: Nimda at ~200/s, and the "
                "test worm at 20 connections/s and faster; its UDP figures are not in the excerpt used here)."]
    if placement == "host":
        out.append("The setting that matters: here the throttle sits **in the infected host's own stack**, where "
                   "Linux does not retransmit a SYN the throttle holds, so only the worm's new attempts fill the "
                   "delay queue (100 entries at 20/s: 5.25 s with a full working set). The paper's module stood "
                   "**outside the guest's stack**, where the guest's SYN retransmissions joined the queue too and "
                   "filled it sooner (its \"< 5 s\"). The run that matches the paper's setting is `throttle: "
                   "{placement: wire}` (outside an unmodified host, the guest's retransmissions counted): TCP at "
                   "20/s stops in ~2.8 s there (README, \"Throttle placement\").")
    elif placement == "wire":
        out.append("This run matches the paper's setting: the throttle stands **outside an unmodified host** (the "
                   "wire placement), so the host's SYN retransmissions reach it and count as queue entries, as on "
                   "the paper's testbed.")
    elif placement == "gateway":
        out.append("Here the throttle is on the **gateway**, per source address, outside the infected host as in "
                   "the paper, which placed its module outside the guest's stack.")
    return out


def _config_section(man: dict[str, Any]) -> list[tuple[str, str]]:
    """The full configuration (worm, rates, repeats, timeout, mechanism parameters, state, seed) and the tool
    versions, from the manifest."""
    e = man["experiment"]
    w = e.get("worm") or {}
    th = e.get("throttle")
    rows = [("worm", ", ".join(f"{k}={v}" for k, v in w.items() if v is not None)),
            ("rates", ", ".join(f"{r:g}" for r in e.get("rates", [])) + " attempts/s" if e.get("rates") else ""),
            ("repeats", e.get("repeats")), ("timeout", f"{e['timeout_s']} s per trial" if "timeout_s" in e else ""),
            ("throttle", ", ".join(f"{k}={v}" for k, v in th.items()) if isinstance(th, dict) else th),
            ("state", e.get("state")), ("gateway_empty", e.get("gateway_empty")),
            ("seed", man.get("seed", e.get("seed"))), ("lab", f"{man['lab'].get('name')} "
             f"({man['lab'].get('provider')}, spec {str(man['lab'].get('spec_hash'))[:12]})"),
            ("experiment spec", str(man.get("spec_hash") or "")[:12])]
    rows += [(f"version: {k}", v) for k, v in sorted((man.get("versions") or {}).items())]
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def _files_section(run: RunDir, dest: Path, trials: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, link relative to the report) for the run's files and each trial's capture, logs and analysis."""
    def rel(p: Path) -> str:
        return os.path.relpath(p, dest)
    out = [(name, rel(run.path / name)) for name in ("summary.csv", "manifest.json", "trials.jsonl")
           if (run.path / name).exists()]
    for t in trials:
        for kind, f in sorted((t.get("files") or {}).items()):
            if f and (run.path / f).exists():
                out.append((f"{t['trial']}: {kind}", rel(run.path / f)))
        analysis = run.path / "trials" / t["trial"] / "analysis.json"
        if analysis.exists():
            out.append((f"{t['trial']}: analysis", rel(analysis)))
    return out


def _state_note(e: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    """The state the worm met, as the experiment asked for it and as the throttle's own log says it met it (its
    `state` line just before each trigger; its `config` line says how it started: fresh)."""
    asked = e["state"]
    why = ("the host's normal traffic filled its working set first, as on the paper's hosts" if asked == "full"
           else "an empty working set")
    met = [t["state_met"] for t in trials if t.get("state_met")]
    if not met:
        return f"State the worm met: **{asked}** ({why})."
    seen: dict[str, int] = {}
    for m in met:
        seen[m.get("state") or "?"] = seen.get(m.get("state") or "?", 0) + 1
    sizes = sorted({len(m.get("working_set") or []) for m in met})
    held = f"{'–'.join(map(str, sizes))} destination(s) in the working set"
    if set(seen) == {asked}:
        return (f"State the worm met: **{asked}** ({why}) — the throttle's own log agrees: its `state` line just "
                f"before each trigger says {asked} ({held}) in {len(met)} of {len(trials)} trials; it started "
                "fresh (its `config` line's `initial_state`), and the host's normal traffic filled it.")
    counts = ", ".join(f"{k} in {n}" for k, n in sorted(seen.items()))
    return (f"State asked for: **{asked}** ({why}); the throttle's `state` line just before the trigger says "
            f"**{counts}** of {len(met)} trials ({held}).")


def _notes(c: dict[str, Any]) -> list[str]:
    e, man = c["e"], c["man"]
    th = e.get("throttle")
    notes = []
    if isinstance(th, dict):
        notes.append(f"Throttle in the **{th['placement']}**: working set {th['working_set_size']}, delay-queue limit "
                     f"{th['delay_queue_limit']}, release period {th['release_period_s']} s, policy {th['policy']}.")
    notes.append(_state_note(e, c["trials"]))
    tol = man.get("tolerance") or {"stop_abs_s": 0.02, "stop_rel": 0.03}
    notes.append("The model is fed from the worm's own attempt log (and its schedule past the log's end) and the "
                 "sender's measured retransmission schedule, never from the throttle's decisions. Agreement: "
                 f"stopping time within max({tol['stop_abs_s'] * 1000:g} ms, {tol['stop_rel'] * 100:g} %), "
                 "attempts out ±1, and no worm attempt on the wire after the block.")
    if man.get("retransmit_why"):
        notes.append(f"The infected host's SYN retransmissions, as the model takes them: {man['retransmit_why']}.")
    if isinstance(th, dict) and th.get("placement") == "host":
        notes.append("In the host, Linux does not retransmit a SYN while the throttle holds it (measured), so "
                     "retransmissions do not grow the queue here; the paper's module, outside the guest's stack, "
                     "saw them.")
    if isinstance(th, dict) and th.get("placement") in ("gateway", "wire"):
        notes.append("The sniffer's mirror of the infected host's segment stands in front of this throttle: it "
                     "measures the worm's own rate on the wire and the stopping time; the attempts let out are "
                     "counted from the answers that came back (TCP, with the gateway answering scans of empty "
                     "addresses with RSTs; a VM sniffer's clock tied to the throttle's first), and shown as – where "
                     "they cannot be (UDP, whose ICMP errors the kernel rate-limits; a black-holing gateway).")
    ties = tie_summary(c["trials"])
    if ties:
        n = sum(r["trials"] for r in ties.values())
        decisive = sum(r["decisive"] for r in ties.values())
        decided = sum(r["decided"] for r in ties.values())
        windows = [w for r in ties.values() for w in r["window_s"]]
        notes.append(f"Ties at the release tick: an arrival closer to a release tick than the daemon's decision "
                     f"jitter (measured per trial from its own log, how late it released what was due: here a window "
                     f"of {min(windows) * 1e3:.2g}–{max(windows) * 1e3:.2g} ms) may be decided on either side of it. "
                     f"The model column is the strict prediction (the exact clock), with the span of what every "
                     f"ordering of the ties allows in brackets; a trial agrees if its measurement matches any of "
                     f"them. In {decisive} of {n} trial(s) the ties could decide the outcome; **{decided}** "
                     f"{'was' if decided == 1 else 'were'} decided by one (the measurement matched another "
                     f"ordering than the strict one).")
    unseen = sum(1 for t in c["trials"] if ((t.get("model") or {}).get("unseen_arrivals") or 0) > 0)
    if unseen:
        notes.append(f"In {unseen} trial(s) the scan hit the gateway's own addresses: the gateway takes those "
                     "packets for itself instead of forwarding them through its throttle, so the model leaves "
                     "them out.")
    notes.append("The paper's Nimda figure (0.25 s for 100 queue entries) implies about 400 attempts/s on the "
                 "wire, twice Nimda's nominal ~200 connections/s — which is why this report shows the achieved rate "
                 "measured, not only the configured one.")
    if c["emulated"]:
        notes.append("**Timings came from emulated guests** (QEMU software emulation: KVM was not usable here), "
                     "so the agreement tolerance is wider.")
    if (load := load_note(man, c["trials"])):
        notes.append(load)
    if (where := placement_note(man, c["trials"])):
        notes.append(where)
    bad = [t for t in c["trials"] if t.get("status") == "error" or not (t.get("agreement") or {}).get("ok", True)]
    for t in bad:
        why = t.get("reason") if t.get("status") == "error" else "; ".join((t.get("agreement") or {}).get("reasons", []))
        notes.append(f"Trial {t['trial']}: {t['status']} — {why}")
    return notes


def load_note(man: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    """The machine's load over the trials (each record's `load`), how many ran side by side (--parallel), and
    the trials redone or left flagged because their timing was disturbed ("" for records without a load)."""
    loads = [t["load"] for t in trials if isinstance(t.get("load"), dict)]
    if not loads:
        return ""
    busy = sorted(x["cpu_busy"] for x in loads if x.get("cpu_busy") is not None)
    par = man.get("parallel") or {}
    side = (f"{par['instances']} lab instances side by side ({', '.join(par['labs'])}), at most "
            f"{max(x.get('trials_running') or 1 for x in loads)} trials at once" if par else "one trial at a time")
    cpus = f"{loads[0].get('cpus')} CPUs " if loads[0].get("cpus") else "CPUs "
    text = f"Load: {side}; the {cpus}were busy"
    text += (f" {busy[len(busy) // 2] * 100:.0f} % (median over the trials), at most {busy[-1] * 100:.0f} %"
             if busy else " (not measured)")
    redone = [t for t in trials if t.get("redone")]
    flagged = [t["trial"] for t in trials if (t.get("timing") or {}).get("disturbed")]
    text += (f". {len(redone)} trial(s) redone because their timing was disturbed (throttle or worm late beyond "
             f"the tolerance)" if redone else ". No trial's timing was disturbed")
    if flagged:
        text += f"; still disturbed after the redos, flagged: {', '.join(flagged)}"
    return text + "."


def placement_note(man: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    """Where the trials ran on a libvirt lab — each hypervisor, its lab instances and how many trials each
    trial record says it ran (`--parallel` on `libvirt.uris`) — and the lab instances that were lost and why
    ("" for a namespace lab that lost none)."""
    par = man.get("parallel") or {}
    lab = man.get("lab") or {}
    text = ""
    if par.get("hypervisors"):
        on: dict[str, list[str]] = {}
        for name, uri in par["hypervisors"].items():
            on.setdefault(_hv(uri), []).append(name)
        ran = Counter(_hv(t["hypervisor"]) for t in trials if t.get("hypervisor"))
        every = list(dict.fromkeys([*on, *ran]))          # a reused instance may stand elsewhere than planned
        text = (f"Placement: {par['instances']} lab instances on {len(every)} hypervisor(s) — "
                + "; ".join(f"{uri}: {', '.join(on.get(uri, [])) or 'a reused instance'}, {ran[uri]} trial(s)"
                            for uri in every) + ".")
    elif lab.get("provider") == "libvirt" and (lab.get("options") or {}).get("uri"):
        text = f"Placement: every trial on {_hv(lab['options']['uri'])} (lab {lab.get('name')})."
    if par.get("lost"):
        text += (" " if text else "") + (f"Lost lab instance(s), whose trials the others ran: "
                                         f"{'; '.join(par['lost'])}.")
    return text


def _hv(uri: str) -> str:
    return uri.split("?", 1)[0]       # a hypervisor URI without its ?keyfile=…&known_hosts=… query


def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]


TRADE_TITLE = "The trade-off, both axes measured (benign traffic beside the worm)"
TRADE_PLOT = "benign-worm-tradeoff"


def _beside_section(rows: list[dict[str, Any]], dest: Path, images: dict[str, Path]
                    ) -> tuple[list[str], list[list[str]]] | None:
    """A run with benign traffic beside the worm: the trade-off table (and its plot into `images`)."""
    from orchestrator.results import tradeoff

    pts = tradeoff.measured_points(rows)
    if not pts:
        return None
    (dest / "plots").mkdir(parents=True, exist_ok=True)
    images[TRADE_PLOT] = tradeoff.measured_plot(pts, dest / "plots" / f"{TRADE_PLOT}.png")
    return tradeoff.measured_table(pts, _fmt)


def build_report(run: RunDir | str | Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write report.md, report.html and plots/ into the run directory, or into `out_dir` (made if need be)."""
    from orchestrator.results.plots import CAPTIONS

    run = run if isinstance(run, RunDir) else RunDir(run)
    if run.manifest()["experiment"].get("kind") == "benign":      # the price of containment (issue 17)
        from orchestrator.results import benignreport
        return benignreport.build(run, out_dir)
    if run.manifest()["experiment"].get("kind") == "spread":
        return spreadreport.build_spread_report(run, out_dir)
    c = _content(run)
    man, e = c["man"], c["e"]
    dest = out_dir or run.path
    dest.mkdir(parents=True, exist_ok=True)
    mechs = mechreport.mechanisms_of(man, c["rows"])
    if mechs:      # several mechanisms: Table 1 per mechanism, the comparison, one curve per mechanism
        wman, wtrials, wrows = mechreport.williamson_view(man, c["trials"], c["rows"])
        images = plots(run, wman, wtrials, wrows, dest) if c["trials"] else {}
        images |= mechreport.plots(dest / "plots", c["rows"], mechs) if c["trials"] else {}
        blocks = [(m, _table(c | {"rows": [r for r in c["rows"] if r.get("mechanism") == m],
                                  "trials": [t for t in c["trials"] if t.get("mechanism") == m]})) for m in mechs]
        compare = mechreport.comparison(c["rows"], mechs, _fmt)
        paper_c = c | {"e": wman["experiment"], "rows": wrows}
    else:
        images = plots(run, man, c["trials"], c["rows"], dest) if c["trials"] else {}
        blocks, compare, paper_c = [("", _table(c))], None, c
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(man.get("started", 0)))
    meta = [("experiment", f"{e['experiment']} ({e['kind']})"), ("lab", f"{man['lab']['name']} ({man['lab']['provider']})"),
            ("started", when), ("status", f"{run_status(man)} — {len(c['trials'])} of {man.get('planned', '?')} trials"),
            ("seed", str(man.get("seed"))), ("git", f"{(man.get('git') or {}).get('commit', '?')}"
                                             + (" (dirty)" if (man.get('git') or {}).get('dirty') else "")),
            ("machine", f"{man['machine'].get('hostname')}, {man['machine'].get('cpus')} CPUs, kernel "
                        f"{man['versions'].get('kernel')}")]
    notes = _notes(c)
    paper = _paper_section(paper_c)
    config = _config_section(man)
    files = _files_section(run, dest, c["trials"])
    trade = _beside_section(c["rows"], dest, images)
    caption = {n: CAPTIONS.get(n, n) for n in images}
    reps = sorted({r["repeats"] for r in c["rows"]})
    table_note = (f"{'–'.join(map(str, reps))} repeat(s) per row; time to stop is the mean ± the standard "
                  "deviation, with the 95 % confidence interval of the mean (Student t) where a row has several "
                  "repeats. \"agrees with the model\": every trial of the row matched the throttle's model.")

    md = [f"# Stopping speed — {e['experiment']}", ""]
    md += [f"- **{k}**: {v}" for k, v in meta]
    if compare:
        md += ["", "## The mechanisms compared, from the wire", ""] + _md_table(*compare)
    for m, (head, body) in blocks:
        md += ["", f"## Table 1 — stopping speed per scan rate{f' — {m}' if m else ''}", ""] + _md_table(head, body)
    if trade:
        md += ["", f"## {TRADE_TITLE}", ""] + _md_table(*trade)
    md += ["", table_note, "", "## Comparison with the paper", ""] + [f"- {x}" for x in paper]
    md += ["", "## Notes", ""] + [f"- {n}" for n in notes] + ["", "## Plots", ""]
    md += [f"![{name}](plots/{p.name})\n\n*{caption[name]}*\n" for name, p in images.items()]
    md += ["## Configuration and versions", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in config]
    md += ["", "## Files", ""] + [f"- [{k}]({v})" for k, v in files]
    md_path = dest / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")

    def esc(s: str) -> str:
        s = html.escape(s)
        while "**" in s:
            s = s.replace("**", "<b>", 1).replace("**", "</b>", 1)
        while s.count("`") >= 2:
            s = s.replace("`", "<code>", 1).replace("`", "</code>", 1)
        return s
    imgs = "".join(f'<figure><img alt="{html.escape(caption[n])}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(caption[n])}</figcaption>'
                   "</figure>" for n, p in images.items())
    kv = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in config)
    links = "".join(f'<li><a href="{html.escape(v)}">{html.escape(k)}</a></li>' for k, v in files)

    def table_html(head: list[str], body: list[list[str]]) -> str:
        rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in body)
        return f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{rows_html}</table>"
    tables = "".join(f"<h2>Table 1 — stopping speed per scan rate{html.escape(f' — {m}' if m else '')}</h2>"
                     + table_html(head, body) for m, (head, body) in blocks)
    if compare:
        tables = "<h2>The mechanisms compared, from the wire</h2>" + table_html(*compare) + tables
    if trade:
        tables += f"<h2>{html.escape(TRADE_TITLE)}</h2>" + table_html(*trade)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Stopping speed — {html.escape(e['experiment'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;font-size:.9em}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
th{{background:#f3f3f3}}td{{white-space:nowrap}}td:first-child,td:nth-child(2){{text-align:left}}figure{{margin:1em 0}}
img{{width:100%;max-width:1100px}}figcaption{{font-size:.9em;color:#444}}dt{{font-weight:bold;float:left;width:7em}}
dd{{margin-left:8em}}table.kv td,table.kv th{{text-align:left}}ul.files{{columns:2;font-size:.9em}}</style></head><body>
<h1>Stopping speed — {html.escape(e['experiment'])}</h1>
<dl>{''.join(f'<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>' for k, v in meta)}</dl>
{tables}
<p>{esc(table_note)}</p>
<h2>Comparison with the paper</h2><ul>{''.join(f'<li>{esc(x)}</li>' for x in paper)}</ul>
<h2>Notes</h2><ul>{''.join(f'<li>{esc(n)}</li>' for n in notes)}</ul>
<h2>Plots</h2>{imgs}
<h2>Configuration and versions</h2><table class="kv">{kv}</table>
<h2>Files</h2><ul class="files">{links}</ul></body></html>
"""
    html_path = dest / "report.html"
    atomic_write_text(html_path, page)
    return md_path, html_path

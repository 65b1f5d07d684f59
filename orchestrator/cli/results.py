"""The results verbs of `testbed`: report, results list|show|compare|prune, and the summary table a finished
run prints. Registered on the main app by orchestrator.cli (`register(app)`); each verb parses its arguments
and calls one core function."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import emit_json, handles_errors, out

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output (errors too, on stdout)")]


def register(app: typer.Typer) -> None:
    app.command()(handles_errors(report))
    results_app = typer.Typer(help="See and compare runs (the SQLite index, results/index.sqlite by default).",
                              no_args_is_help=True, rich_markup_mode=None)
    results_app.command("list")(handles_errors(results_list))
    results_app.command("show")(handles_errors(results_show))
    results_app.command("compare")(handles_errors(results_compare))
    results_app.command("prune")(handles_errors(results_prune))
    results_app.command("merge")(handles_errors(results_merge))
    app.add_typer(results_app, name="results")


def finish_run(rdir, junit: Path | None, as_json: bool = False) -> None:
    from rich import box
    from rich.table import Table

    from orchestrator.experiment.rundir import RunDir, run_status
    from orchestrator.results.regress import junit_xml

    run = RunDir(rdir.path)
    if junit:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(run))
    rows = run.summary()
    if as_json:
        man = run.manifest()
        emit_json({"run_id": man.get("run_id"), "run_dir": str(run.path), "status": run_status(man),
                   "report": str(run.path / "report.html"), "summary": rows})
        return
    if rows and "benign_rate" in rows[0] and "stop_s" not in rows[0]:   # a benign run: the price of containment (docs/benign.md)
        t = Table("mechanism", "setting", "rate/s", "conns", "p50 s", "p99 s", "model p99", "not ok", "false blocks",
                  "block at s", "agrees", title=f"benign traffic on the wire — {run.path}", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
        fp = any(r.get("hosts") not in (None, 1) for r in rows)     # several hosts: the false-positive rate
        if fp:
            t.add_column("FP hosts")
            t.add_column("FP /host-h")
        for r in rows:
            block = "–" if r["false_block_s"] is None else f"{r['false_block_s']:.4g} ({r['false_block_cause']})"
            more = [f"{r.get('false_block_hosts')}/{r.get('hosts')}" if r.get("hosts") else "–",
                    _n(r.get("fp_per_host_hour"))] if fp else []
            t.add_row(r["mechanism"] or "–", _initials(r["setting"]) or "–", f"{r['benign_rate']:g}", _n(r["connections"]),
                      _n(r["delay_p50_s"]), _n(r["delay_p99_s"]), _n(r["model_p99_s"]), _n(r["dropped"]),
                      _n(r["false_blocks"]), block,
                      "–" if r["agree"] is None else "yes" if r["agree"] else "[red]NO[/]", *more)
        out.print(t)
        out.print(f"summary: {run.path / 'summary.csv'}\nreport: {run.path / 'report.html'}")
        return
    if rows and rows[0].get("benign_connections") is not None:   # benign traffic beside the worm: both axes
        from orchestrator.results.tradeoff import measured_points, measured_table
        head, body = measured_table(measured_points(rows), _n)
        head = [h.replace("benign ", "b. ").replace(" (/s)", "/s") for h in head]
        out.print(_rows(Table(*head, title=f"stopping speed and benign cost, measured — {run.path}",
                              box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False),
                        [[_initials(x) if i == 1 and "=" in x else x for i, x in enumerate(b)] for b in body]))
        out.print(f"summary: {run.path / 'summary.csv'}\nreport: {run.path / 'report.html'}")
        return
    if (run.manifest().get("experiment") or {}).get("kind") == "spread":     # epidemic figures (docs/spread.md)
        from orchestrator.results.spreadreport import compact as spread_table
        head, body = spread_table(rows)
        out.print(_rows(Table(*head, title=f"worm spread — {run.path}", box=box.SIMPLE_HEAD, show_edge=False), body))
        out.print(f"report: {run.path / 'report.html'}")
        return
    if (run.manifest().get("experiment") or {}).get("mechanisms"):      # several mechanisms, from the wire
        t = Table("mechanism", "protocol", "rate/s", "contained", "contained s", "out", "wire /s", "agrees",
                  title=f"containment from the wire — {run.path}", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False)
        for r in rows:
            t.add_row(r["mechanism"] or "–", r["protocol"], f"{r['rate']:g}", f"{r['contained'] or 0}/{r['repeats']}",
                      _n(r["contained_s"]), _n(r["out_before_contained"]), _n(r["wire_rate"]),
                      "yes" if r["agree"] else "[red]NO[/]")
        out.print(t)
        out.print(f"report: {run.path / 'report.html'}")
        return
    t = Table("protocol", "rate/s", "achieved/s", "stop s", "model s", "out", "model", "after", "agrees",
              title=f"stopping speed — {run.path}",
              box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)     # fits 80 columns with whole headers
    for r in rows:
        t.add_row(r["protocol"], f"{r['rate']:g}", _n(r["achieved_rate"]), _n(r["stop_s"]), _n(r["stop_s_model"]),
                  _n(r["out_before_block"]), _n(r["out_before_block_model"]), _n(r["out_after_block"]),
                  "yes" if r["agree"] else "[red]NO[/]")
    out.print(t)
    out.print(f"report: {run.path / 'report.html'}")


def _initials(setting: str | None) -> str:
    """`working_set_size=5 release_period_s=1` as `wss=5 rps=1`, to fit the table (the summary has it whole)."""
    return " ".join(f"{''.join(w[0] for w in k.split('_') if w)}={v}" for k, _, v in
                    (part.partition("=") for part in (setting or "").split()))


def _rows(t, body):
    for b in body:
        t.add_row(*b)
    return t


def _n(v) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


IndexOpt = Annotated[Path, typer.Option("--index", help="the SQLite index of runs")]


def results_list(index: IndexOpt = Path("results/index.sqlite"),
                 as_json: JsonOpt = False):
    """Every run in the index, newest first; a run whose directory is gone is marked so (`gone` in --json).

    Examples:  testbed results list  ·  testbed results list --json
    """
    from rich.table import Table

    from orchestrator.results.index import Index

    idx = Index(index)
    runs = idx.runs()
    idx.close()
    if as_json:
        print(json.dumps(runs, indent=2))
        return
    t = Table("run", "experiment", "kind", "started", "status", "trials ok", "git", "path")
    for r in runs:
        t.add_row(r["run_id"], r["experiment"], r["kind"],
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"] or 0)), r["status"],
                  f"{r['ok']}/{r['trials']}", (r["git_commit"] or "")[:10],
                  f"[red]gone:[/] {r['path']}" if r["gone"] else r["path"])
    out.print(t if runs else f"no runs in {index}")
    gone = sum(r["gone"] for r in runs)
    if gone:
        out.print(f"{gone} of {len(runs)} runs point at a directory that no longer exists (gone); "
                  f"`testbed results prune --index {index}` forgets them", highlight=False)


def results_merge(dirs: Annotated[list[Path], typer.Argument(help="the shard run directories (testbed run --shard I/N)")],
                  out_dir: Annotated[Path, typer.Option("--out", help="the merged run directory (new)")],
                  index: IndexOpt = Path("results/index.sqlite"),
                  junit: Annotated[Path | None, typer.Option(help="write the merged run's JUnit report")] = None,
                  as_json: JsonOpt = False):
    """Join the shards of one sweep into one run directory, reported and indexed as the unsharded run.

    Refused (exit 2) for shards of different experiment files, lab files, code versions, plans or shard counts,
    and when a trial is missing (a shard not given, or not finished) or doubled — the message names them.

    Examples:  testbed results merge shard-1 shard-2 --out results/night  ·  testbed results merge shards/* --out M
    """
    from orchestrator.results.merge import merge
    from orchestrator.results.publish import Publisher

    rdir = merge(dirs, out_dir)
    Publisher(index).finished(rdir)
    if not as_json:
        out.print(f"merged {len(dirs)} shard(s), {len(rdir.trials())} trials, into {rdir.path}", highlight=False)
    finish_run(rdir, junit, as_json)


def results_prune(index: IndexOpt = Path("results/index.sqlite"),
                  dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would be forgotten")] = False,
                  as_json: Annotated[bool, typer.Option("--json")] = False):
    """Forget the runs whose directory is gone (their trials and summaries too); the run directories that
    exist are left alone."""
    from orchestrator.results.index import Index

    idx = Index(index)
    gone = idx.prune(dry_run=dry_run)
    idx.close()
    if as_json:
        print(json.dumps({"dry_run": dry_run, "forgotten": [{k: r[k] for k in ("run_id", "experiment", "path")}
                                                             for r in gone]}, indent=2))
        return
    verb = "would forget" if dry_run else "forgot"
    for r in gone:
        out.print(f"{verb} {r['run_id']} ({r['experiment']}): {r['path']} is gone", highlight=False)
    out.print(f"{verb} {len(gone)} run(s) whose directory is gone" if gone
              else f"nothing to forget: every run in {index} has its directory", highlight=False)


def results_show(run: Annotated[str, typer.Argument(help="run id (or prefix), run directory, or its name")],
                 index: IndexOpt = Path("results/index.sqlite"),
                 as_json: JsonOpt = False):
    """One run's summary: stopping speed per protocol and rate, measured and predicted.

    Examples:  testbed results show demo-sweep-20261201  ·  testbed results show results/demo-20261201-190105
    """
    from orchestrator.experiment.rundir import died_note, run_status
    from orchestrator.results.index import Index

    idx = Index(index)
    rd = idx.find(run)
    idx.close()
    man = rd.manifest()
    status = run_status(man)
    if as_json:
        print(json.dumps({"manifest": man, "status": status, "summary": rd.summary()}, indent=2, default=str))
        return
    finish_run(rd, None)
    if status != "complete":
        out.print(f"status: {status}" + (f" — {died_note(man)}" if status == "died" else "")
                  + f" ({man.get('trials', len(rd.trials()))} of {man.get('planned', '?')} trials recorded)",
                  highlight=False)
    if status in ("died", "interrupted"):
        out.print(f"continue it with: testbed run {man.get('source')} --resume {rd.path}", highlight=False)


def results_compare(base: Annotated[str, typer.Argument(help="the reference run (id, prefix or directory)")],
                    new: Annotated[str, typer.Argument(help="the run to judge")],
                    tolerance: Annotated[float, typer.Option(help="relative tolerance on stopping time and "
                                                                  "attempts out (0.10 = 10 %)")] = 0.10,
                    fail_on_regression: Annotated[bool, typer.Option(
                        "--fail-on-regression", help="exit 1 when anything got worse beyond the tolerance")] = False,
                    index: IndexOpt = Path("results/index.sqlite"),
                    report_dir: Annotated[Path | None, typer.Option(
                        "--report", help="also write a side-by-side report here: compare.md and compare.html "
                                         "with both runs' curves on one plot")] = None,
                    as_json: JsonOpt = False):
    """Compare two runs, per protocol and rate: stopping time, attempts out, model agreement, leaks.

    Examples:  testbed results compare nightly-20261130 nightly-20261201 --fail-on-regression  ·
    testbed results compare BASE NEW --report /tmp/cmp (then open /tmp/cmp/compare.html)
    """
    from rich.table import Table

    from orchestrator.results.index import Index
    from orchestrator.results.regress import compare

    if tolerance < 0:
        raise typer.BadParameter("--tolerance must be ≥ 0")
    idx = Index(index)
    b, n = idx.find(base), idx.find(new)
    idx.close()
    rows = compare(b, n, tolerance=tolerance)
    regressions = [r for r in rows if r.verdict == "regression"]
    pages = None
    if report_dir is not None:
        from orchestrator.results.compare_report import write_compare_report
        pages = write_compare_report(b, n, rows, tolerance, report_dir)
    if as_json:
        print(json.dumps({"base": str(b.path), "new": str(n.path), "tolerance": tolerance,
                          "regressions": len(regressions), "rows": [r.to_dict() for r in rows],
                          "report": str(pages[1]) if pages else None}, indent=2))
    else:
        t = Table("protocol", "rate/s", "stop s (base → new)", "out (base → new)", "verdict", "why",
                  title=f"{b.path.name} → {n.path.name} (tolerance {tolerance:.0%})")
        for r in rows:
            colour = {"regression": "red", "improved": "green"}.get(r.verdict, "white")
            t.add_row(r.protocol, f"{r.rate:g}", f"{_n(r.base.get('stop_s'))} → {_n(r.new.get('stop_s'))}",
                      f"{_n(r.base.get('out_before_block'))} → {_n(r.new.get('out_before_block'))}",
                      f"[{colour}]{r.verdict}[/]", "; ".join(r.reasons))
        out.print(t)
        out.print(f"{len(regressions)} regression(s)")
        if pages:
            out.print(f"side-by-side report: {pages[1]} (and {pages[0].name})", highlight=False)
    if fail_on_regression and regressions:
        raise typer.Exit(1)


def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
           out_dir: Annotated[Path | None, typer.Option(
               "--out", help="write report.md, report.html and plots/ here instead of into the run directory")] = None,
           as_json: JsonOpt = False):
    """Rebuild report.md and report.html (with plots) from a run directory's files alone.

    Examples:  testbed report results/demo-20261201-190105  ·  testbed report results/RUN --out /tmp/paper
    """
    from orchestrator.experiment.rundir import RunDir
    from orchestrator.results.report import build_report

    md, page = build_report(RunDir(run_dir), out_dir)
    if as_json:
        emit_json({"markdown": str(md), "html": str(page), "plots": str(md.parent / "plots")})
        return
    out.print(f"wrote {md} and {page}", highlight=False)

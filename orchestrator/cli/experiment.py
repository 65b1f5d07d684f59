"""The experiment verb of `testbed`: run (build the lab, provision, sweep, report), with a progress bar of the
sweep. Registered on the main app by orchestrator.cli (`register(app)`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import err, handles_errors
from orchestrator.cli.results import finish_run
from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.experiment.record import TrialRecord


def register(app: typer.Typer) -> None:
    app.command(name="run")(handles_errors(run_))


class _SweepBar:
    """Trials done, the current protocol and rate, elapsed and expected time."""

    def __init__(self, total: int, done: int, est_s: float):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("trials"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                          console=err.real, disable=not err.is_terminal)
        self.p.start()
        self.trials = self.p.add_task("sweep", total=total, completed=done)
        self.time = self.p.add_task("time", total=max(est_s, 1.0), visible=False)

    def trial(self, t) -> None:
        self.p.update(self.trials, description=f"{t.protocol} {t.rate:g}/s #{t.repeat}")

    def done(self, t, rec: TrialRecord, est_s: float) -> None:
        self.p.advance(self.trials)
        self.p.advance(self.time, est_s)
        m, ev = rec.measured, rec.evaluation
        stop = f"stopped in {m['stop_s']:.3f} s" if m.get("stop_s") is not None else rec.reason or ""
        agree = ev.agreement.get("ok") if ev else None
        if (ev is None or ev.model is None) and rec.status == "ok":      # a baseline: no throttle, no model
            verdict = f" · {m.get('wire_attempts')} attempts on the wire at {m.get('achieved_rate') or 0:.1f}/s"
        else:
            verdict = "" if agree is None else " · agrees with the model" if agree else " · DISAGREES with the model"
        err.print(f"  {t.id}: {rec.status} {stop}{verdict}", highlight=False)

    def close(self) -> None:
        self.p.stop()


def run_(file: Annotated[Path, typer.Argument(help="experiment file (labs/*.yaml with 'experiment:')")],
         rates: Annotated[str | None, typer.Option(help="comma-separated scan rates, overriding the file's")] = None,
         repeat: Annotated[int | None, typer.Option(help="repeats per rate, overriding the file's")] = None,
         out_dir: Annotated[Path | None, typer.Option("--out", help="run directory (default results/<run id>)")] = None,
         keep: Annotated[bool, typer.Option(help="leave the lab up afterwards")] = False,
         resume: Annotated[Path | None, typer.Option(help="continue an interrupted run in this directory")] = None,
         junit: Annotated[Path | None, typer.Option(help="write one JUnit test case per protocol and rate")] = None,
         index: Annotated[Path, typer.Option(help="the SQLite index of runs")] = Path("results/index.sqlite"),
         as_json: Annotated[bool, typer.Option("--json", help="print the run's summary as JSON on stdout (progress "
                                                              "stays on stderr; errors are JSON too)")] = False):
    """Build the lab, provision it, sweep the scan rates and report stopping speed beside the model.

    A lab file is refused with a pointer to `testbed up`; check a file first with `testbed validate`.

    Examples:  testbed run labs/demo-sweep.yaml  ·  testbed run labs/demo-sweep.yaml --rates 5,20 --repeat 3 --keep
    ·  testbed run labs/demo-sweep.yaml --resume results/demo-sweep-20261201-190105-ab12
    """
    from orchestrator.experiment.runner import RunOptions, run_experiment
    from orchestrator.results.publish import Publisher

    rate_list = None
    if rates is not None:          # checked like a file's rates (0 < rate ≤ 20000), as is --repeat
        try:
            rate_list = [float(x) for x in rates.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--rates takes numbers separated by commas, not {rates!r}") from None
    pub = Publisher(index)
    rdir = run_experiment(file, RunOptions(rates=rate_list, repeat=repeat, out=out_dir, keep=keep, resume=resume,
                                           console=err, progress=_SweepBar, on_open=pub.opened,
                                           on_finish=pub.finished))
    finish_run(rdir, junit, as_json)

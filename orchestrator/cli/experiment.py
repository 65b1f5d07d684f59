"""The experiment verb of `testbed`: run (build the lab, provision, sweep, report), with the sweep's progress
(cli/progress.py). Registered on the main app by orchestrator.cli (`register(app)`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import err, handles_errors
from orchestrator.cli.results import finish_run
from orchestrator.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command(name="run")(handles_errors(run_))
    app.command(name="mechanisms")(handles_errors(mechanisms_))


def mechanisms_(as_json: Annotated[bool, typer.Option("--json", help="the registry as JSON")] = False):
    """The containment mechanisms an experiment can name: parameters (default, type, range), placements,
    daemon, event log, model, role. A user's own plugs in with a `custom:` block (docs/mechanisms.md)."""
    import json

    import mechanisms
    if as_json:
        print(json.dumps(mechanisms.describe(), indent=2))
    else:
        print(mechanisms.text())


def run_(file: Annotated[Path, typer.Argument(help="experiment file (labs/*.yaml with 'experiment:')")],
         rates: Annotated[str | None, typer.Option(help="comma-separated scan rates, overriding the file's")] = None,
         repeat: Annotated[int | None, typer.Option(help="repeats per rate, overriding the file's")] = None,
         out_dir: Annotated[Path | None, typer.Option("--out", help="run directory (default results/<run id>)")] = None,
         keep: Annotated[bool, typer.Option(help="leave the lab up afterwards")] = False,
         resume: Annotated[Path | None, typer.Option(help="continue an interrupted run in this directory")] = None,
         shard: Annotated[str | None, typer.Option(
             help="I/N: run only this machine's share I of N of the trials (same plan, seeds and hash as the "
                  "whole); join the shards with `testbed results merge`")] = None,
         parallel: Annotated[str, typer.Option(
             help="K: run the trials on K copies of the lab side by side (NAME, NAME-2, …), longest first; "
                  "1: one after another; auto: from the machine's CPUs and memory (4 per CPU, 512 MiB each, "
                  "at most 16; 1 on libvirt). Each trial's load is recorded and a disturbed one redone "
                  "(docs/parallel.md)")] = "auto",
         name: Annotated[str | None, typer.Option(
             help="the lab's name instead of the lab file's (its instances NAME-2, … under --parallel)")] = None,
         junit: Annotated[Path | None, typer.Option(help="write one JUnit test case per protocol and rate")] = None,
         index: Annotated[Path, typer.Option(help="the SQLite index of runs")] = Path("results/index.sqlite"),
         as_json: Annotated[bool, typer.Option("--json", help="print the run's summary as JSON on stdout (progress "
                                                              "stays on stderr; errors are JSON too)")] = False):
    """Build the lab, provision it, sweep the scan rates and report stopping speed beside the model.

    A lab file is refused with a pointer to `testbed up`; check a file first with `testbed validate`.

    Examples:  testbed run labs/demo-sweep.yaml  ·  testbed run labs/demo-sweep.yaml --rates 5,20 --repeat 3 --keep
    ·  testbed run labs/demo-sweep.yaml --resume results/demo-sweep-20261201-190105-ab12
    ·  testbed run labs/paper-sweep.yaml --shard 2/4 --out shard-2 (docs/nightly.md: shards on CI runners)
    ·  testbed run labs/paper-sweep.yaml --parallel 8 --name sweep-a (docs/parallel.md)
    """
    from orchestrator.cli.progress import SweepBar
    from orchestrator.experiment.runner import RunOptions, run_experiment
    from orchestrator.results.publish import Publisher

    rate_list = None
    if rates is not None:          # checked like a file's rates (0 < rate ≤ 20000), as is --repeat
        try:
            rate_list = [float(x) for x in rates.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--rates takes numbers separated by commas, not {rates!r}") from None
    from orchestrator.experiment.pool import parse_parallel
    from orchestrator.experiment.schedule import parse_shard
    k = parse_parallel(parallel)
    if name is not None:
        from orchestrator.providers.state import StateStore
        StateStore().lab_dir(name)                    # a lab name, or a usage error that says what one is
    pub = Publisher(index)
    rdir = run_experiment(file, RunOptions(rates=rate_list, repeat=repeat, out=out_dir, keep=keep, resume=resume,
                                           shard=parse_shard(shard) if shard else None, parallel=k, name=name,
                                           console=err, progress=SweepBar, on_open=pub.opened,
                                           on_finish=pub.finished))
    finish_run(rdir, junit, as_json)

"""The `testbed` command: thin typer verbs, each parsing its arguments and calling one core function; one
module per verb group (lab, analyse, experiment, results, vm), each registering its verbs with `register(app)`.

A user's mistake is a message and an exit code (one table for every verb: common.EXIT_CODES, shown by
`testbed --help`), never a traceback; an unexpected exception is one line too, and `--debug` shows its
traceback (common.py). Every verb takes `-h`; every verb with output takes `--json`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli import analyse, common, experiment, lab, results, vm

HELP = common.HELP_CONTEXT

app = typer.Typer(
    help="worm-testbed: build isolated labs, provision them, let a benign test worm loose, and measure how "
         "fast a containment mechanism (the Williamson virus throttle, or yours) stops it.\n\n"
         "Start with: testbed validate labs/demo-sweep.yaml, then testbed run labs/demo-sweep.yaml. "
         "Each verb's -h has examples.",
    epilog="Exit codes (every verb): " + "; ".join(f"{c} {w.split(':')[0]}" for c, w in common.EXIT_CODES.items())
           + ". `testbed exec` passes the command's own code through.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, context_settings=HELP,
    rich_markup_mode=None,      # click's plain help: typer's rich help imports rich's markdown, ~0.1 s a call
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            v = version("worm-testbed")
        except PackageNotFoundError:
            v = "unknown (not installed)"
        print(f"worm-testbed {v}")
        raise typer.Exit(0)


@app.callback()
def _options(debug: Annotated[bool, typer.Option(
        "--debug", help="show the traceback of an error (also accepted after the verb; or TESTBED_DEBUG=1)")] = False,
        version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                              help="print the version and exit")] = False):
    if debug:
        common.set_debug(True)


def main() -> int:
    return common.main(app)


for group in (lab, analyse, experiment, results, vm):      # one registration style: each group's register(app)
    group.register(app)

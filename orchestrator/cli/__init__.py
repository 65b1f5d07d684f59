"""The `testbed` command: thin typer verbs, each parsing its arguments and calling one core function; one
module per verb group (lab, analyse, experiment, results, vm), each registering its verbs with `register(app)`.

A user's mistake is a message and an exit code (2 for bad input), never a traceback; an unexpected exception
is one line too, and `--debug` shows its traceback (common.py).
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli import analyse, common, experiment, lab, results, vm

app = typer.Typer(
    help="worm-testbed: build isolated labs, provision them, let a benign test worm loose, and measure how "
         "fast a containment mechanism (the Williamson virus throttle, or yours) stops it.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,      # click's plain help: typer's rich help imports rich's markdown, ~0.1 s a call
)


@app.callback()
def _options(debug: Annotated[bool, typer.Option(
        "--debug", help="show the traceback of an error (also accepted after the verb; or TESTBED_DEBUG=1)")] = False):
    if debug:
        common.set_debug(True)


def main() -> int:
    return common.main(app)


for group in (lab, analyse, experiment, results, vm):      # one registration style: each group's register(app)
    group.register(app)

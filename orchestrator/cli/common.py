"""What every `testbed` verb shares: the two consoles (`out` for results, `err` for errors and progress), a
progress bar for long work (`Bar`), and how a verb ends on an error: one line on stderr (and the error's hint), the error's exit code
(EXIT_CODES), and no traceback unless asked for with `--debug` (or TESTBED_DEBUG=1).

`handles_errors` wraps each verb; `report` prints one error (as text, or as one JSON object) and returns its
exit code, for verbs that report errors themselves. A `TestbedError` is a failure we anticipated and can
explain; any other exception is a bug, and still one line — its type, its message and a pointer to
`--debug` — with exit code 1. With `--json` anywhere on the command line an error — a verb's, or a usage
error of the command line itself — is one JSON object on stdout instead: {"error", "hint", "exit_code"}.
A reader that goes away (`testbed schema | head`) is no error: the verb stops quietly with 141,
the exit code of a command a shell's SIGPIPE ended.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

import typer
from typer.exceptions import TyperException

from orchestrator.errors import TestbedError

try:        # typer < 0.29 raises click's own usage errors; 0.29 vendors click, its errors are TyperExceptions
    from click.exceptions import ClickException
    # click's and typer's usage errors share format_message, exit_code and show, but no base class that says so
    USAGE_ERRORS: tuple[type[Any], ...] = (ClickException, TyperException)
except ImportError:                                                       # pragma: no cover
    USAGE_ERRORS = (TyperException,)

# The one table of exit codes, for every verb (README, `testbed --help`).
EXIT_CODES = {
    0: "ok",
    1: "a failure: something ran and went wrong (a leak found, a regression, a provider or SSH failure, a bug)",
    2: "bad input or usage: a lab or experiment file, an option, an argument (nothing was created)",
    3: "not found: no lab, run or host of that name here (down, status, exec, check, results …)",
    130: "interrupted (Ctrl-C)",
}
HELP_CONTEXT = {"help_option_names": ["-h", "--help"]}


if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A rich Console made on first use: `testbed --help` never imports rich's console (the verbs are
    listed without it, and a command line that starts at once is one that imports only what it needs)."""

    def __init__(self, **kw: Any):
        self._kw = kw
        self._real: Console | None = None

    @property
    def real(self) -> Console:
        if self._real is None:
            from rich.console import Console
            self._real = Console(**self._kw)
        return self._real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


out = LazyConsole(soft_wrap=True)      # plain lines stay whole (grep-able); tables still fit the terminal
err = LazyConsole(stderr=True, soft_wrap=True)
_debug = os.environ.get("TESTBED_DEBUG") == "1"


def set_debug(on: bool) -> None:
    global _debug
    _debug = on


def debugging() -> bool:
    return _debug


def describe(exc: BaseException) -> tuple[str, str | None, int]:
    """(message, hint, exit code) of an exception."""
    if isinstance(exc, TestbedError):
        return exc.message, exc.hint, exc.exit_code
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:300] + "…"
    return (f"unexpected {type(exc).__name__}{': ' + text if text else ''} — a bug in worm-testbed; run it "
            f"again with --debug for the traceback"), None, 1


def report(exc: BaseException, console: Console | LazyConsole = err, *, as_json: bool = False) -> int:
    """Print `exc` (with its traceback first under --debug) and return the exit code it means."""
    from rich.text import Text

    if _debug:
        traceback.print_exception(exc, file=sys.stderr)
    message, hint, code = describe(exc)
    if as_json:
        console.out(json.dumps({"error": message, "hint": hint, "exit_code": code}), highlight=False)
        return code
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    if hint:
        console.print(Text.assemble(("hint:", "yellow"), " ", hint), highlight=False)
    return code


READER_GONE = 141      # 128 + SIGPIPE: what `yes | head` leaves for yes


def reader_gone() -> int:
    """stdout's reader has closed the pipe: point stdout at /dev/null (so the interpreter's last flush does not
    fail again at exit) and return the exit code that says so, with nothing on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return READER_GONE


def handles_errors(fn):
    """Wrap a typer verb: its errors become `report`'s line (JSON on stdout when the verb's `as_json` is set)
    and exit code; Ctrl-C exits 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise                   # an exit code chosen by the verb
        except USAGE_ERRORS as exc:         # typer.BadParameter raised by the verb: usage, exit 2
            if not as_json:
                raise
            _json_error(exc.format_message(), exc.exit_code)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            raise typer.Exit(reader_gone()) from None
        except Exception as exc:
            raise typer.Exit(report(exc, out if as_json else err, as_json=as_json)) from None
    return wrapper


def _json_error(message: str, code: int, hint: str | None = None) -> None:
    out.out(json.dumps({"error": message, "hint": hint, "exit_code": code}), highlight=False)


def emit_json(data) -> None:
    """A verb's --json result: one JSON document on stdout."""
    print(json.dumps(data, indent=2, default=str))


def _show_flags_without_a_type() -> None:
    """typer's help writes `<bool>` beside every flag (`--keep / --no-keep <bool>`): say nothing there."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)       # typer 0.29's rich help; older: none
    if shown is None or getattr(shown, "_quiet_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)
    setattr(display_type_rich, "_quiet_flags", True)        # noqa: B010 - typer < 0.29 has no such method:
    setattr(TyperOption, "display_type_rich", display_type_rich)  # noqa: B010 - setattr says so to the checker


_show_flags_without_a_type()


def main(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run `app` on argv: `--debug` is taken anywhere before a `--`; anything that escapes a verb (a callback,
    a verb registered without `handles_errors`) is still one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[:cut]:
        set_debug(True)
        argv = [a for a in argv[:cut] if a != "--debug"] + argv[cut:]
    as_json = "--json" in argv[:cut]
    try:
        try:
            code = app(args=argv, standalone_mode=False)
        finally:
            sys.stdout.flush()          # here, not at exit: a reader gone by now is a BrokenPipeError we catch
    except BrokenPipeError:
        return reader_gone()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("interrupted")
        return 130
    except USAGE_ERRORS as exc:         # usage: an unknown option, a missing argument, a bad value (exit 2)
        if as_json:
            _json_error(exc.format_message(), exc.exit_code)
        else:
            exc.show()                  # every one typer raises here can
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:
        return report(exc, out if as_json else err, as_json=as_json)
    return code if isinstance(code, int) else 0


class Bar:
    """Progress for long work on stderr (silent, and rich's progress not even imported, when stderr is not a
    terminal)."""

    def __init__(self, what: str):
        self.what = what
        self.progress: Any = None
        self.task: Any = None
        if err.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     TextColumn("{task.fields[step]}"), TimeElapsedColumn(), console=err.real,
                                     transient=True)

    def __enter__(self) -> Bar:
        if self.progress is not None:
            self.progress.__enter__()
            self.task = self.progress.add_task(self.what, total=1, step="")
        return self

    def __call__(self, step: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total, step=step)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

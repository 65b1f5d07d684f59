"""The analysis package's own exceptions (all `TestbedError`s, so CLI verbs print them without a traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import TestbedError


class CaptureReadError(TestbedError):
    """A capture file cannot be analysed at all: missing, empty, not pcap/pcapng, or only unsupported link types.

    A capture that is damaged part-way is *not* this error: what can be read is returned, flagged partial.
    """

    exit_code = 2


class LogReadError(TestbedError):
    """An event log file cannot be opened or read (invalid lines inside a readable log are counted, not raised)."""

    exit_code = 2


@contextmanager
def reading(path: Path, error: type[TestbedError], kind: str) -> Iterator[None]:
    """Turn the reasons the OS gives for not reading `path` into `error`, naming the file (kind: what it should be)."""
    try:
        yield
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {kind}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None

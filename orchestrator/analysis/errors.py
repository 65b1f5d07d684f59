"""The analysis package's own exceptions (all `TestbedError`s, so CLI verbs print them without a traceback)."""

from __future__ import annotations

from orchestrator.errors import TestbedError


class CaptureReadError(TestbedError):
    """A capture file cannot be analysed at all: missing, empty, not pcap/pcapng, or only unsupported link types.

    A capture that is damaged part-way is *not* this error: what can be read is returned, flagged partial.
    """

    exit_code = 2


class LogReadError(TestbedError):
    """An event log file cannot be opened or read (invalid lines inside a readable log are counted, not raised)."""

    exit_code = 2

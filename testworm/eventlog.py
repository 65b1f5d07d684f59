"""JSON-lines event logs as docs/event-logs.md specifies: one object per line, `event`, `t_mono`, `t_wall` first.

Lines are buffered only within one turn of the scan loop and written (one write, then flush) before the loop
sleeps again, so a killed process leaves every line it finished readable. Thread-safe: the infection worker
writes `infect` lines beside the scan loop's `attempt` lines.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, TextIO

_mono, _wall = time.monotonic, time.time


class EventLog:
    def __init__(self, path: str):
        self.path = path
        if path == "-":
            self._fh: TextIO = sys.stdout
            self._owned = False
        else:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            self._fh = open(path, "w", encoding="utf-8", buffering=1 << 16)
            self._owned = True
        self._buf: list[str] = []
        self._lock = threading.Lock()
        self.closed = False

    def event(self, event: str, **fields: Any) -> None:
        """Write one event now (and everything buffered before it)."""
        rec = {"event": event, "t_mono": _mono(), "t_wall": _wall(), **fields}
        line = json.dumps(rec, separators=(", ", ": ")) + "\n"
        with self._lock:
            self._buf.append(line)
            self._flush_locked()

    def add(self, line: str) -> None:
        """Buffer one pre-formatted line (the hot path: attempt records)."""
        with self._lock:
            self._buf.append(line)

    def flush(self) -> None:
        if self._buf:
            with self._lock:
                self._flush_locked()

    def _flush_locked(self) -> None:
        buf, self._buf = self._buf, []
        if not self.closed:  # a straggling thread writing after close() is dropped, not an error
            self._fh.write("".join(buf))
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            self.closed = True
            if self._owned:
                self._fh.close()


def read_events(path: str) -> list[dict[str, Any]]:
    """Every valid JSON object line of a log (a torn last line is skipped)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def last_event(path: str, event: str, tail: int = 65536) -> dict[str, Any] | None:
    """The last `event` record in the final `tail` bytes of a log (cheap on a log of millions of lines)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - tail))
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == event:
            return rec
    return None

"""Helpers for the namespace tests: run the worm's CLI inside MiniLab hosts, start servers, wait (bounded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testworm.eventlog import read_events

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
PORT = 7000


def worm(*args: str) -> list[str]:
    return [sys.executable, "-m", "testworm", *args]


def events(path: Path | str, kind: str | None = None) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    evs = read_events(str(path))
    return [e for e in evs if kind is None or e.get("event") == kind]


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 20.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def keyfile(tmp: Path) -> Path:
    k = tmp / "lab.key"
    if not k.exists():
        subprocess.run(worm("keygen", str(k)), env=ENV, check=True, capture_output=True)
    return k


def start_server(lab, host: str, tmp: Path, key: Path, *extra: str) -> Path:
    """Start a server on `host` and wait until it listens; returns its state dir."""
    state = tmp / f"state-{host}"
    lab.popen(host, worm("server", "--listen", f"{lab.addr(host)}:{PORT}", "--key", str(key),
                         "--state-dir", str(state), *extra),
              env=ENV, stdout=subprocess.DEVNULL, stderr=open(tmp / f"server-{host}.stderr", "wb"))
    wait_for(lambda: events(state / "server.jsonl", "listening"), f"the server on {host}", timeout=10)
    return state


def client(lab, host: str, cmd: str, target: str, key: Path, *extra: str) -> tuple[int, dict, str]:
    """Run `testworm CMD TARGET:PORT` in `host`; (exit code, the reply for TARGET, stderr)."""
    r = run_worm(lab, host, cmd, f"{lab.addr(target)}:{PORT}", "--key", str(key), *extra, timeout=30)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    return r.returncode, (lines[0] if lines else {}), r.stderr


def status(lab, host: str, target: str, key: Path) -> dict:
    code, reply, err = client(lab, host, "status", target, key)
    assert code == 0, err or reply
    return reply["state"]


def run_worm(lab, host: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return lab.run(host, ["env", f"PYTHONPATH={REPO}", *worm(*args)], timeout=timeout)

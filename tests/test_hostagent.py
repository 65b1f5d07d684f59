"""The host agent (python3 -m hostagent): services started, listed, signalled and awaited by record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def agent(tmp_path):
    env = {**os.environ, "TESTBED_PREFIX": str(tmp_path), "PYTHONPATH": str(REPO)}
    started = []

    def call(*args, timeout=30):
        p = subprocess.run([sys.executable, "-m", "hostagent", *args], capture_output=True, text=True, env=env,
                           timeout=timeout)
        data = json.loads(p.stdout) if p.stdout.strip() else {}
        if args[0] == "start" and data.get("pid"):
            started.append(data["pid"])
        return p.returncode, data
    yield call, tmp_path
    for pid in started:               # end only what this test started
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_start_status_stop_with_env_and_log(agent):
    call, prefix = agent
    code, rec = call("start", "svc", "--env", "GREETING=hello", "--", "sh", "-c", 'echo "$GREETING"; exec sleep 30')
    assert code == 0 and rec["argv"] == ["sh", "-c", 'echo "$GREETING"; exec sleep 30']
    assert (prefix / "run" / "svc" / "svc.json").exists()
    code, st = call("status")
    assert code == 0 and [(s["name"], s["running"], s["pid"]) for s in st["services"]] == [("svc", True, rec["pid"])]
    code, again = call("start", "svc", "--", "sleep", "1")
    assert code == 1 and again["error"] == "svc is already running"
    code, rep = call("stop", "svc", "--signal", "INT")
    assert code == 0 and rep["stopped"] and rep["signal"] == "SIGINT" and rep["exit"] == -2
    assert (prefix / "log" / "svc.log").read_text() == "hello\n"
    code, rep = call("stop", "svc")
    assert code == 3 and rep["running"] is False


def test_a_service_starts_with_the_signal_dispositions_it_expects(agent):
    """Not the agent's: Python ignores SIGPIPE and SIGXFSZ (an exec keeps what is ignored) and catches SIGINT
    (a SIGINT that came between the fork and the exec was swallowed by that handler and lost, and the service
    outlived `stop --signal INT`: seen under load); nothing blocked."""
    call, prefix = agent
    code, _ = call("start", "dispositions", "--", "cat", "/proc/self/status")
    assert code in (0, 1)                # cat may be done before start looks (exit 0 at once is a failure)
    code, rep = call("wait", "dispositions", "--timeout", "5")
    assert code == 0 and rep["exit"] == 0
    status = dict(line.split(":\t", 1) for line in (prefix / "log" / "dispositions.log").read_text().splitlines()
                  if ":\t" in line)
    ignored, blocked = int(status["SigIgn"], 16), int(status["SigBlk"], 16)
    assert blocked == 0, status["SigBlk"]
    for sig in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), (sig.name, status["SigIgn"])


def test_wait_reports_the_exit_status(agent):
    call, _ = agent
    code, _ = call("start", "short", "--", "sh", "-c", "sleep 0.3; exit 4")
    assert code == 0
    code, rep = call("wait", "short", "--timeout", "5")
    assert code == 0 and rep == {"name": "short", "running": False, "exit": 4}
    code, rep = call("wait", "nothing", "--timeout", "1")
    assert code == 3 and rep["error"] == "no such service"


def test_a_service_that_cannot_start_is_a_failure(agent):
    call, prefix = agent
    code, rep = call("start", "bad", "--", "/nonexistent/program")
    assert code == 1 and rep["error"] == "exited at once; see its log" and rep["exit"] == 127
    assert "cannot start /nonexistent/program" in (prefix / "log" / "bad.log").read_text()


def test_stubborn_service_is_killed_and_said_so(agent):
    call, _ = agent
    code, rec = call("start", "stubborn", "--", sys.executable, "-c",
                     "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(30)")
    assert code == 0
    time.sleep(0.2)
    t = time.monotonic()
    code, rep = call("stop", "stubborn", "--timeout", "0.5")
    assert code == 1 and rep["forced"] and rep["signal"] == "SIGKILL"
    assert "did not exit within 0.5 s of SIGTERM" in rep["error"]
    assert time.monotonic() - t < 5


def test_bad_usage(agent):
    call, _ = agent
    assert call("start", "../escape", "--", "true") == (2, {"error": "invalid service name '../escape'"})
    assert call("start", "nothing")[0] == 2

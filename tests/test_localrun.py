"""orchestrator.localrun: the one subprocess helper; exit codes as a shell would report them."""

from __future__ import annotations

import sys

import pytest

from orchestrator.errors import CommandError
from orchestrator.localrun import run, run_attached


def test_run_captures_output_and_names_the_failure():
    res = run([sys.executable, "-c", "import sys; print('out'); print('bad thing', file=sys.stderr); sys.exit(3)"],
              host="blade1")
    assert (res.exit_code, res.stdout, res.stderr.strip(), res.host) == (3, "out\n", "bad thing", "blade1")
    with pytest.raises(CommandError, match=r"on blade1 failed \(exit 3\): bad thing"):
        res.check()


def test_run_reports_missing_command_and_timeout_like_a_shell():
    assert run(["/nonexistent/tool"]).exit_code == 127
    res = run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)
    assert (res.exit_code, res.timed_out) == (124, True)
    assert "timed out after 0.2 s" in res.stderr


def test_run_attached_reports_the_inner_command_not_the_wrapper():
    wrapper = [sys.executable, "-c", "import sys; print(sys.stdin.read().upper()); sys.exit(4)"]
    res = run_attached(wrapper, ["echo", "hi"], input="hi", host="gateway")
    assert (res.argv, res.exit_code, res.stdout.strip(), res.host) == (("echo", "hi"), 4, "HI", "gateway")


def test_run_attached_on_the_terminal_passes_the_exit_code_through(capfd):
    res = run_attached([sys.executable, "-c", "print('streamed'); raise SystemExit(5)"], ["x"], capture=False)
    assert (res.exit_code, res.stdout) == (5, "")
    assert capfd.readouterr().out == "streamed\n"
    slow = run_attached([sys.executable, "-c", "import time; time.sleep(5)"], ["x"], capture=False, timeout=0.2)
    assert (slow.exit_code, slow.timed_out) == (124, True)
    assert run_attached(["/nonexistent/tool"], ["tool"], capture=False).exit_code == 127

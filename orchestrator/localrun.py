"""The one place the orchestrator runs local subprocesses, in the root namespace or inside a lab namespace.

Every command anywhere returns a `Result` (argv, exit code, stdout, stderr, duration), whichever way it ran:
locally here, out-of-band through a provider, or over SSH (orchestrator.lab.ssh builds the same type).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.errors import CommandError

NETNS_RUN_DIR = "/run/netns"


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    host: str | None = None
    timed_out: bool = field(default=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self, what: str | None = None) -> Result:
        """Return self when the command succeeded, else raise CommandError naming it and its stderr."""
        if self.ok:
            return self
        where = f" on {self.host}" if self.host else ""
        cmd = what or shlex.join(self.argv)
        detail = (self.stderr or self.stdout).strip().splitlines()
        tail = f": {detail[-1]}" if detail else ""
        reason = "timed out" if self.timed_out else f"exit {self.exit_code}"
        raise CommandError(f"{cmd}{where} failed ({reason}){tail}")


def netns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside network namespace `netns` (and a private /sys view, as `ip netns exec` does)."""
    return ["ip", "netns", "exec", netns, *argv]


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    timeout: float | None = 60.0,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = False,
    host: str | None = None,
) -> Result:
    """Run argv to completion (optionally in a network namespace) and return its Result.

    Never raises for a non-zero exit unless check=True; a missing executable is exit code 127, a timeout 124,
    as a shell would report them.
    """
    full = netns_argv(netns, argv) if netns else list(argv)
    started = time.monotonic()
    text = not isinstance(input, bytes)
    try:
        cp = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=text,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
        )
        out, err = cp.stdout, cp.stderr
        if not text:
            out, err = out.decode(errors="replace"), err.decode(errors="replace")
        res = Result(tuple(argv), cp.returncode, out, err, time.monotonic() - started, host)
    except FileNotFoundError as exc:
        res = Result(tuple(argv), 127, "", f"{exc.filename or argv[0]}: command not found",
                     time.monotonic() - started, host)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        res = Result(tuple(argv), 124, out, err + f"\ntimed out after {timeout} s",
                     time.monotonic() - started, host, timed_out=True)
    return res.check() if check else res


def run_attached(full: Sequence[str], argv: Sequence[str], *, timeout: float | None = 60.0,
                 input: str | None = None, capture: bool = True, host: str | None = None) -> Result:
    """Run `full` (argv wrapped to reach a host) and report it as `argv` on `host`: captured, or with the
    caller's terminal (capture=False: output streams through, the Result holds only the exit code)."""
    if capture:
        res = run(full, timeout=timeout, input=input, host=host)
        return Result(tuple(argv), res.exit_code, res.stdout, res.stderr, res.duration_s, host, res.timed_out)
    started = time.monotonic()
    try:
        rc, timed_out = subprocess.run(list(full), input=input, text=True, timeout=timeout).returncode, False
    except subprocess.TimeoutExpired:
        rc, timed_out = 124, True
    except FileNotFoundError:
        rc, timed_out = 127, False
    return Result(tuple(argv), rc, "", "", time.monotonic() - started, host, timed_out)


def run_batch(tool: Sequence[str], lines: Sequence[str], *, netns: str | None = None,
              timeout: float = 60.0) -> Result:
    """Feed `lines` to `tool -batch -` (ip, tc, bridge): one process for many commands; fails on the first error."""
    return run([*tool, "-batch", "-"], input="\n".join(lines) + "\n", netns=netns, timeout=timeout)


def pid_start_time(pid: int) -> int | None:
    """The kernel's start time of a running process (clock ticks since boot), to tell a PID from a reused
    one; None when there is no such process or it has exited and is only waiting to be reaped (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses; fields resume after the last ')'
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def is_root() -> bool:
    return os.geteuid() == 0

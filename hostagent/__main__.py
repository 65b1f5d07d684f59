"""python3 -m hostagent start NAME [--log F] [--env K=V …] [--cwd D] -- ARGV…
                  stop NAME [--signal TERM|INT|KILL] [--timeout S]
                  wait NAME [--timeout S]
                  status [NAME …]
Every command prints one JSON object; exit 0 on success, 1 on failure, 2 on bad usage, 3 if not running.
A service's record is <prefix>/run/svc/NAME.json; its watcher writes the exit status (negative: the signal) to
NAME.exit the moment it ends — what a trial's watch reads each poll (orchestrator/experiment/watch.py)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import TypeGuard

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def prefix() -> Path:
    env = os.environ.get("TESTBED_PREFIX")
    return Path(env) if env else Path(__file__).resolve().parents[2]   # <prefix>/lib/hostagent/__main__.py


def record_path(name: str) -> Path:
    return prefix() / "run" / "svc" / f"{name}.json"


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}   # what `stop --signal` may send


def start_time(pid: int) -> int | None:
    """Kernel start time of a live process; None if absent or a zombie."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return None if rest[0] in (b"Z", b"X") else int(rest[19])


def load(name: str) -> dict | None:
    try:
        return json.loads(record_path(name).read_text())
    except (OSError, ValueError):
        return None


def alive(rec: dict | None) -> TypeGuard[dict]:
    """A record whose process still runs (its PID, told from a reused one by its start time)."""
    if not rec:
        return False
    return start_time(rec["pid"]) == rec.get("starttime") is not None


def exit_status(name: str) -> int | None:
    try:
        return int((prefix() / "run" / "svc" / f"{name}.exit").read_text())
    except (OSError, ValueError):
        return None


def out(obj: dict, code: int = 0) -> int:
    print(json.dumps(obj, sort_keys=True))
    return code


def cmd_start(a) -> int:
    if not NAME.match(a.name):
        return out({"error": f"invalid service name {a.name!r}"}, 2)
    argv = a.argv
    if not argv:
        return out({"error": "nothing to start: give the command after --"}, 2)
    rec = load(a.name)
    if alive(rec):
        return out({"error": f"{a.name} is already running", "pid": rec["pid"]}, 1)
    rdir = record_path(a.name).parent
    rdir.mkdir(parents=True, exist_ok=True)
    log = Path(a.log) if a.log else prefix() / "log" / f"{a.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    (rdir / f"{a.name}.exit").unlink(missing_ok=True)
    env = dict(os.environ)
    for kv in a.env or []:
        k, _, v = kv.partition("=")
        env[k] = v
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the service's watcher: a session of its own
        os.close(r)
        os.setsid()
        nul = os.open(os.devnull, os.O_RDWR)       # let go of the caller's stdio (an SSH channel)
        for fd in (0, 1, 2):
            os.dup2(nul, fd)
        # a stop's signal may come before the service's exec: blocked across the fork, it stays pending until the
        # child has the default dispositions a service expects (not Python's SIGINT handler, which would swallow
        # it and lose it at the exec; nor its ignored SIGPIPE/SIGXFSZ, which an exec keeps), then acts on it
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        child = os.fork()
        if child == 0:
            for sig in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            os.close(w)
            fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            nul = os.open(os.devnull, os.O_RDONLY)
            os.dup2(nul, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if a.cwd:
                os.chdir(a.cwd)
            try:
                os.execvpe(argv[0], argv, env)
            except OSError as exc:
                os.write(2, f"hostagent: cannot start {argv[0]}: {exc.strerror}\n".encode())
                os._exit(127)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.write(w, f"{child}\n".encode())
        os.close(w)
        _, status = os.waitpid(child, 0)           # remember how it ended, for `wait` and `stop`
        code = os.waitstatus_to_exitcode(status)
        tmp = rdir / f".{a.name}.exit"
        tmp.write_text(f"{code}\n")
        os.replace(tmp, rdir / f"{a.name}.exit")
        os._exit(0)
    os.close(w)
    child = int(os.read(r, 64).decode().strip() or 0)
    os.close(r)
    os.waitpid(pid, os.WNOHANG)
    st = None
    for _ in range(100):
        st = start_time(child)
        if st is not None:
            break
        time.sleep(0.001)
    rec = {"name": a.name, "pid": child, "starttime": st, "argv": argv, "log": str(log), "started": time.time()}
    tmp = rdir / f".{a.name}.json"
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, record_path(a.name))
    deadline = time.monotonic() + 0.05            # a command that cannot start fails within moments
    while st is not None and time.monotonic() < deadline and exit_status(a.name) is None:
        time.sleep(0.005)
    if st is None or exit_status(a.name) is not None:
        time.sleep(0.01)
        return out({**rec, "error": "exited at once; see its log", "exit": exit_status(a.name)}, 1)
    return out(rec)


def wait_gone(rec: dict, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(rec):
            return True
        time.sleep(0.01)
    return not alive(rec)


def cmd_stop(a) -> int:
    rec = load(a.name)
    if not alive(rec):
        return out({"name": a.name, "running": False, "exit": exit_status(a.name)}, 3)
    sig = getattr(signal, f"SIG{a.signal.upper().removeprefix('SIG')}", None)
    if sig is None:
        return out({"error": f"unknown signal {a.signal}"}, 2)
    os.kill(rec["pid"], sig)
    if wait_gone(rec, a.timeout):
        time.sleep(0.02)   # let the watcher record the exit status
        return out({"name": a.name, "stopped": True, "signal": sig.name, "exit": exit_status(a.name)})
    os.kill(rec["pid"], signal.SIGKILL)
    wait_gone(rec, 2.0)
    return out({"name": a.name, "stopped": True, "signal": "SIGKILL", "forced": True,
                "error": f"did not exit within {a.timeout} s of {sig.name}"}, 1)


def cmd_wait(a) -> int:
    rec = load(a.name)
    if rec is None:
        return out({"name": a.name, "error": "no such service"}, 3)
    if not wait_gone(rec, a.timeout):
        return out({"name": a.name, "running": True, "error": f"still running after {a.timeout} s"}, 1)
    time.sleep(0.02)
    return out({"name": a.name, "running": False, "exit": exit_status(a.name)})


def cmd_status(a) -> int:
    rdir = prefix() / "run" / "svc"
    names = a.names
    if not names:
        names = sorted(p.stem for p in rdir.glob("*.json")) if rdir.is_dir() else []
    services = []
    for n in names:
        rec = load(n)
        if rec is not None:
            services.append({**rec, "running": alive(rec), "exit": exit_status(n)})
    return out({"services": services})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m hostagent", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("name")
    s.add_argument("--log")
    s.add_argument("--env", action="append")
    s.add_argument("--cwd")
    s = sub.add_parser("stop")
    s.add_argument("name")
    s.add_argument("--signal", default="TERM")
    s.add_argument("--timeout", type=float, default=10.0)
    s = sub.add_parser("wait")
    s.add_argument("name")
    s.add_argument("--timeout", type=float, default=60.0)
    s = sub.add_parser("status")
    s.add_argument("names", nargs="*")
    argv = sys.argv[1:] if argv is None else argv
    command: list[str] = []
    if "--" in argv:                               # the service's own argv, untouched by our parser
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    a = ap.parse_args(argv)
    a.argv = command
    return {"start": cmd_start, "stop": cmd_stop, "wait": cmd_wait, "status": cmd_status}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

"""How fast the `testbed` command starts: process time (user + system, of the command and what it waited
for) of `testbed --help`, `status`, `down` of an unknown lab and `down` of a namespace lab that is up, beside
`python -c pass` measured in the same run. Median of --repeat runs each.

    flock /tmp/wt-heavy.lock .venv/bin/python benchmarks/bench_cli.py            # this checkout
    flock /tmp/wt-heavy.lock .venv/bin/python benchmarks/bench_cli.py --src DIR  # another one (e.g. before)

The namespace lab (labs/stopping-speed.yaml under a random name, in a private state directory) is built
only as root, once per repeat, and always removed; without root that row is skipped.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# `testbed ARGS` run as python -m orchestrator.cli would, writing its own process time (without the `ip`,
# `kill`, … children it waited for) to argv[1] when it exits
_OWN = ("import atexit, resource, runpy, sys\n"
        "out = sys.argv[1]\n"
        "def own():\n"
        "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
        "    open(out, 'w').write(repr(r.ru_utime + r.ru_stime))\n"
        "atexit.register(own)\n"
        "sys.argv = ['testbed', *sys.argv[2:]]\n"
        "runpy.run_module('orchestrator.cli', run_name='__main__')\n")


def cpu(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """(user + system seconds, exit code) of one run of argv and everything it waited for. Run from `cwd`,
    the checkout timed: `python -m` looks in the working directory before PYTHONPATH."""
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=REPO, help="the checkout whose orchestrator to time")
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    if not 1 <= a.repeat <= 50:
        sys.exit("bench_cli: --repeat is 1..50")
    state = tempfile.mkdtemp(prefix="wt-bench-cli-")
    path = os.pathsep.join(p for p in (str(a.src), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TESTBED_STATE_DIR": state}
    py = [sys.executable]
    cli = [*py, "-m", "orchestrator.cli"]
    rows: dict[str, list[float]] = {"python -c pass": [], "testbed --help": [], "testbed status": [],
                                    "testbed down (unknown lab)": []}
    root = os.geteuid() == 0
    if root:
        rows["testbed down (netns lab stopping-speed)"] = []
        rows["  of it the command's own (no children)"] = []
    for _ in range(a.repeat):
        for what, argv in (("python -c pass", [*py, "-c", "pass"]), ("testbed --help", [*cli, "--help"]),
                           ("testbed status", [*cli, "status"]),
                           ("testbed down (unknown lab)", [*cli, "down", "xnolab" + secrets.token_hex(2)])):
            t, code = cpu(argv, env, a.src)
            if code != 0:          # a command that failed at once is no figure
                sys.exit(f"bench_cli: {what} exited {code}")
            rows[what].append(t)
        if root:
            name = "x" + secrets.token_hex(3)
            up = subprocess.run([*cli, "up", str(REPO / "labs" / "stopping-speed.yaml"), "--name", name], env=env,
                                cwd=a.src, capture_output=True, text=True, timeout=120)
            own = Path(state) / "own-cpu"
            try:
                if up.returncode != 0:
                    sys.exit(f"bench_cli: testbed up failed: {up.stderr.strip()[-500:]}")
            finally:
                t, code = cpu([*py, "-c", _OWN, str(own), "down", name], env, a.src)
                if code != 0:
                    subprocess.run([*cli, "down", name], env=env, cwd=a.src, timeout=120)
            rows["testbed down (netns lab stopping-speed)"].append(t)
            rows["  of it the command's own (no children)"].append(float(own.read_text()))
    print(f"process time (user+sys), median of {a.repeat}, orchestrator from {a.src}")
    for what, ts in rows.items():
        print(f"  {what:40s} {statistics.median(ts):6.3f} s   (min {min(ts):.3f}, max {max(ts):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

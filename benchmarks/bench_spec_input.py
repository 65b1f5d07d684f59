"""Hostile lab and experiment files through the real command line: wall time, peak memory and exit code.

Each case is one `python -m orchestrator.cli up FILE` (or `run FILE` for experiments) in a child process with a
private state directory; its peak RSS comes from the kernel's rusage of that child (os.wait4), not from the
testbed. The anchor is the same command on a file that does not exist (interpreter start-up and imports),
measured in the same run. Cases: a 370-byte YAML alias bomb (7 anchor levels of 9, "billion laughs"), lists
nested 3,000 deep, 4 KiB of random bytes as a lab, as an experiment and as an experiment's `lab:`, and a
50 MB lab file (one long description). Nothing is built: every case is a bad file. Then, for this checkout,
the loaders alone in this process: time and peak allocation (tracemalloc) of each refusal.

    .venv/bin/python benchmarks/bench_spec_input.py [--repo DIR] [--timeout S]

`--repo DIR` measures another checkout's CLI with this venv (e.g. /work/main, to compare before/after).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

EXPERIMENT = """\
experiment: bench
lab: {lab}
worm: {{scan: 198.18.9.0/24}}
rates: [5]
"""


def alias_bomb(levels: int = 7, width: int = 9) -> str:
    """The billion-laughs lab: level k is a list of `width` aliases of level k-1 (width**levels leaves)."""
    lines = ["name: bomb", "a0: &a0 [" + ",".join(["lol"] * width) + "]"]
    for k in range(1, levels):
        lines.append(f"a{k}: &a{k} [{','.join([f'*a{k - 1}'] * width)}]")
    lines.append(f"hosts: {{h: {{role: blade, lans: *a{levels - 1}}}}}")
    return "\n".join(lines) + "\n"


def cases(d: Path) -> list[tuple[str, list[str]]]:
    garbage = random.Random(1).randbytes(4096)
    files = {
        "bomb.yaml": alias_bomb().encode(),
        "deep.yaml": b"name: deep\nhosts: " + b"[" * 3000 + b"]" * 3000 + b"\n",
        "garbage.yaml": garbage,
        "garbage-exp.yaml": garbage,
        "exp-garbage-lab.yaml": EXPERIMENT.format(lab="garbage.yaml").encode(),
        "big.yaml": b"name: big\nhosts: {a: {role: blade}}\ndescription: " + b"x" * (50 * 10**6) + b"\n",
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return [
        ("anchor: a file that does not exist", ["up", str(d / "missing.yaml")]),
        (f"alias bomb, {len(files['bomb.yaml'])} bytes, 7 levels", ["up", str(d / "bomb.yaml")]),
        ("lists nested 3,000 deep", ["up", str(d / "deep.yaml")]),
        ("4 KiB of random bytes as a lab", ["up", str(d / "garbage.yaml")]),
        ("random bytes as an experiment", ["run", str(d / "garbage-exp.yaml"), "--out", str(d / "r1")]),
        ("random bytes as an experiment's lab:", ["run", str(d / "exp-garbage-lab.yaml"), "--out", str(d / "r2")]),
        ("50 MB lab file", ["up", str(d / "big.yaml")]),
    ]


def measure(repo: Path, argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, float, float, str]:
    """(exit code or None on timeout, wall s, peak RSS MiB, first stderr line) of one CLI run."""
    with tempfile.TemporaryFile() as errf:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *argv], cwd=repo, env=env,
                             stdout=subprocess.DEVNULL, stderr=errf)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                status = None
                break
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        p.returncode = 0        # reaped by wait4 above; keep Popen from waiting again
        errf.seek(0)
        text = errf.read().decode(errors="replace").strip().splitlines()
    code = None if status is None else os.waitstatus_to_exitcode(status)
    last = text[-1] if text and "Traceback" in text[0] else (text[0] if text else "")
    return code, wall, usage.ru_maxrss / 1024, last[:110]


def in_process(d: Path) -> None:
    """The loaders alone, in this process: wall time and peak allocation (tracemalloc) of refusing each file."""
    import tracemalloc

    sys.path.insert(0, str(REPO))
    from orchestrator.errors import SpecError
    from orchestrator.experiment.spec import load_experiment
    from orchestrator.labfile.load import load_lab

    print("\nin process (this checkout's loaders):")
    print(f"{'file':<24} {'ms':>8} {'peak KiB':>9}  outcome")
    for name in ("bomb.yaml", "deep.yaml", "garbage.yaml", "exp-garbage-lab.yaml", "big.yaml"):
        load = load_experiment if name.startswith("exp") else load_lab
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            load(d / name, machine_routes=[])
            outcome = "accepted"
        except SpecError as exc:
            outcome = f"SpecError, exit {exc.exit_code}: {exc.problems[0][1][:60]}"
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name:<24} {took * 1000:>8.2f} {peak / 1024:>9.0f}  {outcome}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose CLI is measured (default: this one)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before a case is killed")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-spec-") as tmp:
        d = Path(tmp)
        env = {**os.environ, "TESTBED_STATE_DIR": str(d / "state"), "COLUMNS": "200"}
        print(f"CLI of {a.repo.resolve()}")
        print(f"{'case':<42} {'exit':>4} {'wall s':>8} {'peak MiB':>9}  message")
        for what, argv in cases(d):
            code, wall, rss, msg = measure(a.repo, argv, env, a.timeout)
            print(f"{what:<42} {'kill' if code is None else code:>4} {wall:>8.2f} {rss:>9.0f}  {msg}", flush=True)
        if a.repo.resolve() == REPO:
            in_process(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())

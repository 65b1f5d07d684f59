"""Lab build and teardown speed of the netns provider, beside Mininet 2.3 measured in the same run.

Prints the median of several runs for: labs/paper-testbed.yaml (21 hosts, three LANs, the sniffer's mirror,
routes, isolation filters) and a generated 200-host lab; Mininet's `single,N` topology on Linux bridges
with no controller (its hosts on one switch, nothing else) where Mininet is installed (`make bench`
installs it). Targets (issue 2): paper testbed up ≤ 0.5 s, down ≤ 0.3 s; 200 hosts up ≤ 2 s, down ≤ 1 s.
Then `testbed check` once on each (issue 12): its wall time and result — a 200-host lab must check clean (its
kernel limits raised for it, its every host probed on-link by every other on its experimental LAN).

Run as root from the repository root: .venv/bin/python benchmarks/bench_netns.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.lab import lifecycle  # noqa: E402
from orchestrator.providers.netns.provider import NetnsProvider  # noqa: E402
from orchestrator.providers.state import StateStore  # noqa: E402

LAB_200 = """\
name: {name}
lans:
  management: {{subnet: 198.18.0.0/23}}
  admin: {{subnet: 198.18.2.0/23}}
  experimental: {{subnet: 198.18.8.0/22}}
hosts:
  admin-server: {{role: admin-server}}
  gateway: {{role: gateway}}
  sniffer: {{role: sniffer}}
  injector: {{role: injector}}
  target: {{role: target}}
  blade: {{role: blade, count: 195}}
"""

MININET = r"""
import sys, time
from mininet.net import Mininet
from mininet.topo import SingleSwitchTopo
from mininet.nodelib import LinuxBridge
from mininet.log import setLogLevel
setLogLevel("error")
n = int(sys.argv[1])
t0 = time.perf_counter()
net = Mininet(topo=SingleSwitchTopo(n), switch=LinuxBridge, controller=None)
net.start()
t1 = time.perf_counter()
net.stop()
t2 = time.perf_counter()
print(f"{t1 - t0:.4f} {t2 - t1:.4f}")
"""


def measure_ours(lab_file: Path, runs: int, store: StateStore
                 ) -> tuple[list[float], list[float], list[float], int, tuple[float, int, int]]:
    """up (the network wired: what `testbed up` waits for), boot (until every host's sshd listens, after up),
    and down of a booted lab (every sshd ended too); and once, `check` of the booted lab: (seconds, problems,
    hosts with a finding)."""
    ups, boots, downs, hosts = [], [], [], 0
    checked = (0.0, -1, 0)
    prov = NetnsProvider(store)
    for run in range(runs):
        name = f"bench{secrets.token_hex(2)}"
        t0 = time.perf_counter()
        lab = lifecycle.up(lab_file, name=name, store=store)
        t1 = time.perf_counter()
        prov.wait_booted(name, timeout=120)
        t2 = time.perf_counter()
        if run == 0:
            c0 = time.perf_counter()
            rep = lifecycle.check(name, store=store)
            checked = (time.perf_counter() - c0, len(rep.problems), len({f.host for f in rep.findings}))
            t2 = time.perf_counter()
        lifecycle.down(name, store=store)
        t3 = time.perf_counter()
        ups.append(t1 - t0)
        boots.append(t2 - t1)
        downs.append(t3 - t2)
        hosts = len(lab.hosts)
    return ups, boots, downs, hosts, checked


def measure_cli(lab_file: Path, runs: int) -> tuple[float, float]:
    """Wall time of `testbed up` and `testbed down` as a user runs them (interpreter start included)."""
    ups, downs = [], []
    for _ in range(runs):
        name = f"bcli{secrets.token_hex(2)}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "orchestrator.cli", "up", str(lab_file), "--name", name],
                       check=True, capture_output=True, cwd=REPO)
        t1 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "orchestrator.cli", "down", name], check=True, capture_output=True,
                       cwd=REPO)
        ups.append(t1 - t0)
        downs.append(time.perf_counter() - t1)
    return statistics.median(ups), statistics.median(downs)


def measure_mininet(n: int, runs: int) -> tuple[float, float] | None:
    if not shutil.which("mn"):
        return None
    ups, downs = [], []
    for _ in range(runs):
        r = subprocess.run(["/usr/bin/python3", "-c", MININET, str(n)], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            print(f"mininet failed: {r.stderr.strip()[-300:]}")
            return None
        up, down = map(float, r.stdout.split())
        ups.append(up)
        downs.append(down)
    return statistics.median(ups), statistics.median(downs)


def _runs(xs: list[float]) -> str:
    return " ".join(f"{x:.3f}" for x in xs) + " s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_netns: needs root")
    tmp = Path(tempfile.mkdtemp(prefix="wt-bench-"))
    os.environ["TESTBED_STATE_DIR"] = str(tmp / "state")
    store = StateStore(tmp / "state")
    try:
        big = tmp / "lab200.yaml"
        big.write_text(LAB_200.format(name="bench200"))
        rows, spread, checks = [], [], []
        for label, f, runs, target in (("paper-testbed", REPO / "labs" / "paper-testbed.yaml", args.runs, (0.5, 0.3)),
                                       ("200 hosts", big, max(3, args.runs // 2), (2.0, 1.0))):
            ups, boots, downs, hosts, checked = measure_ours(f, runs, store)
            checks.append((label, hosts, checked))
            mn = measure_mininet(hosts, max(2, runs // 2))
            rows.append((label, hosts, statistics.median(ups), statistics.median(downs), target, mn,
                         statistics.median(boots)))
            spread.append(f"{label}: up {_runs(ups)}; down {_runs(downs)}")
        cli_up, cli_down = measure_cli(REPO / "labs" / "paper-testbed.yaml", 3)

        print(f"{'lab':<14} {'hosts':>5}  {'ours up':>8} {'ours down':>9}  {'target':>13}  "
              f"{'mininet up':>10} {'mininet down':>12}")
        for label, hosts, up, down, (tu, td), mn, boot in rows:
            mn_s = f"{mn[0]:>9.3f}s {mn[1]:>11.3f}s" if mn else f"{'(not installed)':>23}"
            ok = "ok" if up <= tu and down <= td else "MISSED"
            print(f"{label:<14} {hosts:>5}  {up:>7.3f}s {down:>8.3f}s  ≤{tu:.1f}/≤{td:.1f}s {ok:<3} {mn_s}"
                  f"   (+{boot:.2f} s until every host's sshd listens)")
        print("every run (the table shows medians): " + " | ".join(spread))
        print(f"CLI wall time, paper-testbed (interpreter start included): up {cli_up:.3f} s, down {cli_down:.3f} s")
        print("ours: three LANs, a mirror port, routes, isolation filters; Mininet: one switch, no controller")
        for label, hosts, (secs, problems, seen) in checks:
            print(f"testbed check, {label} ({hosts} hosts, {seen} audited): {secs:.2f} s, "
                  + ("clean" if problems == 0 else f"{problems} PROBLEMS"))
    finally:
        lifecycle.down_all(store=store)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark of the built-in mechanisms in a three-host namespace lab (a — gw — t; gw answers the scanned range
with RSTs); prints its figures.

    .venv/bin/python benchmarks/bench_mechanisms.py [--quick]

1. TRW's per-packet decision cost, for the two ways to see SYNs and their answers: NFQUEUE (the daemon
   shipped: `mechanisms.trw run`, every SYN and answer through user space, the SYN of a blocked source
   dropped in line) and conntrack events (`conntrack -E` read by a Python consumer driving the same core;
   nothing is held, so a block would have to be a rule added after the fact). CPU seconds (utime + stime of
   every process of the design, /proc/PID/schedstat) per connection, a connection being a SYN and its RST.
2. rate-limit: the worm at 20/s and 200/s against new_per_s 2, burst 5 — the wire rate measured by tcpdump
   on the gateway beside new_per_s and the token-bucket model fed with the worm's log.

Needs root; everything runs in namespaces it creates (198.18.201-204.x); bounded to about a minute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mechanisms.ratelimit.model import predict_worm_log, wire_rate  # noqa: E402
from mechanisms.trw.core import Trw, TrwConfig  # noqa: E402
from tests.mechanisms.lab import (  # noqa: E402
    SCAN_NET,
    TOPO,
    gateway_answers_reset,
    run_worm,
    wire_attempts,
    worm_syn_sniffer,
)
from tests.support.minilab import MiniLab, have_netns  # noqa: E402

PY = sys.executable
# a walk that never blocks (upper threshold ln 1e300 ≈ 690, failure step ≈ 2e-4): every connection costs
# a SYN decision and an answer decision, for as many connections as the benchmark makes
NEVER = ["--theta0", "0.5", "--theta1", "0.4999", "--alpha", "1e-300", "--beta", "0.999999"]

CONNECTOR = r"""
import socket, sys, time, select
n, base = int(sys.argv[1]), sys.argv[2]
t0 = time.monotonic(); open_ = []
for i in range(n):
    s = socket.socket(); s.setblocking(False)
    s.connect_ex((f"{base}.{1 + i % 250}", 20000 + i // 250))
    open_.append(s)
    if len(open_) >= 200:
        for x in open_: x.close()
        open_ = []
for x in open_: x.close()
print(time.monotonic() - t0, flush=True)
"""

CONSUMER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from mechanisms.trw.core import Trw, TrwConfig
core = Trw(TrwConfig(theta0=0.5, theta1=0.4999, alpha=1e-300, beta=0.999999))
n = 0
for line in sys.stdin:
    f = line.split()
    if len(f) < 6 or f[1] != "tcp":
        continue
    kv = {}
    for x in f:                            # the original direction's tuple comes first
        if "=" in x:
            k, v = x.split("=", 1)
            kv.setdefault(k, v)
    src, dst = kv.get("src"), kv.get("dst")
    if f[0] == "[NEW]":
        core.syn(src, dst, int(kv["sport"]), int(kv["dport"]), time.monotonic())
    elif f[0] == "[UPDATE]":               # SYN-ACK seen: SYN_RECV / ESTABLISHED
        core.answer(src, dst, "established", time.monotonic())
    elif f[0] == "[DESTROY]":              # an RST to a SYN_SENT entry kills it at once
        core.answer(src, dst, "reset", time.monotonic())
    n += 1
print(n, flush=True)
"""


def cpu_s(pid: int) -> float:
    """CPU time of a process so far, in ns resolution (/proc/PID/schedstat: time on a CPU)."""
    with open(f"/proc/{pid}/schedstat") as fh:
        return int(fh.read().split()[0]) / 1e9


def settle(read, quiet_s: float = 0.3, bound_s: float = 10.0) -> float:
    """The CPU reading once it stopped growing for quiet_s (the consumer caught up), bounded."""
    last, t_last, deadline = read(), time.monotonic(), time.monotonic() + bound_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != last:
            last, t_last = now, time.monotonic()
        elif time.monotonic() - t_last >= quiet_s:
            break
    return last


def connect(lab: MiniLab, n: int) -> float:
    r = lab.run("a", [PY, "-c", CONNECTOR, str(n), SCAN_NET.rsplit(".", 1)[0]], timeout=120)
    assert r.returncode == 0, r.stderr
    return float(r.stdout.split()[0])


def bench_nfqueue(lab: MiniLab, n: int, tmp: Path) -> dict:
    ev = tmp / "trw.jsonl"
    d = lab.popen("a", [PY, "-m", "mechanisms.trw", "run", "--mode", "host", "--events", str(ev), *NEVER],
                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(300):
        if ev.exists() and ev.stat().st_size:
            break
        time.sleep(0.05)
    c0 = cpu_s(d.pid)
    wall = connect(lab, n)
    c1 = settle(lambda: cpu_s(d.pid))
    st = json.loads(lab.run("a", [PY, "-m", "mechanisms.trw", "status", "--json"], timeout=30).stdout)
    d.terminate()
    d.wait(timeout=10)
    packets = st["kernel_queue"]["id_sequence"]           # every packet ever queued: SYNs and answers
    return {"connections": n, "decisions": packets, "cpu_s": c1 - c0, "connect_wall_s": wall}


def bench_conntrack(lab: MiniLab, n: int) -> dict:
    lab.run("a", ["iptables", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW"], check=True)  # ct on here
    ct = lab.popen("a", ["conntrack", "-E", "-e", "NEW,UPDATE,DESTROY", "-p", "tcp", "-b", str(8 << 20)],
                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    cons = subprocess.Popen([PY, "-c", CONSUMER, str(REPO)], stdin=ct.stdout, stdout=subprocess.PIPE, text=True)
    ct.stdout.close()
    time.sleep(0.5)
    c0 = cpu_s(ct.pid) + cpu_s(cons.pid)
    wall = connect(lab, n)
    c1 = settle(lambda: cpu_s(ct.pid) + cpu_s(cons.pid))
    ct_cpu, cons_cpu = cpu_s(ct.pid), cpu_s(cons.pid)
    ct.terminate()
    ct.wait(timeout=10)
    out = cons.communicate(timeout=10)[0].split()
    lab.run("a", ["iptables", "-D", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW"])
    return {"connections": n, "events": int(out[-1]) if out else 0, "cpu_s": c1 - c0, "connect_wall_s": wall,
            "conntrack_cpu_s": ct_cpu, "consumer_cpu_s": cons_cpu}


def bench_baseline(lab: MiniLab, n: int) -> dict:
    return {"connections": n, "connect_wall_s": connect(lab, n)}


def bench_core(n: int) -> float:
    core = Trw(TrwConfig(theta0=0.5, theta1=0.4999, alpha=1e-300, beta=0.999999))
    t0 = time.process_time()
    for i in range(n):
        dst = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        core.syn("198.18.0.2", dst, 1000, 80, i * 1e-3)
        core.answer("198.18.0.2", dst, "reset", i * 1e-3)
    return (time.process_time() - t0) / (2 * n)


def bench_ratelimit(lab: MiniLab, rate: float, seconds: float, tmp: Path) -> dict:
    r = lab.run("a", [PY, "-m", "mechanisms.ratelimit", "apply", "--new-per-s", "2", "--burst", "5"], timeout=30)
    assert r.returncode == 0, r.stderr
    sniff = worm_syn_sniffer(lab)
    n = int(rate * seconds)
    worm = run_worm(lab, tmp / f"worm-{rate:g}.jsonl", rate=rate, attempts=n, lifetime=seconds + 5)
    syns = sniff.stop()
    lab.run("a", [PY, "-m", "mechanisms.ratelimit", "clear"], timeout=30)
    on_wire = sorted(wire_attempts(syns).values())
    pred = predict_worm_log(worm, new_per_s=2, burst=5)[lab.addr("a")]
    return {"rate": rate, "attempts": n, "wire_attempts": len(on_wire), "wire_rate": wire_rate(on_wire),
            "model_attempts": pred.out, "model_wire_rate": pred.wire_rate}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer connections, shorter worms")
    a = ap.parse_args()
    ok, why = have_netns()
    if not ok:
        print(f"bench_mechanisms: skipped: {why}")
        return 0
    n = 2000 if a.quick else 6000
    seconds = 6.0 if a.quick else 11.0
    with tempfile.TemporaryDirectory() as tmp, MiniLab(TOPO, gateway="gw") as lab:
        gateway_answers_reset(lab)
        base = bench_baseline(lab, n)
        nfq = bench_nfqueue(lab, n, Path(tmp))
        ctv = bench_conntrack(lab, n)
        core_us = bench_core(20000) * 1e6
        print("TRW, per-packet decision cost (one connection = a SYN and its RST; CPU of the design's processes)")
        print(f"  core alone (pure Python, no I/O):  {core_us:.1f} µs per decision")
        print(f"  NFQUEUE daemon:   {nfq['cpu_s'] / nfq['connections'] * 1e6:7.1f} µs CPU per connection "
              f"({nfq['decisions']} packets queued for {nfq['connections']} connections, "
              f"{nfq['cpu_s'] / max(1, nfq['decisions']) * 1e6:.1f} µs each); the connections took "
              f"{nfq['connect_wall_s']:.3f} s (no mechanism: {base['connect_wall_s']:.3f} s)")
        print(f"  conntrack events: {ctv['cpu_s'] / ctv['connections'] * 1e6:7.1f} µs CPU per connection "
              f"({ctv['events']} events, {ctv['cpu_s'] / max(1, ctv['events']) * 1e6:.1f} µs each; conntrack -E {ctv['conntrack_cpu_s']:.2f} s + consumer "
              f"{ctv['consumer_cpu_s']:.2f} s in all); the connections took {ctv['connect_wall_s']:.3f} s")
        cheaper = "NFQUEUE" if nfq["cpu_s"] < ctv["cpu_s"] else "conntrack events"
        print(f"  cheaper per connection: {cheaper}")
        print("rate-limit, new_per_s 2, burst 5 (wire: tcpdump on the gateway; attempts after the first second)")
        for rate in (20.0, 200.0):
            r = bench_ratelimit(lab, rate, seconds, Path(tmp))
            wr = r["wire_rate"] or 0.0
            print(f"  worm {rate:5g}/s, {r['attempts']} attempts: wire {r['wire_attempts']} attempts out, "
                  f"{wr:.3f}/s ({(wr / 2 - 1) * 100:+.1f} % of new_per_s 2); model {r['model_attempts']} out, "
                  f"{r['model_wire_rate']:.3f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

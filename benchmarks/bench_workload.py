"""Benchmark: how fast the benign schedule is generated, and does a session open its connections at the rate
it was scheduled for? The second part in a namespace lab, measured on the wire.

1. Schedule generation: connections generated per second by `workload.schedule.generate` (pure; no root).
2. Achieved vs scheduled rate (root): host c runs `python -m workload run` against servers on s1..s4
   (`serve`, TCP and UDP), periodic arrivals, Zipf popularity, 20 % UDP; tcpdump on c's interface. The
   scheduled rate is (n − 1) / (last − first due time), the achieved one the same over the send times in the
   log and over the first SYN / datagram of each connection on the wire; beside them the share answered and
   the wire delay (scheduled → on the wire) p50 / p99 / max.

    flock /tmp/wt-heavy.lock python benchmarks/bench_workload.py [--quick] [--json FILE]   (root; repo root)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.minilab import MiniLab, have_netns  # noqa: E402
from testworm.eventlog import read_events  # noqa: E402
from workload.analysis import analyse  # noqa: E402
from workload.schedule import GenSpec, generate  # noqa: E402

SERVERS = ("s1", "s2", "s3", "s4")
# (rate /s, seconds, burst)
RUNS = [(10, 5.0, 1), (100, 3.0, 1), (100, 3.0, 5), (500, 3.0, 1), (1000, 3.0, 1)]
QUICK = [(100, 2.0, 1), (500, 2.0, 1)]


def bench_generation(repeat: int) -> list[dict]:
    out = []
    for burst in (1, 5):
        spec = GenSpec(servers=tuple(f"198.18.201.{i}" for i in range(2, 52)), rate=10_000.0, duration_s=50.0,
                       burst=burst, udp_fraction=0.2, seed=1, max_connections=1_000_000)
        best = None
        for _ in range(repeat):
            t = time.perf_counter()
            n = len(generate(spec))
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        out.append({"burst": burst, "connections": n, "seconds": best, "per_s": n / best})
    return out


def rate(times: list[float]) -> float | None:
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None


def lab_run(lab: MiniLab, tmp: Path, r: float, secs: float, burst: int) -> dict:
    log, pcap = tmp / f"run-{r}-{burst}.jsonl", tmp / f"run-{r}-{burst}.pcap"
    dump = lab.popen("c", ["tcpdump", "-i", "lan1", "-n", "-U", "--immediate-mode", "-B", "8192",
                           "--time-stamp-precision", "nano", "-w", str(pcap), "(tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0) or "
                           "(udp and src host " + lab.addr("c") + ")"], stderr=subprocess.PIPE, text=True)
    line = ""
    deadline = time.monotonic() + 10
    while "listening on" not in line and time.monotonic() < deadline:
        line = dump.stderr.readline()
    servers = [lab.addr(h) for h in SERVERS]
    res = lab.run("c", ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "workload", "run", "--servers", *servers,
                        "--allow", "198.18.201.0/24", "--rate", str(r), "--duration", str(secs), "--burst", str(burst),
                        "--arrivals", "periodic", "--udp-fraction", "0.2", "--timeout", "3", "--log", str(log)],
                  timeout=secs + 60)
    time.sleep(0.3)
    dump.send_signal(signal.SIGINT)
    _, err = dump.communicate(timeout=10)
    if res.returncode != 0:
        raise SystemExit(f"workload run failed: {res.stderr}")
    evs = [e for e in read_events(str(log)) if e["event"] == "conn"]
    rows, s = analyse(str(log), str(pcap))
    due = [e["due_mono"] for e in evs]
    wire = [e["due_wall"] + rw["wire_s"] for e, rw in zip(sorted(evs, key=lambda e: e["i"]), rows, strict=True)
            if rw["wire_s"] is not None]
    d = s["delay_wire_s"]
    dropped = [ln for ln in err.splitlines() if "dropped by kernel" in ln]
    return {"rate": r, "burst": burst, "seconds": secs, "connections": len(evs), "scheduled_per_s": rate(due),
            "achieved_log_per_s": rate([e["t_mono"] for e in evs]), "achieved_wire_per_s": rate(wire),
            "ok": s["ok"], "on_wire": s["on_wire"], "wire_p50_ms": d["p50"] * 1e3 if d["p50"] is not None else None,
            "wire_p99_ms": d["p99"] * 1e3 if d["p99"] is not None else None,
            "wire_max_ms": d["max"] * 1e3 if d["max"] is not None else None,
            "tcpdump": dropped[0].strip() if dropped else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    print("== schedule generation (50 servers, Zipf, 20 % UDP, 10,000/s for 50 s; best of 3)")
    gen = bench_generation(1 if a.quick else 3)
    for g in gen:
        print(f"burst {g['burst']}: {g['connections']:,} connections in {g['seconds']:.2f} s = "
              f"{g['per_s']:,.0f} connections/s")
    result = {"generation": gen, "lab": []}
    ok, why = have_netns()
    if not ok:
        print(f"== lab part skipped: {why}")
    else:
        print("== achieved vs scheduled rate (periodic arrivals, 4 servers, 20 % UDP; tcpdump on the client)")
        print(f"{'rate':>6} {'burst':>5} {'conns':>6} {'sched/s':>9} {'log/s':>9} {'wire/s':>9} {'ok':>6} "
              f"{'wire':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
        with tempfile.TemporaryDirectory() as d, MiniLab({h: ["lan1"] for h in ("c", *SERVERS)}) as lab:
            tmp = Path(d)
            for h in SERVERS:
                ad = lab.addr(h)
                lab.popen(h, ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "workload", "serve", "--tcp",
                              f"{ad}:8080", "--udp", f"{ad}:5353", "--log", str(tmp / f"serve-{h}.jsonl"),
                              "--lifetime", "600", "--answer-bytes", "256"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            for r, secs, burst in (QUICK if a.quick else RUNS):
                x = lab_run(lab, tmp, r, secs, burst)
                result["lab"].append(x)
                print(f"{x['rate']:>6} {x['burst']:>5} {x['connections']:>6} {x['scheduled_per_s']:>9.2f} "
                      f"{x['achieved_log_per_s']:>9.2f} {x['achieved_wire_per_s']:>9.2f} {x['ok']:>6} "
                      f"{x['on_wire']:>6} {x['wire_p50_ms']:>7.2f} {x['wire_p99_ms']:>7.2f} {x['wire_max_ms']:>7.2f}"
                      f"  {x['tcpdump']}")
    result["load"] = os.getloadavg()
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

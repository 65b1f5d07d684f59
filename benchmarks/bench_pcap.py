"""Benchmark: `testbed analyse` on 1,000,000- and 3,000,000-packet pcaps, beside tcpdump's BPF count of the same
SYNs in the same run (and dpkt's full dissection of a sample, for scale).

Writes the captures itself (tests/support/bulkpcap.py: a NumPy scatter of a few frame templates with per-packet
addresses, ports and timestamps; no scapy), in a temporary directory that is removed afterwards. Every measurement of ours runs in
a child process of its own, and its peak memory is that process's ru_maxrss (from wait4), so nothing one
measurement allocated is counted in another:

- `count`: the streamed reader alone counting SYNs without ACK (what tcpdump's filter does);
- `analyse`: `analyse_trial(file).to_dict()` — the whole analysis `testbed analyse --json` prints;
- `cli`: the command itself, `testbed analyse --json FILE`, interpreter start and imports included;
- `read_capture`: the whole-file table (`read_capture` + `extract_attempts`), kept for callers that need
  every row — its memory grows with the file, by design.

    .venv/bin/python benchmarks/bench_pcap.py [--packets N ...] [--repeats N] [--dpkt-sample N] [--tshark]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# tcpdump's BPF filter for a SYN without ACK, untagged or under one 802.1Q tag (ours counts both)
TCPDUMP_SYN = ("tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn or "
               "(vlan and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn)")


# ----------------------------------------------------------------------------------------------- measuring

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
mode, path = sys.argv[1], sys.argv[2]
if mode == "count":
    import numpy as np
    from orchestrator.analysis.pcap import CaptureReader
    t1 = time.perf_counter()
    reader = CaptureReader(path)
    syn = sum(int(np.count_nonzero(chunk.syn)) for chunk in reader)
    out = {"packets": reader.packets, "syn_attempts": syn}
elif mode == "analyse":
    from orchestrator.analysis.trial import analyse_trial
    t1 = time.perf_counter()
    d = analyse_trial(path).to_dict()
    out = {k: d[k] for k in ("packets", "syn_attempts", "syn_retransmissions", "udp_attempts")}
else:
    from orchestrator.analysis.attempts import extract_attempts
    from orchestrator.analysis.pcap import read_capture
    t1 = time.perf_counter()
    out = extract_attempts(read_capture(path)).totals()
print(json.dumps({"import_s": t1 - t0, "work_s": time.perf_counter() - t1, **out}))
"""


def _run(argv: list[str], timeout: float = 600) -> tuple[float, int, str]:
    """Run a child process; (wall seconds, its peak RSS in bytes, stdout). Linux carries the peak RSS of the
    process that forked a child over its exec, so this process stays small (no NumPy here: the captures are
    written by a child too) and the figure is the child's own."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, cwd=REPO)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                raise SystemExit(f"{argv[:3]} did not finish within {timeout:.0f} s")
            time.sleep(0.002)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return wall, ru.ru_maxrss * 1024, text


def ours(mode: str, path: Path, repeats: int) -> dict:
    """Best-of-`repeats` time and the largest peak RSS of one mode, each run in a fresh child process."""
    best: dict | None = None
    peak = 0
    for _ in range(repeats):
        if mode == "cli":
            wall, rss, text = _run([sys.executable, "-m", "orchestrator.cli", "analyse", "--json", str(path)])
            d = json.loads(text)
            res = {"s": wall, **{k: d[k] for k in ("packets", "syn_attempts", "syn_retransmissions",
                                                   "udp_attempts")}}
        else:
            wall, rss, text = _run([sys.executable, "-c", CHILD, mode, str(path)])
            d = json.loads(text)
            res = {"s": d.pop("work_s"), **d}
        peak = max(peak, rss)
        if best is None or res["s"] < best["s"]:
            best = res
    assert best is not None
    return best | {"rss": peak}


def tcpdump(path: Path, repeats: int) -> dict | None:
    exe = shutil.which("tcpdump")
    if not exe:
        return None
    best: dict | None = None
    for _ in range(repeats):
        wall, rss, text = _run([exe, "-r", str(path), "-nn", "--count", TCPDUMP_SYN])
        n = int(text.split()[0])  # "1350693 packets"
        if best is None or wall < best["s"]:
            best = {"s": wall, "syn_attempts": n, "rss": rss}
    return best


def bench_dpkt(path: Path, sample: int) -> tuple[float, int]:
    """dpkt: frame the first `sample` records with dpkt.pcap.Reader and fully dissect Ethernet/IP/TCP/UDP."""
    import dpkt

    t0 = time.perf_counter()
    n = 0
    with open(path, "rb") as fh:
        for _ts, raw in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(raw)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                _ = ip.data.flags & dpkt.tcp.TH_SYN and not ip.data.flags & dpkt.tcp.TH_ACK
            n += 1
            if n >= sample:
                break
    return time.perf_counter() - t0, n


def bench_tshark(path: Path) -> tuple[float, int] | None:
    exe = shutil.which("tshark")
    if not exe:
        return None
    t0 = time.perf_counter()
    r = subprocess.run([exe, "-n", "-r", str(path), "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0",
                        "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, timeout=900)
    return time.perf_counter() - t0, r.stdout.count("\n")


def _mib(b: int) -> str:
    return f"{b / 2**20:7.0f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, nargs="+", default=[1_000_000, 3_000_000])
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (best time, largest memory)")
    ap.add_argument("--modes", nargs="+", default=["count", "analyse", "cli", "read_capture"],
                    choices=["count", "analyse", "cli", "read_capture"])
    ap.add_argument("--dpkt-sample", type=int, default=200_000, help="packets dpkt dissects (0: skip dpkt)")
    ap.add_argument("--tshark", action="store_true", help="also time tshark's SYN count (slow: ~45 s per 1 M)")
    ap.add_argument("--write", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--dpkt", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:  # the child that writes a capture
        from tests.support.bulkpcap import write_capture

        print(json.dumps(write_capture(Path(args.write[0]), int(args.write[1]))))
        return 0
    if args.dpkt:  # the child that runs dpkt
        print(json.dumps(bench_dpkt(Path(args.dpkt[0]), int(args.dpkt[1]))))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-pcap-"))
    rows = []
    try:
        for n in args.packets:
            path = tmp / f"bench-{n}.pcap"
            t0 = time.perf_counter()
            counts = json.loads(_run([sys.executable, __file__, "--write", str(path), str(n)])[2])
            print(f"capture: {n:,} packets, {path.stat().st_size / 2**20:.0f} MiB, written in "
                  f"{time.perf_counter() - t0:.1f} s ({', '.join(f'{k} {v:,}' for k, v in counts.items())})")
            td = tcpdump(path, args.repeats)
            if td is None:
                print("  tcpdump not installed: no anchor")
            else:
                print(f"  tcpdump --count, BPF SYN filter:     {td['s']:7.3f} s  {_mib(td['rss'])}  "
                      f"syn={td['syn_attempts']:,}")
            for mode in args.modes:
                r = ours(mode, path, args.repeats)
                ratio = f"{r['s'] / td['s']:5.1f}× tcpdump" if td else ""
                same = "" if td is None or r["syn_attempts"] == td["syn_attempts"] else "  MISMATCH with tcpdump"
                what = {"count": "ours streamed SYN count", "analyse": "ours analyse_trial (in process)",
                        "cli": "ours `testbed analyse --json`", "read_capture": "ours read_capture+extract"}[mode]
                extra = f" udp_attempts={r['udp_attempts']:,}" if "udp_attempts" in r else ""
                print(f"  {what + ':':36s} {r['s']:7.3f} s  {_mib(r['rss'])}  {ratio}  "
                      f"syn={r['syn_attempts']:,}{extra}{same}")
                rows.append((n, mode, r, td))
            if args.dpkt_sample and n == args.packets[0]:
                ddt, dn = json.loads(_run([sys.executable, __file__, "--dpkt", str(path), str(args.dpkt_sample)])[2])
                print(f"  dpkt full dissection (first {dn:,} packets): {dn / ddt:,.0f} packets/s, "
                      f"{ddt * n / dn:.1f} s for the file (extrapolated)")
            if args.tshark:
                ts = bench_tshark(path)
                print("  tshark not installed" if ts is None else
                      f"  tshark SYN count: {ts[0]:7.3f} s  syn={ts[1]:,}")
            path.unlink()
        if len(args.packets) > 1:
            print("peak memory, smallest → largest file:")
            for mode in args.modes:
                ms = [r["rss"] for n, m, r, _ in rows if m == mode]
                print(f"  {mode:12s} " + " → ".join(_mib(x).strip() for x in ms)
                      + f"  (×{ms[-1] / ms[0]:.2f} for ×{args.packets[-1] / args.packets[0]:.0f} the packets)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

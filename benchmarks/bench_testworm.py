"""Benchmark: does the test worm scan at the rate it was told? Measured on the wire between two namespaces.

Host a scans 198.19.0.0/16, routed to host b, which answers for the whole /16 (an AnyIP `local` route), with
no listener: each TCP SYN gets a RST at once, so sockets do not pile up; each datagram is just received.
For every configured rate it reports the achieved rate from the worm's log (attempt start times) and from a
tcpdump on b (first SYNs / datagrams), the count on the wire against the count logged, and the p50/p99/max of
each attempt's start-time error against its due time. Runs are short and bounded; repeat them (--repeat) and
read the worst as well as the median, because the machine is shared.

    python benchmarks/bench_testworm.py [--repeat 3] [--quick] [--json FILE]      (root; from the repo root)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.minilab import MiniLab, have_netns  # noqa: E402
from testworm.eventlog import read_events  # noqa: E402

TARGETS = "198.19.0.0/16"
PORT = 7000
# (protocol, rate, seconds, tolerance): the bar is 1 % up to 1,000/s, 5 % at 5,000/s TCP and 10,000/s UDP
RUNS = [("tcp", 1, 5.0, 0.01), ("tcp", 10, 3.0, 0.01), ("tcp", 100, 3.0, 0.01), ("tcp", 1000, 3.0, 0.01),
        ("tcp", 5000, 3.0, 0.05), ("udp", 100, 3.0, 0.01), ("udp", 1000, 3.0, 0.01), ("udp", 10000, 3.0, 0.05)]
QUICK = [("tcp", 100, 2.0, 0.01), ("tcp", 5000, 2.0, 0.05), ("udp", 10000, 2.0, 0.05)]


def read_pcap(path: Path) -> list[tuple[float, str, int, int]]:
    """(timestamp, proto, sport, dst) of each IPv4 TCP-SYN / UDP packet in an Ethernet pcap (stdlib only)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian, scale = {0xA1B2C3D4: ("<", 1e-6), 0xA1B23C4D: ("<", 1e-9)}.get(magic, (">", 1e-6))
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00":
            continue
        ihl = (pkt[14] & 0x0F) * 4
        proto = pkt[23]
        dst = int.from_bytes(pkt[30:34], "big")
        l4 = pkt[14 + ihl:]
        if len(l4) < 4:
            continue
        sport = int.from_bytes(l4[:2], "big")
        if proto == 6 and len(l4) >= 14 and l4[13] & 0x12 == 0x02:
            out.append((sec + frac * scale, "tcp", sport, dst))
        elif proto == 17:
            out.append((sec + frac * scale, "udp", sport, dst))
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def rate_of(times: list[float]) -> float:
    return (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else float("nan")


def one_run(lab: MiniLab, work: Path, proto: str, rate: float, seconds: float, seed: int) -> dict:
    n = int(rate * seconds) + 1
    pcap, log = work / f"{proto}-{rate}-{seed}.pcap", work / f"{proto}-{rate}-{seed}.jsonl"
    filt = ("tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn" if proto == "tcp" else "udp") + f" and dst net {TARGETS}"
    dump = lab.popen("b", ["tcpdump", "-i", "lan1", "-n", "-B", "32768", "-s", "96", "-w", str(pcap), filt],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = dump.stderr.readline()  # "listening on lan1 …" once the capture is live
    if "listening on" not in line:
        raise RuntimeError(f"tcpdump did not start: {line}")
    t0 = time.monotonic()
    r = lab.run("a", ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "testworm", "scan", "--rate", str(rate),
                      "--protocol", proto, "--port", str(PORT), "--allow", TARGETS, "--strategy", "random",
                      "--seed", str(seed), "--max-attempts", str(n), "--lifetime", str(seconds + 10),
                      "--connect-timeout", "1", "--max-in-flight", "1024", "--log", str(log)],
                timeout=seconds + 30)
    wall = time.monotonic() - t0
    # tcpdump hands packets over in blocks, retired at the latest after its 1 s buffer timeout; a block still
    # open when it is interrupted is lost, so wait for the last one before stopping it
    time.sleep(1.3)
    dump.send_signal(signal.SIGINT)
    _, err = dump.communicate(timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"scan failed: {r.stderr.strip()}")
    evs = read_events(str(log))
    att = [e for e in evs if e.get("event") == "attempt"]
    stop = [e for e in evs if e.get("event") == "stop"][0]
    starts = [e["t_mono"] for e in att]
    errs = [(e["t_mono"] - e["due_mono"]) * 1e6 for e in att]
    first: dict[tuple, float] = {}
    for ts, _p, sport, dst in read_pcap(pcap):  # first SYN of each (sport, dst): no retransmissions
        first.setdefault((sport, dst), ts)
    wire = sorted(first.values())
    dropped = next((ln.split()[0] for ln in err.splitlines() if "dropped by kernel" in ln), "?")
    log_keys = {(e["sport"], int.from_bytes(bytes(map(int, e["dst"].split("."))), "big")) for e in att}
    outcomes: dict[str, int] = {}
    for e in att:
        outcomes[e["outcome"]] = outcomes.get(e["outcome"], 0) + 1
    return {"proto": proto, "rate": rate, "seconds": seconds, "attempts": len(att), "planned": n,
            "stop": stop["reason"], "rate_log": rate_of(starts), "rate_wire": rate_of(wire), "on_wire": len(wire),
            "wire_matches_log": len(log_keys & set(first)) if proto == "tcp" else len(wire),
            "p50_us": pct(errs, 0.5), "p99_us": pct(errs, 0.99), "max_us": max(errs), "dropped": dropped,
            "outcomes": outcomes, "wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per rate (default 3)")
    ap.add_argument("--quick", action="store_true", help="three short runs only")
    ap.add_argument("--json", help="also write every run as JSON lines here")
    a = ap.parse_args()
    ok, why = have_netns()
    if not ok:
        print(f"bench_testworm: skipped: {why}")
        return 0
    runs = QUICK if a.quick else RUNS
    print(f"testworm benchmark — {platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f} at start; "
          f"{a.repeat} run(s) per rate")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-testworm-") as tmp, MiniLab({"a": ["lan1"], "b": ["lan1"]}) as lab:
        work = Path(tmp)
        lab.run("b", ["ip", "route", "add", "local", TARGETS, "dev", "lo"], check=True)
        lab.run("a", ["ip", "route", "add", TARGETS, "via", lab.addr("b")], check=True)
        for proto, rate, seconds, tol in runs:
            for k in range(a.repeat):
                res = one_run(lab, work, proto, rate, seconds, seed=k + 1)
                res["tolerance"] = tol
                res["pass"] = (abs(res["rate_log"] / rate - 1) <= tol and abs(res["rate_wire"] / rate - 1) <= tol
                               and res["on_wire"] == res["attempts"] == res["planned"] == res["wire_matches_log"])
                results.append(res)
                print(f"  {proto} {rate:>6}/s run {k + 1}: log {res['rate_log']:.2f}/s, wire {res['rate_wire']:.2f}/s, "
                      f"{res['on_wire']}/{res['attempts']} on wire ({res['wire_matches_log']} matching the log's "
                      f"sport+dst), start error p50 {res['p50_us']:.0f} µs "
                      f"p99 {res['p99_us']:.0f} µs, {'ok' if res['pass'] else 'MISSED'}", flush=True)
    print()
    print("| proto | configured /s | achieved, log /s (worst) | achieved, wire /s (worst) | worst error | "
          "on wire / logged | start error p50 / p99 / max µs (median run) | bar | result |")
    print("|---|---|---|---|---|---|---|---|---|")
    for proto, rate, _s, tol in runs:
        rs = [r for r in results if r["proto"] == proto and r["rate"] == rate]
        worst = max(rs, key=lambda r: max(abs(r["rate_log"] / rate - 1), abs(r["rate_wire"] / rate - 1)))
        med = sorted(rs, key=lambda r: r["p99_us"])[len(rs) // 2]
        werr = max(abs(worst["rate_log"] / rate - 1), abs(worst["rate_wire"] / rate - 1)) * 100
        print(f"| {proto} | {rate:,} | {statistics.median(r['rate_log'] for r in rs):,.2f} "
              f"({worst['rate_log']:,.2f}) | {statistics.median(r['rate_wire'] for r in rs):,.2f} "
              f"({worst['rate_wire']:,.2f}) | {werr:.3f} % | "
              f"{sum(r['on_wire'] for r in rs)} / {sum(r['attempts'] for r in rs)} | "
              f"{med['p50_us']:.0f} / {med['p99_us']:.0f} / {med['max_us']:.0f} | ±{tol * 100:.0f} % | "
              f"{'pass' if all(r['pass'] for r in rs) else 'FAIL'} |")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}; tcpdump drops: "
          f"{sorted({r['dropped'] for r in results})}")
    if a.json:
        with open(a.json, "w") as fh:
            for r in results:
                fh.write(json.dumps(r) + "\n")
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
